"""Issue 27 point 1 (preflight): before any model is built, train.py and test.py name EVERY missing file or
folder of an options file in one error, each with what it is and where users get it (the name the authors
publish and the page that hosts it, from the method's own folder).

Each main option file is run as a user runs it, in an empty folder (nothing present), and the keys the one
error names are compared with the list the file implies (written out here from the YAML: every file and
folder it names that the command reads; a test run does not read the files only training reads)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GT_LQ = ["dataroot_gt", "dataroot_lq"]

#: options file -> the keys of the files and folders it names (train.py: all of them)
TRAIN = {
    "irsde.yml": [f"datasets.{s}.{k}" for s in ("train", "val") for k in GT_LQ],
    "irsde/denoising.yml": ["datasets.train.dataroot_gt", "datasets.val.dataroot_gt"],
    "irsde/deblurring.yml": [f"datasets.{s}.{k}" for s in ("train", "val") for k in GT_LQ],
    "irsde/inpainting.yml": [f"datasets.{s}.{k}" for s in ("train", "val") for k in GT_LQ],
    "irsde/super_resolution.yml": [f"datasets.{s}.{k}" for s in ("train", "val") for k in GT_LQ],
    "refusion/deraining.yml": [f"datasets.{s}.{k}" for s in ("train", "val") for k in GT_LQ],
    "refusion/lowlight.yml": [f"datasets.{s}.{k}" for s in ("train", "val") for k in GT_LQ],
    "refusion/bokeh_stage1.yml": ["datasets.train.dataroot", "datasets.val.dataroot"],
    "refusion.yml": [f"datasets.{s}.{k}" for s in ("train", "val") for k in GT_LQ],
    "refusion/latent_stage1.yml": [f"datasets.{s}.{k}" for s in ("train", "val") for k in GT_LQ],
    "refusion/latent_stage2.yml": ["method.compression_path"]
                                  + [f"datasets.{s}.{k}" for s in ("train", "val") for k in GT_LQ],
    "refusion/bokeh_stage2.yml": ["method.compression_path", "datasets.train.dataroot", "datasets.val.dataroot"],
    "realesrnet.yml": ["datasets.train.dataroot_gt", "datasets.val.dataroot_gt", "datasets.val.dataroot_lq"],
    "realesrgan.yml": ["method.vgg_path", "datasets.train.dataroot_gt", "datasets.val.dataroot_gt",
                       "datasets.val.dataroot_lq", "path.pretrained.g"],
    "daclip.yml": ["method.clip_checkpoint", "datasets.train.csv", "datasets.val.dataroot"],
    "daclip_uir.yml": ["method.daclip_path", "datasets.train.dataroot", "datasets.val.dataroot"],
    "wild_ir.yml": ["method.daclip_path", "datasets.train.dataroot_gt", "datasets.val.dataroot_gt",
                    "datasets.val.dataroot_lq"],
    "osediff.yml": ["method.sd_path", "method.lpips_weights_path", "method.lpips_vgg_path",
                    "method.train_prompt.ram_path", "datasets.train.dataroot_gt", "datasets.val.dataroot_gt",
                    "datasets.val.dataroot_lq"],
}

#: test options file -> the keys test.py reads (not OSEDiff's LPIPS-loss files or training prompts)
TEST = {
    "test/irsde.yml": ["datasets.Rain100H.dataroot_gt", "datasets.Rain100H.dataroot_lq", "path.pretrained.g"],
    "test/demo.yml": ["path.pretrained.g"],
    "test/demo_sr.yml": ["path.pretrained.g"],
    "test/refusion_demo.yml": ["path.pretrained.g"],
    "test/refusion_latent.yml": ["method.compression_path", "datasets.HRHaze.dataroot_gt",
                                 "datasets.HRHaze.dataroot_lq", "path.pretrained.g"],
    "test/daclip.yml": ["method.clip_checkpoint", "method.release_path", "datasets.universal.dataroot"],
    "test/daclip_demo.yml": ["path.pretrained.daclip"],
    "test/daclip_uir_demo.yml": ["method.daclip_path", "path.pretrained.g"],
    # ten test sets on one folder: named once, with the count of the other keys; LPIPS's files are optional
    "test/daclip_uir.yml": ["method.daclip_path", "datasets.motion-blurry.dataroot", "path.pretrained.g",
                            "metrics.lpips.pretrained_model_path", "metrics.lpips.backbone_path"],
    "test/osediff.yml": ["method.sd_path", "method.release_path", "method.prompt.ram_path", "method.prompt.dape_path",
                         "datasets.RealSR.dataroot_gt", "datasets.RealSR.dataroot_lq"],
}

#: (key, the name its release publishes) where the method's card knows it
PUBLISHED = {
    "osediff.yml": {"method.sd_path": "stable-diffusion-2-1-base", "method.lpips_vgg_path": "vgg16-397923af.pth",
                    "method.lpips_weights_path": "LPIPS_v0.1_vgg-a78928a0.pth",
                    "method.train_prompt.ram_path": "ram_swin_large_14m.pth"},
    "test/osediff.yml": {"method.release_path": "osediff.pkl", "method.prompt.dape_path": "DAPE.pth",
                         "datasets.RealSR.dataroot_gt": "StableSR-TestSets"},
    "realesrgan.yml": {"method.vgg_path": "vgg19-dcbb9e9d.pth"},
    "wild_ir.yml": {"method.daclip_path": "wild-daclip_ViT-L-14.pt"},
    "daclip_uir.yml": {"method.daclip_path": "daclip_ViT-B-32.pt"},
    "test/daclip.yml": {"method.release_path": "daclip_ViT-B-32.pt"},
    "test/daclip_uir.yml": {"method.daclip_path": "daclip_ViT-B-32.pt", "path.pretrained.g": "universal-ir.pth",
                            "metrics.lpips.pretrained_model_path": "LPIPS_v0.1_alex-df73285e.pth"},
    "test/irsde.yml": {"path.pretrained.g": "rain100h_sde.pth", "datasets.Rain100H.dataroot_gt": "Rain100H.zip"},
    "irsde.yml": {"datasets.train.dataroot_gt": "RainTrainH.zip", "datasets.val.dataroot_lq": "Rain100H.zip"},
    "irsde/super_resolution.yml": {"datasets.train.dataroot_gt": "DIV2K.tar"},
    "realesrnet.yml": {"datasets.train.dataroot_gt": "DIV2K_train_HR.zip, Flickr2K.tar, OST_dataset.zip",
                       "datasets.val.dataroot_lq": "StableSR-TestSets"},
    "test/refusion_latent.yml": {"method.compression_path": "latent_dehaze.pth", "path.pretrained.g": "refusion.pth"},
}

KEY = re.compile(r"(?:^|; |: )((?:method|datasets|path|metrics|train)\.[\w.\-]+)(?: \(and [^)]*\))?: "
                 r"(?:file|folder|file or folder) '")


def _run(main, options: str, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                      # relative paths resolve in an empty folder
    code = main(["-opt", str(ROOT / "options" / options)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    return code, lines, err


@pytest.mark.parametrize("options", sorted(TRAIN))
def test_train_names_every_missing_file_of_the_options_in_one_error(options, tmp_path, monkeypatch, capsys):
    from osir.train import main
    code, lines, err = _run(main, options, tmp_path, monkeypatch, capsys)
    assert code == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    named = KEY.findall(lines[0])
    assert sorted(named) == sorted(TRAIN[options]), lines[0]
    assert f"{len(TRAIN[options])} files or folders the options name are missing" in lines[0] or \
        len(TRAIN[options]) == 1
    for key, published in PUBLISHED.get(options, {}).items():
        assert re.search(rf"{re.escape(key)}(?: \(and [^)]*\))?: [^;]*published as '{re.escape(published)}' on ",
                         lines[0]), key
    assert list(tmp_path.iterdir()) == []            # nothing built, nothing written: no experiments/ folder


@pytest.mark.parametrize("options", sorted(TEST))
def test_test_names_every_missing_file_it_reads_in_one_error(options, tmp_path, monkeypatch, capsys):
    from osir.test import main
    code, lines, err = _run(main, options, tmp_path, monkeypatch, capsys)
    assert code == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert sorted(KEY.findall(lines[0])) == sorted(TEST[options]), lines[0]
    if options == "test/daclip_uir.yml":
        assert "datasets.motion-blurry.dataroot (and 9 more keys: datasets.hazy.dataroot, ...)" in lines[0]
        assert "[optional: skipped without it]" in lines[0]
        assert ("validation sets (one archive) - published on https://drive.google.com/file/d/"
                "1JKd1tA7rMoEbI9190daJqL7i6V1L8KUd/view (linked from DA-CLIP's README" in lines[0])
    for key, published in PUBLISHED.get(options, {}).items():
        assert re.search(rf"{re.escape(key)}(?: \(and [^)]*\))?: [^;]*published as '{re.escape(published)}' on ",
                         lines[0]), key
    assert list(tmp_path.iterdir()) == []


def test_a_folder_given_for_a_file_and_the_order_of_the_message(tmp_path):
    """A file path that is a folder is named as such; the message counts the items and each names what it
    is (the description from the signature, or the card's release the options repeat)."""
    from osir.core.options import OptionsError, check_files, load_options
    (tmp_path / "7.state").mkdir()
    opt = load_options(ROOT / "options" / "demo.yml", [f"path.pretrained.g={tmp_path / 'g.pth'}",
                                                         f"path.resume_state={tmp_path / '7.state'}"])
    with pytest.raises(OptionsError) as err:
        check_files(opt, training=True)
    text = str(err.value)
    assert text.startswith("2 files or folders the options name are missing: ")
    assert (f"path.resume_state: file '{tmp_path / '7.state'}' is a folder, not a file (a training state to resume "
            "from)") in text
    # the demo's release (its card) describes the network: options/demo.yml repeats its sampler settings
    assert (f"path.pretrained.g: file or folder '{tmp_path / 'g.pth'}' not found (the demo's trained noise "
            "network - published as 'net_g_ema_latest.safetensors' on your run of options/demo.yml") in text


def test_a_missing_metric_file_alone_does_not_stop_the_run_but_is_named_beside_a_missing_required_one(tmp_path):
    """Metrics without their files are skipped with a warning (as before); next to a missing required file
    they are listed too, marked optional."""
    from osir.core.options import OptionsError, check_files, load_options
    lpips = [f"metrics.lpips={{type: lpips, pretrained_model_path: {tmp_path / 'lpips.pth'}}}"]
    check_files(load_options(ROOT / "options" / "demo.yml", lpips))          # the metric alone: no error
    with pytest.raises(OptionsError, match=r"2 files or folders .*metrics\.lpips\.pretrained_model_path: file "
                                           r".*\[optional: skipped without it\]"):
        check_files(load_options(ROOT / "options" / "demo.yml", lpips + [f"path.pretrained.g={tmp_path / 'g.pth'}"]))


def test_skimage_data_sets_and_a_folder_the_method_builds_are_not_files_to_bring(tmp_path):
    """The demos read scikit-image's photos (their dataroot values are photo names), and OSEDiff's
    ``build_tiny`` writes the SD folder it names: neither is reported missing."""
    from osir.core.options import check_files, load_options, needed_files
    for name in ("demo.yml", "demo_sr.yml", "refusion_demo.yml"):
        opt = load_options(ROOT / "options" / name)
        assert needed_files(opt) == [] and check_files(opt, training=True) is None
    tiny = load_options(ROOT / "options" / "osediff_tiny.yml", [f"method.sd_path={tmp_path / 'sd'}"])
    assert [f.key for f in needed_files(tiny)] == []


# ----------------------------------------------------------------------------- the early check (no torch)
def _recorded_early(raw: dict) -> list:
    """What ``check_files_early`` checks for ``raw``: its files, named as ``needed_files`` names them."""
    from osir.core import options
    return options._with_release_names(options.early_files(raw, options.Options), raw.get("method"))


OPTION_FILES = sorted(str(p.relative_to(ROOT / "options")) for p in (ROOT / "options").rglob("*.yml")
                      if p.parent.name != "degradations")     # degradation cards are not options files


@pytest.mark.parametrize("name", OPTION_FILES)
def test_the_early_check_names_exactly_what_the_validated_options_name(name):
    """``check_files_early`` reads the options as written and the classes' light declarations, without
    importing a class; ``needed_files`` validates first (defaults filled in, nested specs checked against
    signatures).  For every options file osir ships they name the same files with the same descriptions,
    release names and scopes (training only, optional), so the fast error is the full one."""
    from osir.core.options import as_options, needed_files, read_options
    raw = read_options(ROOT / "options" / name)
    full = needed_files(as_options(raw))
    early = _recorded_early(raw)
    assert sorted(map(repr, early)) == sorted(map(repr, full))


def test_every_declaration_names_arguments_of_its_registered_class():
    """The declarations (``FILES``) live apart from the classes: each must name a class registered once, and
    only arguments that class takes; the nested specs it marks as training-only are
    ``component(..., training=True)`` in the class's signature, and no other nested spec of the class is."""
    import typing
    from osir.core.options import Component, _params_of
    from osir.core.registry import ALL, FILES
    assert FILES.names()
    for name in FILES.names():
        owners = [r for r in ALL if r is not FILES and name in r]
        assert len(owners) == 1, (name, owners)
        params, _ = _params_of(owners[0].get(name))
        declared = FILES.get(name)
        assert set(declared.paths) <= set(params), (name, set(declared.paths) - set(params))
        training = {k for k, (annotation, _) in params.items()
                    if any(isinstance(m, Component) and m.training
                           for a in (annotation, *typing.get_args(annotation)) for m in getattr(a, "__metadata__", ()))}
        assert training == set(declared.training_components), name


#: argument names that name a file or folder, in the classes osir registers
PATH_LIKE = r"(_path|_dir|_checkpoint)$|^(dataroot\w*|weights|csv|captions|folder)$"


def test_every_registered_class_with_a_path_argument_declares_its_files():
    """The reverse of the test above: a class osir registers (method, data set, prompt extractor, metric, ...) with
    an argument named like a path (a string) has a declaration, so the preflight cannot silently miss its file
    (a class outside osir may mark its paths in its signature: checked after validation only)."""
    import re
    import typing
    from osir.core.options import _params_of
    from osir.core.registry import ALL, FILES
    undeclared = []
    for registry in ALL:
        if registry is FILES:
            continue
        for name in registry.names():
            try:
                entry = registry.get(name)
            except Exception:          # an optional dependency missing here: nothing to check
                continue
            if not callable(entry) or not getattr(entry, "__module__", "").startswith("osir."):
                continue        # a plugin's class (tests/plugins) may mark its paths in its signature instead
            try:
                params, _ = _params_of(entry)
            except (TypeError, ValueError):
                continue
            paths = [p for p, (annotation, _) in params.items()
                     if re.search(PATH_LIKE, p) and str in (annotation, *typing.get_args(annotation))]
            if paths and name not in FILES:
                undeclared.append(f"{registry.kind} {name}: {paths}")
    assert undeclared == []


def test_a_path_option_left_out_or_of_the_wrong_type_is_left_to_validation(tmp_path, capsys):
    """The early check reads options before validation: a required path that is missing, null or a list is not
    checked as a path ('folder None not found'); validation then names the key (one line, exit 2)."""
    from osir.core.options import OptionsError, as_options, check_files_early, read_options
    from osir.train import main
    for value in ("null", "[a, b]"):
        raw = read_options(ROOT / "options" / "osediff.yml", [f"method.sd_path={value}", "datasets={}"])
        check_files_early(raw)                               # not a path: nothing to check here
        with pytest.raises(OptionsError, match=r"method\.sd_path"):
            as_options(raw)
    options = tmp_path / "no_sd.yml"
    options.write_text((ROOT / "options" / "osediff.yml").read_text().replace("  sd_path: pretrained/stable-diffusion-2-1-base\n", ""))
    assert "sd_path:" not in options.read_text()
    assert main(["-opt", str(options)]) == 2                 # the other missing files, one line; no traceback
    err = capsys.readouterr().err
    assert err.startswith("osir: options error: ") and len(err.strip().splitlines()) == 1
    assert main(["-opt", str(options), "--set", f"method.lpips_weights_path={options}",
                 f"method.lpips_vgg_path={options}", f"method.train_prompt.ram_path={options}", "datasets={}"]) == 2
    assert capsys.readouterr().err.strip() == "osir: options error: method.sd_path: missing required value"


def test_the_early_check_sees_overrides_and_leaves_out_data_sets_and_training_files_when_asked(tmp_path):
    from osir.core.options import OptionsError, check_files_early, read_options
    raw = read_options(ROOT / "options" / "osediff.yml", [f"method.sd_path={tmp_path}"])
    check_files_early(raw, datasets=False)         # inference: the SD folder is there; nothing else is read
    with pytest.raises(OptionsError) as err:
        check_files_early(raw, datasets=False, training=True)
    text = str(err.value)
    assert text.startswith("3 files or folders the options name are missing: ")
    assert all(key in text for key in ("method.lpips_weights_path", "method.lpips_vgg_path",
                                        "method.train_prompt.ram_path"))
    assert "method.sd_path" not in text and "datasets." not in text
    check_files_early(read_options(ROOT / "options" / "demo.yml"), training=True)      # nothing to bring: no error


def test_metric_files_are_named_by_the_urls_their_libraries_download_them_from():
    """The preflight names a metric's missing file without importing pyiqa (``osir/metrics/files.py``): every
    name and URL there is the one pyiqa, torchvision and OpenAI's CLIP loader would download, for every setting
    the metric classes accept."""
    import typing
    import torchvision.models as tvm
    from pyiqa.archs import dists_arch, lpips_arch, maniqa_arch, musiq_arch
    from pyiqa.archs.clip_model import _MODELS
    from pyiqa.archs.inception import FID_WEIGHTS_URL
    from osir.metrics import files as mf
    from osir.metrics import suite

    def choices(cls, arg):
        return set(typing.get_args(typing.get_type_hints(cls.__init__)[arg]))
    for net in choices(suite.LPIPSMetric, "net"):
        assert mf.BACKBONE_URLS[net] == tvm.get_weight(suite.TORCHVISION_BACKBONES[net]).url
        for version in choices(suite.LPIPSMetric, "version"):
            urls = mf.download_urls("lpips", {"net": net, "version": version})
            assert urls == {"pretrained_model_path": lpips_arch.default_model_urls[f"{version}_{net}"],
                            "backbone_path": mf.BACKBONE_URLS[net]}
    assert mf.download_urls("lpips", {}) == mf.download_urls("lpips", {"net": "alex", "version": "0.1"})
    assert mf.download_urls("dists", {})["pretrained_model_path"] == dists_arch.default_model_urls["url"]
    for variant in choices(suite.MUSIQMetric, "variant"):
        assert mf.download_urls("musiq", {"variant": variant})["pretrained_model_path"] == \
            musiq_arch.default_model_urls[suite.MUSIQ_VARIANTS[variant][1]]
    for variant in choices(suite.MANIQAMetric, "variant"):
        assert mf.download_urls("maniqa", {"variant": variant})["pretrained_model_path"] == \
            maniqa_arch.default_model_urls[variant]
    arch = suite._import_clipiqa()
    assert set(mf.CLIPIQA_BACKBONES) == choices(suite.CLIPIQAMetric, "variant")
    for variant, backbone in mf.CLIPIQA_BACKBONES.items():
        expected = {"backbone_path": _MODELS[backbone]}
        if variant != "clipiqa":
            expected["pretrained_model_path"] = arch.default_model_urls[variant]
        assert mf.download_urls("clipiqa", {"variant": variant}) == expected
    assert mf.download_urls("fid", {}) == {"pretrained_model_path": FID_WEIGHTS_URL}


def test_a_missing_metric_file_is_named_with_its_download_name(tmp_path, monkeypatch):
    """The message a user reads: the file name to fetch and where from, and for a weights folder the names it
    must hold."""
    from osir.core.files import missing
    from osir.core.options import Options, early_files
    monkeypatch.chdir(tmp_path)
    raw = {"name": "x", "method": {"type": "IRSDE"},
           "metrics": {"lpips": {"type": "lpips", "net": "vgg", "pretrained_model_path": "lp.pth", "weights_dir": "w"},
                       "musiq": {"type": "musiq", "variant": "spaq", "pretrained_model_path": "m.pth"}}}
    lines = [f.describe() for f in missing(early_files(raw, Options))]
    assert lines == [
        "metrics.lpips.pretrained_model_path: file 'lp.pth' not found (the metric's weights - published as "
        "'LPIPS_v0.1_vgg-a78928a0.pth' on https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
        "LPIPS_v0.1_vgg-a78928a0.pth)",
        "metrics.lpips.weights_dir: folder 'w' not found (a folder of metric weights under their download names "
        "('vgg16-397923af.pth'))",
        "metrics.musiq.pretrained_model_path: file 'm.pth' not found (the metric's weights - published as "
        "'musiq_spaq_ckpt-358bb6af.pth' on https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
        "musiq_spaq_ckpt-358bb6af.pth)"]


def _data_set_sections(tree):
    for name, spec in (tree.get("datasets") or {}).items():
        if isinstance(spec, dict):
            yield name, spec


@pytest.mark.parametrize("name", OPTION_FILES)
def test_every_public_data_set_an_options_file_reads_says_where_users_get_it(name):
    """A data set section reading a folder under datasets/ names its source, and the name is a registered
    ``DataSource`` (a misspelt name would show as free text, without the page), found through its entry point."""
    from osir.core.options import load_options
    from osir.core.registry import DATA_SOURCES
    opt = load_options(ROOT / "options" / name).to_dict()
    for set_name, spec in _data_set_sections(opt):
        folders = [v for k, v in spec.items() if k.startswith("dataroot") or k == "csv"]
        if any(isinstance(v, str) and v.startswith("datasets/") and "/TASK/" not in v for v in folders):
            assert spec.get("source") in DATA_SOURCES, (name, set_name, spec.get("source"))
            assert DATA_SOURCES.get(spec["source"]).what


def test_a_data_set_source_names_its_page_or_is_shown_as_written_and_is_not_passed_to_the_data_set(tmp_path):
    """``source``: a registered ``DataSource`` gives the files and the page that its README links (or says
    that none is linked); other text is shown as written; the data set itself never sees the key."""
    from osir.core.files import missing
    from osir.core.options import Options, early_files
    from osir.engine.trainer import build_dataset
    raw = {"name": "x", "method": {"type": "IRSDE"}, "datasets": {
        "a": {"type": "PairedImageDataset", "dataroot_gt": str(tmp_path / "gt"), "dataroot_lq": str(tmp_path / "lq"),
              "source": "Rain100H-test"},
        "b": {"type": "SingleImageDataset", "dataroot_lq": str(tmp_path / "b"), "source": "LSDIR"},
        "c": {"type": "SingleImageDataset", "dataroot_lq": str(tmp_path / "c"), "source": "my lab's NAS, /data/c"}}}
    lines = [f.describe() for f in missing(early_files(raw, Options))]
    assert lines[0].endswith("(the ground-truth (GT) images of Rain100H's 100 test pairs (Yang et al. 2017) - "
                             "published as 'Rain100H.zip' on http://www.icst.pku.edu.cn/struct/att/Rain100H.zip "
                             "(linked from IR-SDE's README))")
    assert lines[2].endswith("(the degraded (LQ) images of LSDIR (Li et al. 2023), the training images of OSEDiff "
                             "and wild-IR; no download page is linked in OSEDiff's or DA-CLIP's README)")
    assert lines[3].endswith("(the degraded (LQ) images from my lab's NAS, /data/c)")
    (tmp_path / "c").mkdir()
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "c" / "x.png")
    dataset = build_dataset({**raw["datasets"]["c"], "batch_size": 1, "num_workers": 0, "shuffle": False}, "datasets.c")
    assert len(dataset) == 1


