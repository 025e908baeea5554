"""Issue 22, point 6: a method added as a folder outside osir (``tests/plugins/sharpen/``: a small
feed-forward network, one release ``sharpen-x1``, one detector) and registered only through the entry points
of an installed distribution (faked here as a ``*.dist-info`` folder on ``sys.path`` and ``PYTHONPATH``, as
``test_engine_declarations`` does) trains, tests, restores, is recognised from its weights, exports to ONNX
and is measured by ``osir.bench efficiency``, without any shared file of osir knowing it."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from tests.conftest import tiny_options, write_images, write_yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tests.plugins.sharpen"
#: what the plugin's setup.py would declare (``entry_points={"osir.methods": [...], ...}``)
ENTRY_POINTS = (f"[osir.methods]\nSharpen = {PACKAGE}.method\n"
                f"[osir.archs]\nSharpenNet = {PACKAGE}.method\n"
                f"[osir.cards]\nsharpen = {PACKAGE}.card\n")
RELEASE_OPTIONS = f"pkg://{PACKAGE}/releases/sharpen-x1.yml"
HP = {"channels": 3, "features": 8, "blocks": 2}          # the release's network (releases/sharpen-x1.yml)


def _plugin_modules() -> list[str]:
    return [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The plugin installed as a distribution with entry points only (no ``imports:``, no registration by
    hand), for this module; afterwards its registry entries and modules are removed again."""
    from osir.core.registry import ARCHS, CARDS, METHODS, discover
    site = tmp_path_factory.mktemp("site")
    dist = site / "osir_sharpen_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: osir-sharpen-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    entries = ((METHODS, "Sharpen"), (ARCHS, "SharpenNet"), (CARDS, "sharpen"))
    assert not _plugin_modules() and not any(name in r._entries for r, name in entries)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.syspath_prepend(str(site))
            # the bench measures in fresh processes: they see the installed plugin too
            mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), str(ROOT), os.environ.get("PYTHONPATH")])))
            discover(refresh=True)
            yield site
    finally:
        for registry, name in entries:
            registry._entries.pop(name, None)
            registry._lazy.pop(name, None)
        for module in _plugin_modules():
            del sys.modules[module]
        discover(refresh=True)


def sharpen_net(seed: int = 0, **hp):
    """A SharpenNet built through the registry (which imports the plugin by its entry point, never by hand)."""
    from osir.core.registry import ARCHS
    torch.manual_seed(seed)
    net = ARCHS.build({"type": "SharpenNet", **HP, **hp}).eval()
    with torch.no_grad():                      # a visible change of the image (PyTorch's init barely changes it)
        net.tail.weight.mul_(20)
    return net


@pytest.fixture(scope="module")
def weights(plugin, tmp_path_factory):
    """A SharpenNet of the release's hyper-parameters saved as osir's safetensors, and the network."""
    from osir.core.checkpoint import save_network
    net = sharpen_net()
    path = tmp_path_factory.mktemp("weights") / "sharpen.safetensors"
    save_network(net, path)
    return path, net


