"""Learned metrics from local weight files only: DISTS, MUSIQ, MANIQA, CLIP-IQA and FID.

Every weights file here is random but in the real format: pyiqa's own architecture (or
torchvision's, OpenAI CLIP's) built without weights, its state dict saved under the file name of
pyiqa's download URL.  The suite must load exactly those weights, score as pyiqa does when given
the same files, skip a metric whose file is absent with a line naming it (never downloading), and
record the variant.  FID is checked against a closed-form Fréchet distance of features extracted
here independently (and its Inception against the one pyiqa builds from the same file), its
distance formula against pyiqa's ``scipy.linalg.sqrtm`` one on low-dimensional features (at 2048
dimensions sqrtm takes minutes on a 2-core CPU), and its GT statistics cache to spare a second run
the GT's features.  The whole file runs in about 35 s on 2 CPU cores, 2.4 GB peak memory.
"""
import json
from unittest import mock

import numpy as np
import pytest
import torch

from osir.data.io import DataError
from osir.core.weights import local_torchvision_weights
from osir.metrics.suite import MetricSuite, MissingWeights, _timm_without_pretrained, quantize
from osir.core.registry import METRICS
from tests.conftest import write_images

VGG16 = "vgg16-397923af.pth"


def _image(seed, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g)


@pytest.fixture(scope="module")
def vgg_dir(tmp_path_factory):
    """torchvision's VGG16 file: random convolutions; the classifier (unused by DISTS/LPIPS) as
    one broadcast value per tensor, so the file stays small with every key and shape of the real one."""
    import torchvision
    folder = tmp_path_factory.mktemp("vgg")
    torch.manual_seed(0)
    net = torchvision.models.vgg16(init_weights=False)
    state = {}
    for key, value in net.state_dict().items():
        if key.startswith("features"):
            fan_in = value[0].numel() if value.dim() > 1 else 1
            state[key] = torch.randn_like(value) * (2.0 / fan_in) ** 0.5 if value.dim() > 1 else torch.zeros_like(value)
        else:
            state[key] = torch.zeros(1).expand(value.shape)
    torch.save(state, folder / VGG16)
    return folder


def test_dists_loads_the_given_files_and_scores_as_pyiqa(vgg_dir, tmp_path):
    from pyiqa.archs.dists_arch import DISTS
    torch.manual_seed(1)
    channels = 3 + 64 + 128 + 256 + 512 + 512
    weights = {"alpha": torch.rand(1, channels, 1, 1) * 0.2, "beta": torch.rand(1, channels, 1, 1) * 0.2}  # DISTS' file
    path = tmp_path / "DISTS_weights-f5e65c96.pth"
    torch.save(weights, path)
    suite = MetricSuite({"dists": {"type": "dists", "pretrained_model_path": str(path),
                                   "backbone_path": str(vgg_dir / VGG16)}})
    loaded = suite.metrics["dists"]._net.net
    assert torch.equal(loaded.alpha, weights["alpha"]) and torch.equal(loaded.beta, weights["beta"])
    vgg = torch.load(vgg_dir / VGG16)
    assert torch.equal(loaded.stage1[0].weight, vgg["features.0.weight"])
    with local_torchvision_weights("VGG16_Weights.IMAGENET1K_V1", str(vgg_dir / VGG16)):
        reference = DISTS(pretrained_model_path=str(path)).eval()
    sr, gt = _image(0), _image(1)
    score = suite.score(sr, gt)["dists"][0]
    with torch.no_grad():
        assert score == pytest.approx(float(reference(quantize(sr), gt)), rel=1e-5) and 0 < score < 1
    assert suite.score(gt, gt)["dists"][0] == pytest.approx(0, abs=1e-4)
    s = suite.settings()["dists"]
    assert s["pretrained_model_path"] == str(path) and s["backbone_path"] == str(vgg_dir / VGG16) and s["lower_better"]
    # a file without DISTS' weights is refused, not loaded silently (pyiqa loads it non-strictly)
    with pytest.raises(DataError, match="not a DISTS checkpoint: it has no alpha, beta"):
        MetricSuite({"dists": {"type": "dists", "pretrained_model_path": str(vgg_dir / VGG16),
                               "backbone_path": str(vgg_dir / VGG16)}})


