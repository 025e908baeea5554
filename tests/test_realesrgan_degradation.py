"""Real-ESRGAN high-order degradation: seeded, sized, switchable, pooled, and usable in training."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from osir.degradations.realesrgan import PRESETS, PairPool, RealESRGANDegradation
from osir.registry import OptionsError

ROOT = Path(__file__).resolve().parents[1]


def run(deg, gt, seeds, torch_seed=0):
    params = [deg.draw(s) for s in seeds]
    batch = {k: torch.stack([p[k] for p in params]) for k in params[0]}
    torch.manual_seed(torch_seed)
    return deg(gt, batch)


def smooth(b=2, size=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(b, 3, size // 8, size // 8, generator=g), size=size, mode="bicubic").clamp(0, 1)


def test_same_seed_same_lq_different_seed_differs_and_size_is_gt_over_scale():
    deg, gt = RealESRGANDegradation(), smooth()
    a, target = run(deg, gt, [1, 2])
    b, _ = run(deg, gt, [1, 2])
    c, _ = run(deg, gt, [3, 4])
    assert a.shape == (2, 3, 24, 24) and target.shape == gt.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, (a * 255).round() / 255)                        # quantised to 8 bits
    for key, value in deg.draw(7).items():
        assert torch.equal(value, deg.draw(7)[key])                      # drawn parameters replay


def test_all_stages_off_is_a_plain_bicubic_downscale():
    off = dict(blur_prob=0.0, second_blur_prob=0.0, resize_prob=[0.0, 0.0, 1.0], resize_prob2=[0.0, 0.0, 1.0],
               noise_prob=0.0, noise_prob2=0.0, jpeg_prob=0.0, jpeg_prob2=0.0, final_sinc_prob=0.0,
               resize_mode_prob=[0.0, 0.0, 1.0], use_usm=False)
    deg, gt = RealESRGANDegradation(**off), smooth()
    lq, target = run(deg, gt, [5, 6])
    expected = F.interpolate(F.interpolate(gt, scale_factor=1.0, mode="bicubic"), size=(24, 24), mode="bicubic")
    expected = (expected.clamp(0, 1) * 255).round() / 255
    assert torch.equal(target, gt) and (lq - expected).abs().max() < 1e-6


def test_noise_strength_and_jpeg_follow_their_options():
    base = dict(blur_prob=0.0, second_blur_prob=0.0, resize_prob=[0.0, 0.0, 1.0], resize_prob2=[0.0, 0.0, 1.0],
                jpeg_prob=0.0, jpeg_prob2=0.0, final_sinc_prob=0.0, resize_mode_prob=[0.0, 0.0, 1.0], use_usm=False,
                scale=1, noise_prob2=0.0, gaussian_noise_prob=1.0, gray_noise_prob=0.0)
    gt = torch.full((2, 3, 64, 64), 0.5)
    stds = []
    for sigma in (5.0, 20.0):
        lq, _ = run(RealESRGANDegradation(**base, noise_range=[sigma, sigma]), gt, [1, 2])
        stds.append(float((lq - gt).std()) * 255)
    assert stds[0] == pytest.approx(5, rel=0.1) and stds[1] == pytest.approx(20, rel=0.1)
    img = smooth(2, 96, seed=3)
    jpeg = {**base, "noise_prob": 0.0, "jpeg_prob": 1.0}
    low, _ = run(RealESRGANDegradation(**jpeg, jpeg_range=[10.0, 10.0]), img, [1, 2])
    high, _ = run(RealESRGANDegradation(**jpeg, jpeg_range=[95.0, 95.0]), img, [1, 2])
    assert (low - img).abs().mean() > 2 * (high - img).abs().mean()


def test_patches_too_small_for_the_kernels_are_refused():
    with pytest.raises(ValueError, match=r"GT patches of 32x32 are too small .* use a larger gt_size"):
        run(RealESRGANDegradation(), smooth(2, 32), [1, 2])


def test_osediff_preset_resizes_lq_back_and_options_are_checked():
    assert PRESETS["osediff"]["use_usm"] is False
    lq, target = run(RealESRGANDegradation(preset="osediff"), smooth(), [1, 2])
    assert lq.shape == target.shape == (2, 3, 96, 96)
    with pytest.raises(OptionsError, match=r"degradation\.nois_range: unknown key \(did you mean 'noise_range'\?\)"):
        RealESRGANDegradation(nois_range=[1, 2])
    with pytest.raises(OptionsError, match=r"degradation\.preset: unknown preset 'x4'"):
        RealESRGANDegradation(preset="x4")


def test_pool_keeps_pairs_matched_and_checks_the_batch_size():
    pool = PairPool(6)
    seen = []
    for step in range(6):
        lq = torch.arange(step * 3, step * 3 + 3, dtype=torch.float32).view(3, 1, 1, 1)
        out_lq, out_gt = pool(lq, lq * 10)
        assert torch.equal(out_gt, out_lq * 10)
        seen += out_lq.view(-1).tolist()
    assert len(set(seen)) > 9                                             # batches mix pooled pairs
    with pytest.raises(OptionsError, match="not a multiple of the batch size 4"):
        pool(torch.zeros(4, 1, 1, 1), torch.zeros(4, 1, 1, 1))


def test_training_with_the_batch_degradation(tmp_path):
    from osir.engine.trainer import Trainer
    from osir.options import load_options
    from tests.conftest import tiny_options, write_yaml
    opt = tiny_options(tmp_path, **{"train.total_iter": 2, "val.freq": 100})
    opt["datasets"]["train"].pop("degradation")
    opt["datasets"]["gt_dir"] = None
    from tests.conftest import write_images
    opt["datasets"]["train"]["dataroot_gt"] = str(write_images(tmp_path / "big", 2, (96, 96)))
    opt["datasets"]["train"]["gt_size"] = 96
    del opt["datasets"]["gt_dir"]
    opt["method"]["upscale"] = 4
    opt["degradation"] = {"type": "RealESRGANDegradation", "preset": "realesrgan_x4", "pool_size": 4}
    opt["datasets"].pop("val")
    trainer = Trainer(load_options(write_yaml(tmp_path / "o.yml", opt)))
    result = trainer.train()
    assert result["train"]["l_ml"] == result["train"]["l_ml"]
    bad = {**opt, "degradation": {**opt["degradation"], "pool_size": 3}}
    with pytest.raises(OptionsError, match=r"degradation\.pool_size 3 is not a multiple of datasets\.train\.batch_size 2"):
        Trainer(load_options(write_yaml(tmp_path / "p.yml", bad)))


def test_degrade_command_writes_a_replayable_test_set(tmp_path):
    import numpy as np
    from osir.data.io import read_image
    from osir.degrade import main
    from tests.conftest import write_images
    gt = write_images(tmp_path / "gt", 2, (98, 101), seed=4)
    assert main(["-opt", str(ROOT / "options/degradations/realesrgan_x4.yml"), "--input", str(gt), "--output",
                 str(tmp_path / "a"), "--seed", "7"]) == 0
    assert read_image(tmp_path / "a" / "LQ" / "img0.png").shape == (24, 25, 3)
    assert read_image(tmp_path / "a" / "GT" / "img0.png").shape == (96, 100, 3)
    assert main(["--card", str(tmp_path / "a" / "degradation_card.yml"), "--input", str(gt),
                 "--output", str(tmp_path / "b")]) == 0
    for name in ("img0", "img1"):
        assert np.array_equal(read_image(tmp_path / "a" / "LQ" / f"{name}.png"),
                              read_image(tmp_path / "b" / "LQ" / f"{name}.png"))
    assert main(["-opt", str(ROOT / "options/degradations/realesrgan_x4.yml"), "--input", str(gt), "--output",
                 str(tmp_path / "c"), "--seed", "8"]) == 0
    assert not np.array_equal(read_image(tmp_path / "a" / "LQ" / "img0.png"), read_image(tmp_path / "c" / "LQ" / "img0.png"))