def by_hand(net, image_u8: np.ndarray) -> np.ndarray:
    """The network applied to an HxWx3 uint8 RGB image, as uint8 (clamped to [0, 1], rounded)."""
    x = torch.from_numpy(image_u8.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return (y * 255).round().astype(np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def assert_network_output(written: np.ndarray, expected: np.ndarray, source: np.ndarray) -> None:
    """The written image is the network's output (float differences of batching may flip a rounding) and
    not the input."""
    diff = np.abs(written.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    assert np.abs(written.astype(int) - source.astype(int)).mean() > 2


# ----------------------------------------------------------------------------- train
def test_the_plugin_method_trains(plugin, tmp_path, capsys):
    from osir.recognize import recognize
    from osir.train import main
    opt = tiny_options(tmp_path, **{"train.total_iter": 4, "train.ema": {}})
    opt["method"] = {"type": "Sharpen", "network": {"type": "SharpenNet", "features": 4, "blocks": 1}}
    assert main(["-opt", str(write_yaml(tmp_path / "train.yml", opt))]) == 0
    assert "[val] psnr: input" in capsys.readouterr().out
    models = tmp_path / "experiments" / "tiny" / "models"
    trained = sorted(p.name for p in models.glob("net_g_*.safetensors"))
    assert trained, list(models.iterdir())
    found = recognize(models / trained[-1])           # the run's own file, recognised with the run's options
    assert (found.method, found.arch, found.network) == ("Sharpen", "SharpenNet", "g")
    assert found.hyper_parameters == {"channels": 3, "features": 4, "blocks": 1}
    assert found.settings_source.startswith("the run's")


# ----------------------------------------------------------------------------- test
def test_the_plugin_method_tests(plugin, weights, tmp_path):
    from osir.test import main
    path, net = weights
    gt = write_images(tmp_path / "gt", 2, (24, 32), seed=1)
    lq = write_images(tmp_path / "lq", 2, (24, 32), seed=2)
    opt = {"_base_": RELEASE_OPTIONS, "name": "sharpen_test",
           "datasets": {"pairs": {"type": "PairedImageDataset", "dataroot_gt": str(gt), "dataroot_lq": str(lq)}},
           "metrics": {"psnr": {"type": "psnr"}},
           "path": {"pretrained": {"g": str(path)}, "results_root": str(tmp_path / "results")}}
    assert main(["-opt", str(write_yaml(tmp_path / "test.yml", opt))]) == 0
    out = tmp_path / "results" / "sharpen_test" / "pairs"
    psnrs = []
    for name in ("img0", "img1"):
        source = read_rgb(lq / f"{name}.png")
        expected = by_hand(net, source)
        assert_network_output(read_rgb(out / f"{name}.png"), expected, source)
        mse = np.mean((expected.astype(np.float64) / 255 - read_rgb(gt / f"{name}.png") / 255) ** 2)
        psnrs.append(10 * np.log10(1 / mse))
    scores = json.loads((out / "metrics.json").read_text())
    assert scores["mean"]["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-4)
    assert scores["method"]["type"] == "Sharpen"


# ----------------------------------------------------------------------------- restore
def test_the_plugin_release_restores(plugin, weights, tmp_path, capsys):
    from osir.restore import main
    path, net = weights
    assert main(["--list-models"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "sharpen-x1" in listed and "realesrgan-x4" in listed
    image = write_images(tmp_path / "in", 1, (40, 48), seed=5) / "img0.png"
    source = read_rgb(image)
    assert main(["--model", "sharpen-x1", "--weights", str(path), str(image), "-o", str(tmp_path / "out")]) == 0
    assert_network_output(read_rgb(tmp_path / "out" / "img0.png"), by_hand(net, source), source)
    # a feed-forward release (the card's sampling): --steps is a one-line user error
    assert main(["--model", "sharpen-x1", "--weights", str(path), str(image), "-o", str(tmp_path / "o2"),
                 "--steps", "3"]) == 2
    assert "--steps: sharpen-x1 (Sharpen) is a feed-forward method" in capsys.readouterr().err


# ----------------------------------------------------------------------------- recognise
def test_the_plugin_weights_are_recognised(plugin, weights, tmp_path):
    from osir.recognize import recognize
    from osir.restore import main
    path, net = weights
    found = recognize(path)
    assert (found.method, found.arch, found.network, found.detector) == ("Sharpen", "SharpenNet", "g", "osir")
    assert found.hyper_parameters == HP
    assert found.tile == {"size": 256, "overlap": 16}          # the release's tiling (releases/sharpen-x1.yml)
    x = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(found.build_network()(x), net(x))
    other = tmp_path / "other.safetensors"                       # other hyper-parameters, read from the keys
    from osir.core.checkpoint import save_network
    save_network(sharpen_net(features=5, blocks=3), other)
    assert recognize(other).hyper_parameters == {"channels": 3, "features": 5, "blocks": 3}
    image = write_images(tmp_path / "in", 1, (32, 36), seed=6) / "img0.png"
    assert main(["--weights", str(path), str(image), "-o", str(tmp_path / "out")]) == 0     # no --model
    source = read_rgb(image)
    assert_network_output(read_rgb(tmp_path / "out" / "img0.png"), by_hand(net, source), source)


# ----------------------------------------------------------------------------- export
def test_the_plugin_network_exports_to_onnx(plugin, weights, tmp_path):
    import onnxruntime as ort
    from osir.export import main
    path, net = weights
    out = tmp_path / "sharpen.onnx"
    assert main(["onnx", "--weights", str(path), "-o", str(out), "--check-size", "32"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["lq"] and [o.name for o in session.get_outputs()] == ["restored"]
    x = torch.rand(2, 3, 21, 30, generator=torch.Generator().manual_seed(1))    # not the export or check sizes
    got = session.run(None, {"lq": x.numpy()})[0]
    with torch.no_grad():
        expected = net(x).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    assert np.abs(expected - x.numpy()).mean() > 1e-2               # the graph is not the identity
    card = yaml.safe_load((tmp_path / "sharpen.card.yaml").read_text())
    assert card["method"] == "Sharpen" and card["arch"] == "SharpenNet" and card["hyper_parameters"] == HP


# ----------------------------------------------------------------------------- bench
def test_the_plugin_method_is_benchmarked(plugin, weights, tmp_path, capsys):
    from osir.bench import main
    path, net = weights
    opt = {"_base_": RELEASE_OPTIONS, "name": "sharpen_bench", "path": {"pretrained": {"g": str(path)},
                                                                       "results_root": str(tmp_path / "results")}}
    options = write_yaml(tmp_path / "bench.yml", opt)
    size = 24
    assert main(["efficiency", "-opt", str(options), "--sizes", str(size), "--device", "cpu", "--warmup", "0",
                 "--threads", "1", "--output", str(tmp_path / "bench")]) == 0
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "bench" / "efficiency.json").read_text())
    [entry] = result["methods"]
    assert (entry["name"], entry["type"], entry["scale"], entry["noise_network"]) == ("sharpen_bench", "Sharpen", 1, "g")
    assert entry["parameters"]["total"] == sum(p.numel() for p in net.parameters())
    [row] = entry["measurements"]
    assert row["status"] == "ok", row
    # MACs of the convolutions: H x W x C_in x C_out x 3 x 3 each (head, 2 per block, tail)
    c, f, b = HP["channels"], HP["features"], HP["blocks"]
    assert row["macs"] == size * size * 9 * (c * f + 2 * b * f * f + f * c)
    assert row["nfe"] == 1 and row["output_size"] == [size, size]
    assert any(line.startswith("sharpen_bench ") and line.rstrip().endswith("ok") for line in table.splitlines())
