"""The metric suite against published numbers, pyiqa called directly, and the folder scorer."""
import json
import re

import pytest
import torch

from osir.data.io import img2tensor, read_image
from osir.metrics.__main__ import main as score_main, score_folders
from osir.metrics.suite import MetricSuite
from tests.conftest import FIXTURES, SHARED

Y_METRICS = {"psnr": {"type": "psnr", "test_y_channel": True},
             "ssim": {"type": "ssim", "test_y_channel": True},
             "niqe": {"type": "niqe"}}
LINE = re.compile(r"(\w+_\d+_LR4\.png) \| PSNR: ([\d.]+); SSIM: ([\d.]+);.*?NIQE: ([\d.]+)")


def parse_log(text: str) -> dict[str, tuple[float, float, float]]:
    return {m[1]: (float(m[2]), float(m[3]), float(m[4])) for m in LINE.finditer(text)}


def test_fixture_images_reproduce_the_published_log(tmp_path):
    ref = parse_log((FIXTURES / "realsr" / "METRICS_excerpt.log").read_text())
    rows, settings = score_folders(FIXTURES / "realsr" / "osediff", FIXTURES / "realsr" / "HR", Y_METRICS)
    assert len(rows) == len(ref) == 2
    for row in rows:
        psnr, ssim, niqe = ref[row["image"]]
        assert row["psnr"] == pytest.approx(psnr, abs=1e-4)
        assert row["ssim"] == pytest.approx(ssim, abs=1e-4)
        assert row["niqe"] == pytest.approx(niqe, abs=0.01)
    assert settings["psnr"]["test_y_channel"] is True and settings["niqe"]["lower_better"] is True


def test_suite_agrees_with_pyiqa_called_directly():
    import pyiqa
    sr = img2tensor(read_image(FIXTURES / "realsr" / "osediff" / "Canon_004_LR4.png"))[None, :, :96, :128]
    hr = img2tensor(read_image(FIXTURES / "realsr" / "HR" / "Canon_004_LR4.png"))[None, :, :96, :128]
    suite = MetricSuite({"psnr": {"type": "psnr", "crop_border": 4}, "ssim": {"type": "ssim", "test_y_channel": True}})
    ours = suite.score(sr, hr)
    assert ours["psnr"][0] == pytest.approx(float(pyiqa.create_metric("psnr", crop_border=4, device="cpu")(sr, hr)), abs=1e-9)
    assert ours["ssim"][0] == pytest.approx(
        float(pyiqa.create_metric("ssim", test_y_channel=True, color_space="ycbcr", device="cpu")(sr, hr)), abs=1e-9)


def test_niqe_agrees_with_basicsr_parameters_through_pyiqa(tmp_path):
    """NIQE = pyiqa's algorithm with basicsr's shipped MATLAB pristine parameters (no download)."""
    import os
    import numpy as np
    from osir._compat import basicsr
    from pyiqa.archs.niqe_arch import NIQE
    params = np.load(os.path.join(os.path.dirname(basicsr.__file__), "metrics", "niqe_pris_params.npz"))
    import scipy.io
    mat = tmp_path / "niqe_params.mat"
    scipy.io.savemat(mat, {"mu_prisparam": params["mu_pris_param"], "cov_prisparam": params["cov_pris_param"]})
    img = img2tensor(read_image(FIXTURES / "realsr" / "osediff" / "Nikon_050_LR4.png"))[None, :, :256, :256]
    direct = float(NIQE(pretrained_model_path=str(mat))(img))
    assert MetricSuite({"niqe": {"type": "niqe"}}).score(img, None)["niqe"][0] == pytest.approx(direct, abs=1e-9)


def test_learned_metric_without_weights_names_the_missing_file(tmp_path):
    from osir.core.registry import METRICS
    backbone = tmp_path / "alexnet-owt-7be5be79.pth"
    backbone.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"weights file not found: '.*lpips_alex\.pth'"):
        MetricSuite({"lpips": {"type": "lpips", "pretrained_model_path": str(tmp_path / "lpips_alex.pth"),
                               "backbone_path": str(backbone)}}, strict=True)
    with pytest.raises(FileNotFoundError, match=r"backbone weights file not found: '.*alexnet\.pth'"):
        MetricSuite({"lpips": {"type": "lpips", "pretrained_model_path": str(backbone),
                               "backbone_path": str(tmp_path / "alexnet.pth")}}, strict=True)
    with pytest.raises(ValueError, match=r"unknown pyiqa metric 'musiqq' \(did you mean 'musiq'\?\)"):
        METRICS.get("pyiqa")(metric="musiqq")


