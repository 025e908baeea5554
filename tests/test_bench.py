"""osir.bench: MAC counting, the steps curve (quality vs NFE vs time) and the efficiency table."""
import itertools
import json

import pytest
import torch
from torch import nn

from osir import bench
from osir.diffusion import MeanRevertingSDE
from osir.engine.trainer import build_method
from osir.core.options import load_options
from osir.core.registry import ARCHS
from tests.conftest import tiny_options, write_images, write_yaml


class ExactNoise(nn.Module):
    """The exact noise predictor when the data is a point mass at the batch's GT (passed as ``gt``): the
    marginal of x_t is then N(m_t(gt), v_t) (IR-SDE Eq. 5-6), so the noise is (x_t - m_t(gt)) / sqrt(v_t)
    and the probability-flow ODE's only error is its discretisation."""
    instances: list = []    # noqa: RUF012  (every instance built, to read their call counts)

    def __init__(self, max_sigma: float, T: int, eps: float = 0.005):
        super().__init__()
        self.sde = MeanRevertingSDE(max_sigma / 255.0, T, "cosine", eps)
        self.calls = 0
        ExactNoise.instances.append(self)

    def forward(self, x, mu, t, gt):
        self.calls += 1
        return (x - self.sde.mean(gt, mu, t)) / self.sde.std(t, x)


@pytest.fixture(autouse=True, scope="module")
def exact_noise_arch():
    """Registered for this module's tests only (other tests read the list of registered archs)."""
    ARCHS.register(ExactNoise, name="BenchExactNoise")
    yield
    ARCHS._entries.pop("BenchExactNoise", None)


