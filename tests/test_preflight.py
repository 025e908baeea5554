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
    "test/osediff.yml": {"method.release_path": "osediff.pkl", "method.prompt.dape_path": "DAPE.pth"},
    "realesrgan.yml": {"method.vgg_path": "vgg19-dcbb9e9d.pth"},
    "wild_ir.yml": {"method.daclip_path": "wild-daclip_ViT-L-14.pt"},
    "daclip_uir.yml": {"method.daclip_path": "daclip_ViT-B-32.pt"},
    "test/daclip.yml": {"method.release_path": "daclip_ViT-B-32.pt"},
    "test/daclip_uir.yml": {"method.daclip_path": "daclip_ViT-B-32.pt", "path.pretrained.g": "universal-ir.pth"},
    "test/irsde.yml": {"path.pretrained.g": "rain100h_sde.pth"},
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
        assert re.search(rf"{re.escape(key)}: [^;]*published as '{re.escape(published)}' on ", lines[0]), key
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
    for key, published in PUBLISHED.get(options, {}).items():
        assert re.search(rf"{re.escape(key)}: [^;]*published as '{re.escape(published)}' on ", lines[0]), key
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