def test_restore_web_and_degrade_name_every_missing_path_of_their_command_line_at_once(tmp_path, monkeypatch, capsys):
    """The commands without an options file also name all their missing paths in one line (exit 2), and
    ``osir web --model`` without weights names the file the release publishes, as ``osir restore`` does."""
    from osir.__main__ import main as osir_main
    from osir.degrade import main as degrade_main
    from osir.web import main as web_main
    monkeypatch.chdir(tmp_path)
    assert osir_main(["restore", "a.png", "b.png", "-o", "out", "--weights", "w.pth"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "osir restore: error: weights file not found: 'w.pth'; input not found: 'a.png'; input not found: 'b.png'"
    assert osir_main(["restore", "a.png", "-o", "out", "--model", "realesrgan-x4"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--weights: give the weights file of 'realesrgan-x4'" in line and "'RealESRGAN_x4plus.pth'" in line
    assert line.endswith("; input not found: 'a.png'")
    assert web_main(["--model", "realesrgan-x4"]) == 2
    assert "'RealESRGAN_x4plus.pth'" in capsys.readouterr().err
    assert web_main(["--weights", "w.pth", "--weights-dir", "nodir"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "osir web: options error: --weights 'w.pth': no such file; --weights-dir 'nodir': not a folder"
    assert degrade_main(["-opt", "x.yml", "--input", "gt", "--output", "o"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "osir.degrade: options error: -opt: file not found: 'x.yml'; --input: folder not found: 'gt'"
    assert list(tmp_path.iterdir()) == []


def test_a_data_set_without_a_file_name_is_named_with_its_page(tmp_path, monkeypatch):
    """GoPro's archive is a Google Drive link: the page alone, no invented file name; DA-CLIP's CSV is made by a
    script, which the message says instead of a page."""
    from osir.core.files import missing
    from osir.core.options import early_files, read_options, Options
    monkeypatch.chdir(tmp_path)
    lines = [f.describe() for f in missing(early_files(read_options(ROOT / "options/irsde/deblurring.yml"), Options))]
    assert lines[0] == ("datasets.train.dataroot_gt: folder 'datasets/GoPro/train/GT' not found (the ground-truth (GT) "
                        "images of GoPro deblurring pairs (Nah et al. 2017) - published on https://drive.google.com/"
                        "file/d/1y4wvPdOG3mojpFCHTqLgriexhbjoWVkK/view (linked from DA-CLIP's README, 'Dataset Links'))")
    lines = [f.describe() for f in missing(early_files(read_options(ROOT / "options/daclip.yml"), Options))]
    assert [line for line in lines if line.startswith("datasets.train.csv")] == [
        "datasets.train.csv: file 'datasets/universal/daclip_train.csv' not found (the CSV list of images, types and "
        "captions of the CSV of LQ paths, degradation types and BLIP captions that DA-CLIP's "
        "scripts/generate_captions.py writes (daclip_train.csv / daclip_val.csv); no download page is linked in "
        "DA-CLIP's da-clip/README.md: the script makes it)"]