def test_musiq_variants_load_their_checkpoints_from_a_torch_hub_folder(tmp_path):
    import pyiqa
    from pyiqa.archs.musiq_arch import MUSIQ
    torch.manual_seed(2)
    koniq, ava = MUSIQ(pretrained=False), MUSIQ(pretrained=False, num_class=10)   # AVA: 10-bin distribution
    hub = tmp_path / "hub"
    (hub / "pyiqa").mkdir(parents=True)          # a torch-hub cache, as pyiqa fills it
    torch.save(koniq.state_dict(), hub / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth")
    torch.save(ava.state_dict(), hub / "musiq_ava_ckpt-e8d3f067.pth")     # or flat
    suite = MetricSuite({"musiq": {"type": "musiq"}, "musiq_ava": {"type": "musiq", "variant": "ava"}},
                        weights_dir=str(hub))
    assert torch.equal(suite.metrics["musiq"]._net.net.embedding.weight, koniq.embedding.weight)
    assert torch.equal(suite.metrics["musiq_ava"]._net.net.head[0].weight, ava.head[0].weight)
    img = _image(3)
    scores = suite.score(img, None)
    reference = pyiqa.create_metric("musiq", device="cpu",
                                    pretrained_model_path=str(hub / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth"))
    assert scores["musiq"][0] == pytest.approx(float(reference(quantize(img))), rel=1e-5)
    assert 1 <= scores["musiq_ava"][0] <= 10
    settings = suite.settings()
    assert settings["musiq"]["variant"] == "koniq" and settings["musiq"]["metric"] == "musiq"
    assert settings["musiq_ava"]["variant"] == "ava" and settings["musiq_ava"]["metric"] == "musiq-ava"
    assert settings["musiq"]["pretrained_model_path"] == str(hub / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth")


def test_maniqa_loads_a_flat_or_params_checkpoint_without_fetching_its_vit(tmp_path):
    from pyiqa.archs.maniqa_arch import MANIQA

    from osir.metrics.suite import load_state
    torch.manual_seed(4)
    with _timm_without_pretrained():
        net = MANIQA(pretrained=False)
    state = net.state_dict()
    del net
    torch.save(state, tmp_path / "ckpt_koniq10k.pt")                      # flat, as pyiqa hosts it
    suite = MetricSuite({"maniqa": {"type": "maniqa", "test_sample": 1}}, weights_dir=str(tmp_path))
    loaded = suite.metrics["maniqa"]._net.net
    assert torch.equal(loaded.vit.patch_embed.proj.weight, state["vit.patch_embed.proj.weight"])
    assert torch.equal(loaded.fc_score[0].weight, state["fc_score.0.weight"])
    assert np.isfinite(suite.score(_image(5), None)["maniqa"][0])
    settings = suite.settings()["maniqa"]
    assert (settings["variant"], settings["metric"], settings["test_sample"]) == ("koniq", "maniqa", 1)
    # pyiqa's training output layout ({'params': ...}, DataParallel's 'module.' prefixes) loads too
    (tmp_path / "ckpt_koniq10k.pt").unlink()
    head = {k: v + 1 for k, v in loaded.fc_score.state_dict().items()}
    torch.save({"params": {f"module.{k}": v for k, v in head.items()}}, tmp_path / "MANIQA_PIPAL-ae6d356b.pth")
    load_state(loaded.fc_score, str(tmp_path / "MANIQA_PIPAL-ae6d356b.pth"))
    assert torch.equal(loaded.fc_score[0].weight, state["fc_score.0.weight"] + 1)
    pipal = METRICS.build({"type": "maniqa", "variant": "pipal", "weights_dir": str(tmp_path)})
    assert pipal.settings["metric"] == "maniqa-pipal" and pipal.settings["variant"] == "pipal"


def _torchscript_archive(state: dict, path):
    """A TorchScript archive holding ``state`` (how OpenAI distributes CLIP: pyiqa's loader reads the
    archive's state dict and rebuilds the model from it)."""
    class Holder(torch.nn.Module):
        def forward(self, x):
            return x
    root = Holder()
    for name, value in state.items():
        *parents, leaf = name.split(".")
        node = root
        for p in parents:
            if not hasattr(node, p):
                node.add_module(p, torch.nn.Module())
            node = getattr(node, p)
        node.register_buffer(leaf, value)
    torch.jit.save(torch.jit.trace(root, torch.zeros(1)), str(path))
    return path


@pytest.fixture(scope="module")
def clip_rn50(tmp_path_factory):
    """OpenAI CLIP RN50, random, in fp16 (as OpenAI's weights are), as a TorchScript archive."""
    from pyiqa.archs.clip_model import CLIP
    torch.manual_seed(6)
    model = CLIP(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=512,
                 transformer_heads=8, transformer_layers=12)
    folder = tmp_path_factory.mktemp("clip")
    return _torchscript_archive({k: v.half() for k, v in model.state_dict().items()}, folder / "RN50.pt")


def test_clipiqa_and_clipiqa_plus_from_local_clip(clip_rn50, tmp_path):
    from osir.metrics.suite import CLIPIQA_PROMPTS, _import_clipiqa
    arch = _import_clipiqa()
    ctx = torch.randn(2, 16, 512, generator=torch.Generator().manual_seed(7)) * 0.02    # per prompt: good, bad
    ctx_file = tmp_path / "CLIP-IQA+_learned_prompts-603f3273.pth"
    torch.save(ctx, ctx_file)
    pairs = ["A sharp photo.", "A blurry photo."]
    suite = MetricSuite({"clipiqa": {"type": "clipiqa", "backbone_path": str(clip_rn50), "prompts": pairs},
                         "clipiqa+": {"type": "clipiqa", "variant": "clipiqa+", "backbone_path": str(clip_rn50),
                                      "pretrained_model_path": str(ctx_file)}})
    saved = torch.jit.load(str(clip_rn50)).state_dict()
    zero_shot = suite.metrics["clipiqa"]._net.net
    assert torch.equal(zero_shot.clip_model[0].visual.conv1.weight, saved["visual.conv1.weight"].float())
    assert torch.equal(zero_shot.prompt_pairs, arch.clip.tokenize(pairs))
    assert torch.equal(suite.metrics["clipiqa+"]._net.net.prompt_learner.ctx, ctx)
    scores = suite.score(_image(8), None)
    assert all(0 <= scores[k][0] <= 1 for k in ("clipiqa", "clipiqa+"))
    settings = suite.settings()
    assert settings["clipiqa"]["prompts"] == pairs and settings["clipiqa"]["variant"] == "clipiqa"
    assert settings["clipiqa+"]["variant"] == "clipiqa+" and settings["clipiqa+"]["prompts"] == "learned"
    assert settings["clipiqa+"]["pretrained_model_path"] == str(ctx_file)
    default = METRICS.build({"type": "clipiqa", "backbone_path": str(clip_rn50)})     # pyiqa's five pairs
    assert default.settings["prompts"] == CLIPIQA_PROMPTS
    torch.save(saved, tmp_path / "RN50.pt")
    with pytest.raises(DataError, match="is not a TorchScript archive"):           # a plain state dict: refused
        MetricSuite({"clipiqa": {"type": "clipiqa"}}, weights_dir=str(tmp_path))


def test_clipiqa_plus_with_a_real_backbone_refuses_a_pickled_prompt_file(clip_rn50, tmp_path):
    """With a backbone that builds, the learned-prompt file is the one read: a pickle in it that
    would create a file when unpickled (``weights_only=False``) is refused, naming it, and never runs."""
    from osir.core.checkpoint import CheckpointError
    from tests.test_metrics_weights_only import MARKER, plant
    evil = plant(tmp_path / "CLIP-IQA+_learned_prompts-603f3273.pth", tmp_path / MARKER)
    with pytest.raises(CheckpointError, match=r"refused '.*CLIP-IQA\+_learned_prompts-603f3273\.pth': "
                                              r"not a weights-only file \(it would call"):
        MetricSuite({"clipiqa+": {"type": "clipiqa", "variant": "clipiqa+", "backbone_path": str(clip_rn50),
                                  "pretrained_model_path": str(evil)}})
    assert not (tmp_path / MARKER).exists()


def test_missing_weights_skip_with_the_file_name_and_never_download(tmp_path, capsys):
    empty = tmp_path / "weights"
    empty.mkdir()
    with mock.patch("socket.socket.connect", side_effect=AssertionError("network used")):   # no request at all
        suite = MetricSuite({"psnr": {"type": "psnr"},
                             "dists": {"type": "dists"},
                             "musiq": {"type": "musiq", "variant": "spaq", "pretrained_model_path": str(tmp_path / "m.pth")},
                             "maniqa": {"type": "maniqa", "variant": "kadid"},
                             "clipiqa": {"type": "clipiqa", "variant": "clipiqa+"},
                             "fid": {"type": "fid"},
                             "brisque": {"type": "pyiqa", "metric": "brisque"},   # any pyiqa metric: it would download
                             "topiq": {"type": "pyiqa", "metric": "topiq_nr"}},   # ... through timm and the HF hub
                            weights_dir=str(empty))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "skipped" in line]
    assert len(lines) == 7 and set(suite.metrics) == {"psnr"} and not suite.set_metrics
    expect = {"dists": ["'DISTS_weights-f5e65c96.pth'", "'vgg16-397923af.pth'", "pretrained_model_path", "backbone_path"],
              "musiq": [f"'{tmp_path / 'm.pth'}'", "musiq_spaq_ckpt-358bb6af.pth", "set pretrained_model_path"],
              "maniqa": ["'ckpt_kadid10k.pt'", f"weights_dir '{empty}'"],
              "clipiqa": ["'RN50.pt'", "'CLIP-IQA+_learned_prompts-603f3273.pth'"],
              "fid": ["'pt_inception-2015-12-05-6726825d.pth'"],
              "brisque": ["needs 'brisque_svm_weights.pth', which would be downloaded", "nothing is downloaded"],
              "topiq": ["Hugging Face hub", "nothing is downloaded"]}
    for name, parts in expect.items():
        line = next(line for line in lines if line.startswith(f"warning: metrics.{name} skipped:"))
        assert all(p in line for p in parts), line
    assert "Traceback" not in err and not any(empty.iterdir())
    assert suite.settings()["fid"] == {"type": "fid", "skipped": suite.skipped["fid"]["skipped"]}
    with pytest.raises(MissingWeights, match=r"metrics\.dists: needs the weights file 'DISTS_weights-f5e65c96\.pth'"):
        MetricSuite({"dists": {"type": "dists"}}, strict=True)


# ----------------------------------------------------------------------------- FID
@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """pyiqa's FID Inception (TF 2015-12-05 layout), random He-initialised, under pyiqa's file name."""
    from pyiqa.archs import inception
    with mock.patch.object(inception, "load_pretrained_network"):       # build the architecture only
        net = inception.fid_inception_v3()
    torch.manual_seed(9)
    for name, p in net.named_parameters():
        if p.dim() > 1:
            p.data.normal_(0, (2.0 / p[0].numel()) ** 0.5)
        else:
            p.data.fill_(1.0 if "bn.weight" in name else 0.0)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


def _independent_features(net, folder) -> np.ndarray:
    """Inception pool features by hand: each image resized to 299x299 as clean-fid's ``clean`` mode
    does (PIL bicubic per float channel), scaled to [-1, 1], through pyiqa's layer list."""
    from PIL import Image

    from osir.data.io import list_images
    feats = []
    for file in sorted(list_images(folder)):
        rgb = np.asarray(Image.open(file).convert("RGB"), dtype=np.float32)
        channels = [np.asarray(Image.fromarray(rgb[:, :, c], mode="F").resize((299, 299), Image.BICUBIC)).clip(0, 255)
                    for c in range(3)]
        x = (torch.from_numpy(np.stack(channels))[None] - 128) / 128
        with torch.no_grad():
            for block in net.blocks:
                x = block(x)
        feats.append(x.reshape(-1).double().numpy())
    return np.stack(feats)


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets, the trace of sqrt(S1 S2) as the nuclear norm of X1 X2^T
    (S = X^T X, X the centred features over sqrt(N-1)): valid for any N, cheap for few images."""
    x1 = (a - a.mean(0)) / np.sqrt(len(a) - 1)
    x2 = (b - b.mean(0)) / np.sqrt(len(b) - 1)
    nuclear = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + (x1 ** 2).sum() + (x2 ** 2).sum() - 2 * nuclear)


@pytest.mark.parametrize("n", [12, 300])        # fewer and more images than feature dimensions
def test_frechet_distance_equals_pyiqas_sqrtm_formula(n):
    from pyiqa.archs.fid_arch import frechet_distance as pyiqa_frechet

    from osir.metrics.fid import frechet_distance
    rng = np.random.default_rng(n)
    mix = rng.standard_normal((64, 64))
    a = np.maximum(rng.standard_normal((n, 64)) @ mix, 0)
    b = np.maximum(rng.standard_normal((n + 5, 64)) @ mix * 1.2 + 0.3, 0)
    mu_b, sigma_b = b.mean(0), np.cov(b, rowvar=False)
    expected = pyiqa_frechet(a.mean(0), np.cov(a, rowvar=False), mu_b, sigma_b)
    assert frechet_distance(a, mu_b, sigma_b) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(a, mu_b, sigma_b) == pytest.approx(_frechet(a, b), rel=1e-7)


def test_fid_between_folders_is_pyiqas_and_caches_the_gt_statistics(inception_file, tmp_path):
    import pyiqa
    from pyiqa.archs import inception

    from osir.metrics.fid import frechet_distance
    gt = write_images(tmp_path / "gt", 3, (64, 64), seed=1)
    restored = write_images(tmp_path / "restored", 3, (64, 64), seed=2)
    cache = tmp_path / "cache"
    spec = {"fid": {"type": "fid", "pretrained_model_path": str(inception_file), "cache_dir": str(cache),
                    "num_workers": 0}}
    suite = MetricSuite(spec)
    metric = suite.set_metrics["fid"]
    calls = []
    real = type(metric).features

    def counting(self, folder):
        calls.append(str(folder))
        return real(self, folder)
    with mock.patch.object(type(metric), "features", counting):
        first = suite.score_sets(restored, gt)["fid"]
        assert calls == [str(gt), str(restored)] and len(list(cache.glob("*.npz"))) == 1
        cached = next(cache.glob("*.npz"))
        stamp = cached.stat().st_mtime_ns
        calls.clear()
        again = MetricSuite(spec).score_sets(restored, gt)["fid"]      # a second run: GT statistics from the cache
        assert calls == [str(restored)] and again == first and cached.stat().st_mtime_ns == stamp
    key = metric.cache_key(gt)
    write_images(gt, 1, (64, 64), seed=3)                              # another GT image: another cache entry
    assert metric.cache_key(gt) != key
    write_images(gt, 1, (64, 64), seed=1)
    assert metric.cache_key(gt) == key
    # the same value from features extracted here, independently of pyiqa's extractor, and a closed form
    with mock.patch.object(inception, "load_pretrained_network",     # the saved weights, loaded here
                           lambda net, *_: net.load_state_dict(torch.load(inception_file))):
        net = inception.InceptionV3(output_blocks=[3]).eval()
    feats = [_independent_features(net, f) for f in (restored, gt)]
    assert first > 0 and first == pytest.approx(_frechet(*feats), rel=1e-4)
    mu_gt, sigma_gt = metric.reference_statistics(gt)                  # (cached) = the GT's own statistics
    assert frechet_distance(feats[1], mu_gt, sigma_gt) == pytest.approx(0, abs=1e-4 * first)
    # the Inception pyiqa builds from that file is the one scored with
    with mock.patch.object(inception, "FID_WEIGHTS_URL", str(inception_file)):
        model = pyiqa.create_metric("fid", device="cpu").net.model
    ours = metric._model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in model.state_dict().items())
    settings = suite.settings()["fid"]
    assert settings["mode"] == "clean" and settings["per_image"] is False and settings["lower_better"]


def test_score_folder_command_adds_fid_to_the_results(inception_file, tmp_path):
    from osir.metrics.__main__ import main
    gt = write_images(tmp_path / "gt", 3, (64, 64), seed=1)
    restored = write_images(tmp_path / "restored", 3, (64, 64), seed=2)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / inception_file.name).symlink_to(inception_file)
    (tmp_path / "m.yml").write_text(f"metrics:\n  psnr: {{type: psnr}}\n"
                                    f"  fid: {{type: fid, num_workers: 0, cache_dir: '{tmp_path / 'cache'}'}}\n"
                                    f"  dists: {{type: dists}}\n")
    assert main(["--restored", str(restored), "--gt", str(gt), "-opt", str(tmp_path / "m.yml"),
                 "--weights-dir", str(tmp_path / "weights"), "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["set_metrics"]["fid"] > 0 and summary["mean"]["fid"] == summary["set_metrics"]["fid"]
    assert "psnr" in summary["mean"] and "fid" not in summary["images"][0]
    assert summary["metrics"]["fid"]["pretrained_model_path"] == str(tmp_path / "weights" / inception_file.name)
    assert "DISTS_weights-f5e65c96.pth" in summary["metrics"]["dists"]["skipped"]