def test_lpips_from_local_files_scores_as_pyiqa_does(tmp_path):
    """Random AlexNet (torchvision format) and random LPIPS layers (pyiqa format) load through the suite,
    offline, and score exactly as pyiqa's LPIPS built from the same files."""
    import torchvision
    from pyiqa.archs.lpips_arch import LPIPS
    from osir.core.weights import local_torchvision_weights
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet.pth")
    with local_torchvision_weights("AlexNet_Weights.IMAGENET1K_V1", str(tmp_path / "alexnet.pth")):
        net = LPIPS(pretrained=False, net="alex")
        for p in net.parameters():
            p.data.uniform_(0, 0.1)
        torch.save(net.state_dict(), tmp_path / "lpips_alex.pth")
        reference = LPIPS(pretrained_model_path=str(tmp_path / "lpips_alex.pth"), net="alex").eval()
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    suite = MetricSuite({"lpips": {"type": "lpips", "pretrained_model_path": str(tmp_path / "lpips_alex.pth"),
                                   "backbone_path": str(tmp_path / "alexnet.pth")}})
    b8 = (b * 255).round() / 255
    expected = float(reference(b8, a))
    assert expected > 0 and suite.score(b, a)["lpips"][0] == pytest.approx(expected, rel=1e-5)


def test_score_folder_command(tmp_path, capsys):
    out = tmp_path / "scores"
    assert score_main(["--restored", str(FIXTURES / "realsr" / "osediff"), "--gt", str(FIXTURES / "realsr" / "HR"),
                       "--output", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["count"] == 2 and set(summary["mean"]) == {"psnr", "ssim", "niqe"}
    assert "osediff" in capsys.readouterr().out
    assert score_main(["--restored", str(FIXTURES / "realsr" / "osediff"), "--gt", str(tmp_path)]) == 2


def test_score_folder_options_file_inherits_its_metrics_through_base(tmp_path, capsys):
    """A test file whose metrics come from its _base_ scores with those metrics, not an empty suite."""
    (tmp_path / "train.yml").write_text("metrics:\n  psnr: {type: psnr, test_y_channel: true}\n")
    (tmp_path / "test.yml").write_text("_base_: train.yml\nname: t\n")
    (tmp_path / "empty.yml").write_text("name: e\n")
    args = ["--restored", str(FIXTURES / "realsr" / "osediff"), "--gt", str(FIXTURES / "realsr" / "HR"),
            "--output", str(tmp_path / "out")]
    assert score_main([*args, "-opt", str(tmp_path / "test.yml")]) == 0
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(summary["mean"]) == {"psnr"} and summary["mean"]["psnr"] > 20
    assert score_main([*args, "-opt", str(tmp_path / "empty.yml")]) == 2
    assert "empty.yml: no metrics: section (nor in its _base_ files)" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "data" / "realsr").is_dir(), reason="shared/data/realsr not available")
def test_whole_realsr_set_reproduces_the_published_averages():
    """All 100 images: per-image PSNR/SSIM to 1e-4, NIQE mean to 0.01 of the authors' log (see README:
    two images differ by 0.010 and 0.018 in NIQE from the log's pyiqa 0.1.10 parameters file)."""
    root = SHARED / "data" / "realsr"
    ref = parse_log(next((root / "osediff_results" / "metrics").glob("*.log")).read_text())
    rows, _ = score_folders(root / "osediff_results", root / "HR", Y_METRICS)
    assert len(rows) == len(ref) == 100
    for row in rows:
        psnr, ssim, niqe = ref[row["image"]]
        assert row["psnr"] == pytest.approx(psnr, abs=1e-4) and row["ssim"] == pytest.approx(ssim, abs=1e-4)
        assert row["niqe"] == pytest.approx(niqe, abs=0.02)
    within = sum(abs(r["niqe"] - ref[r["image"]][2]) <= 0.01 for r in rows)
    assert within >= 98
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("psnr", "ssim", "niqe")}
    assert mean["psnr"] == pytest.approx(25.1511, abs=1e-4)
    assert mean["ssim"] == pytest.approx(0.7341, abs=1e-4)
    assert mean["niqe"] == pytest.approx(5.6476, abs=0.01)