@pytest.fixture(autouse=True)
def one_thread():
    """The benchmarks here run with --threads 1 (two threads on a shared 2-core machine oversubscribe);
    main() sets torch's threads for the process: put them back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_macs_of_a_small_conv_net_equal_the_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    _, macs = bench.count_macs(net, torch.rand(1, 3, 32, 32))
    h = w = 32
    assert macs == 3 * 3 * 3 * 8 * h * w + 3 * 3 * 8 * 3 * h * w      # k*k*cin*cout*H*W per conv
    _, macs2 = bench.count_macs(net, torch.rand(2, 3, 32, 32))
    assert macs2 == 2 * macs


def test_ode_curve_improves_with_nfe_on_an_exact_noise_model(tmp_path):
    gt = write_images(tmp_path / "gt", 2, (32, 32))
    sde = {"max_sigma": 25, "T": 100, "eps": 0.005}
    opt = {"name": "toy", "seed": 0,
           "method": {"type": "Refusion", **sde, "sampler": "ode", "sample_steps": 10, "condition_keys": ["gt"],
                      "network": {"type": "BenchExactNoise", **sde}},
           "datasets": {"toy": {"type": "SyntheticPairDataset", "dataroot_gt": str(gt),
                                "degradation": {"type": "GaussianNoise", "sigma": 25}}},
           "metrics": {"psnr": {"type": "psnr"}},
           "path": {"results_root": str(tmp_path / "results")}}
    steps = [2, 5, 10, 25, 50, 100]
    ExactNoise.instances.clear()
    assert bench.main(["steps", "-opt", str(write_yaml(tmp_path / "toy.yml", opt)), "--steps", *map(str, steps),
                       "--warmup", "0", "--device", "cpu", "--threads", "1"]) == 0
    result = json.loads((tmp_path / "results" / "bench" / "toy_steps.json").read_text())
    points = result["points"]
    assert [p["steps"] for p in points] == steps and all(p["sampler"] == "ode" for p in points)
    # the NFE counted by the hook is what the sampler called: the network's own count, one per step
    assert [p["nfe"] for p in points] == steps
    assert [net.calls for net in ExactNoise.instances] == [n * 2 for n in steps]
    assert all(p["network_calls_per_image"]["g"] == n for p, n in zip(points, steps))
    psnr = [p["metrics"]["psnr"] for p in points]
    assert all(a < b for a, b in itertools.pairwise(psnr)), psnr
    assert psnr[-1] > 40


def test_steps_writes_json_and_png_with_a_point_per_sampler_and_steps(tmp_path, capsys):
    opt = tiny_options(tmp_path, **{"datasets.val.dataroot_gt": str(write_images(tmp_path / "two", 2, (32, 32)))})
    opt["method"].update(eta=0.0, clip_denoised=True)      # extras the ODE sampler does not take: left out for it
    out = tmp_path / "out"
    assert bench.main(["steps", "-opt", str(write_yaml(tmp_path / "tiny.yml", opt)), "--steps", "4", "2",
                       "--samplers", "posterior", "ode", "--output", str(out), "--device", "cpu",
                       "--threads", "1"]) == 0
    result = json.loads((out / "tiny_steps.json").read_text())
    assert [(p["sampler"], p["steps"]) for p in result["points"]] == \
        [("posterior", 4), ("posterior", 2), ("ode", 4), ("ode", 2)]
    for p in result["points"]:
        assert p["nfe"] == p["steps"] and p["images"] == 2 and p["seconds_per_image"] > 0
        assert set(p["metrics"]) == {"psnr"} and set(p["sets"]) == {"val"}
        assert any("no weights for g" in n for n in p["notes"])                 # random weights, said so
        assert any("does not apply to 'ode': left out" in n for n in p["notes"]) == (p["sampler"] == "ode")
    assert (out / "tiny_steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "posterior" in table and "ode" in table and "psnr" in table


def test_steps_errors_are_one_line(tmp_path, capsys):
    path = write_yaml(tmp_path / "tiny.yml", tiny_options(tmp_path))
    assert bench.main(["steps", "-opt", str(path), "--steps", "50"]) == 2           # T is 20
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--steps" in err and "T=20" in err
    assert bench.main(["steps", "-opt", str(path), "--steps", "2", "--samplers", "euler_a"]) == 2
    assert "unknown sampler 'euler_a'" in capsys.readouterr().err
    assert bench.main(["efficiency", "-opt", str(tmp_path / "missing.yml"), "--sizes", "8"]) == 2


def test_efficiency_reports_parameters_and_whole_and_tiled_entries(tmp_path):
    opt = tiny_options(tmp_path, **{"path.pretrained": {"g": str(tmp_path / "missing.safetensors")}})
    path = write_yaml(tmp_path / "tiny.yml", opt)
    out = tmp_path / "out"
    assert bench.main(["efficiency", "-opt", str(path), "--sizes", "32", "--tile", "16", "--device", "cpu",
                       "--warmup", "0", "--output", str(out), "--threads", "1"]) == 0
    result = json.loads((out / "efficiency.json").read_text())
    (entry,) = result["methods"]
    assert any("missing.safetensors" in n for n in entry["notes"])               # random weights, said so
    method = build_method(load_options(path, ["path.pretrained={}"]))
    numel = sum(p.numel() for p in method.networks["g"].parameters())
    assert entry["parameters"]["total"] == entry["parameters"]["trainable"] == numel
    assert entry["parameters"]["networks"]["g"]["total"] == numel
    whole, tiled = entry["measurements"]
    assert (whole["mode"], tiled["mode"]) == ("whole", "tiled")
    for row in (whole, tiled):
        assert row["status"] == "ok" and row["size"] == 32 and row["nfe"] == 4 and row["seconds"] > 0
        assert row["peak_memory_mib"] > 0 and row["output_size"] == [32, 32]
        assert row["macs"] == row["macs_other"] + row["nfe"] * row["macs_per_nfe"]
    assert whole["tiles"] == 1 and tiled["tiles"] == 9                     # 16-px tiles, overlap 8: 3 x 3
    # MACs per NFE of the whole image: one call of the noise network on a 32 x 32 state
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        _, one_call = bench.count_macs(method.networks["g"].eval(), x, x, 5)
    assert whole["macs_per_nfe"] == one_call and whole["macs"] == 4 * one_call
    assert tiled["macs"] > whole["macs"]                                   # the overlaps are computed twice
    markdown = (out / "efficiency.md").read_text()
    assert "random initial weights" in markdown and "| tiny |" in markdown


def test_a_size_that_does_not_fit_is_reported(tmp_path, monkeypatch):
    import osir.inference

    def too_big(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 64.00 GiB")
    monkeypatch.setattr(osir.inference, "restore_image", too_big)
    opt = load_options(write_yaml(tmp_path / "tiny.yml", tiny_options(tmp_path)))
    row = bench.measure({"opt": opt, "device": "cpu", "size": 4096, "mode": "whole", "tile": None, "overlap": 32,
                         "precision": "fp32", "warmup": 0, "repeats": 1, "count_macs": True})
    assert row["status"] == "out of memory" and "Tried to allocate" in row["error"]
    assert bench.is_out_of_memory(MemoryError()) and not bench.is_out_of_memory(RuntimeError("shape mismatch"))
