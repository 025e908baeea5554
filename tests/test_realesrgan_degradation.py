"""Real-ESRGAN high-order degradation: seeded, sized, switchable, pooled, and usable in training."""
import math
from pathlib import Path

import pytest
import torch
import yaml
import torch.nn.functional as F

from osir.degradations.realesrgan import PRESETS, PairPool, RealESRGANDegradation
from osir.core.registry import OptionsError

ROOT = Path(__file__).resolve().parents[1]


def run(deg, gt, seeds, torch_seed=0):
    params = [deg.draw(s) for s in seeds]
    batch = {k: torch.stack([p[k] for p in params]) for k in params[0]}
    torch.manual_seed(torch_seed)
    out = deg(gt, batch)
    return out["lq"], out["gt"]


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
        out = pool({"lq": lq, "gt": lq * 10, "gt_unsharpened": lq * 100})
        assert torch.equal(out["gt"], out["lq"] * 10) and torch.equal(out["gt_unsharpened"], out["lq"] * 100)
        seen += out["lq"].view(-1).tolist()
    assert len(set(seen)) > 9                                             # batches mix pooled pairs
    with pytest.raises(OptionsError, match="not a multiple of the batch size 4"):
        pool({"lq": torch.zeros(4, 1, 1, 1)})


def test_training_with_the_batch_degradation(tmp_path):
    from osir.engine.trainer import Trainer
    from osir.core.options import load_options
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
    assert math.isfinite(result["train"]["l_ml"])
    pool = trainer.degradation.pool
    assert pool.filled == 4 and pool.entries["lq"].shape == (4, 3, 24, 24)   # 2 iterations x batch 2, LQ = GT / 4
    bad = {**opt, "degradation": {**opt["degradation"], "pool_size": 3}}
    with pytest.raises(OptionsError, match=r"degradation\.pool_size 3 is not a multiple of datasets\.train\.batch_size 2"):
        Trainer(load_options(write_yaml(tmp_path / "p.yml", bad)))


def test_degrade_command_writes_a_replayable_test_set(tmp_path, monkeypatch):
    import numpy as np
    from osir.data.io import read_image
    from osir.degrade import main
    from tests.conftest import write_images
    gt = write_images(tmp_path / "gt", 2, (98, 101), seed=4)
    assert main(["-opt", str(ROOT / "options/degradations/realesrgan_x4.yml"), "--input", str(gt), "--output",
                 str(tmp_path / "a"), "--seed", "7"]) == 0
    assert read_image(tmp_path / "a" / "LQ" / "img0.png").shape == (24, 25, 3)
    assert read_image(tmp_path / "a" / "GT" / "img0.png").shape == (96, 100, 3)
    card = yaml.safe_load((tmp_path / "a" / "degradation_card.yml").read_text())
    assert card["degradation"]["noise_range"] == [1.0, 30.0] and card["degradation"]["preset"] == "realesrgan_x4"
    monkeypatch.setitem(PRESETS["realesrgan_x4"], "noise_range", [50.0, 50.0])   # the preset changes later
    assert main(["--card", str(tmp_path / "a" / "degradation_card.yml"), "--input", str(gt),
                 "--output", str(tmp_path / "b")]) == 0
    for name in ("img0", "img1"):
        assert np.array_equal(read_image(tmp_path / "a" / "LQ" / f"{name}.png"),
                              read_image(tmp_path / "b" / "LQ" / f"{name}.png"))
    assert main(["-opt", str(ROOT / "options/degradations/realesrgan_x4.yml"), "--input", str(gt), "--output",
                 str(tmp_path / "c"), "--seed", "8"]) == 0
    assert not np.array_equal(read_image(tmp_path / "a" / "LQ" / "img0.png"), read_image(tmp_path / "c" / "LQ" / "img0.png"))


OFF = dict(blur_prob=0.0, second_blur_prob=0.0, resize_prob=[0.0, 0.0, 1.0], resize_prob2=[0.0, 0.0, 1.0],
           noise_prob=0.0, noise_prob2=0.0, jpeg_prob=0.0, jpeg_prob2=0.0, final_sinc_prob=0.0,
           resize_mode_prob=[1.0, 0.0, 0.0], use_usm=False)


def test_second_blur_is_on_or_off_for_the_whole_batch_as_in_the_reference():
    deg, gt = RealESRGANDegradation(**{**OFF, "second_blur_prob": 0.5}), smooth()
    draws = [deg.draw(s) for s in (1, 2)]
    params = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}

    def with_blur2(flags):
        torch.manual_seed(0)
        return deg(gt, {**params, "blur2": torch.tensor(flags)})["lq"]
    assert torch.equal(with_blur2([1.0, 0.0]), with_blur2([1.0, 1.0]))      # the first sample decides
    assert torch.equal(with_blur2([0.0, 1.0]), with_blur2([0.0, 0.0]))
    assert not torch.equal(with_blur2([1.0, 1.0]), with_blur2([0.0, 0.0]))


def test_training_patches_are_cropped_after_degrading_larger_ones():
    """gt_size: degrade the loader's 96x96 patches, then crop 64x64 GT / 16x16 LQ at one position on
    the LQ grid: with every stage off and area resizes, the LQ is the area-downscaled GT patch."""
    deg, gt = RealESRGANDegradation(**OFF, gt_size=64), smooth(size=96)
    params = {k: torch.stack([deg.draw(s)[k] for s in (1, 2)]) for k in deg.draw(1)}
    torch.manual_seed(3)
    out = deg(gt, params)
    assert out["gt"].shape == (2, 3, 64, 64) and out["lq"].shape == (2, 3, 16, 16)
    expected = (F.interpolate(out["gt"], size=16, mode="area") * 255).round() / 255
    assert (out["lq"] - expected).abs().max() < 1e-6
    positions = [(t, l) for t in range(33) for l in range(33) if torch.equal(out["gt"], gt[..., t:t + 64, l:l + 64])]
    assert len(positions) == 1 and positions[0][0] % 4 == 0 and positions[0][1] % 4 == 0   # on the LQ grid
    with pytest.raises(OptionsError, match=r"degradation\.gt_size: 62 is not a multiple of the scale 4"):
        RealESRGANDegradation(gt_size=62)


def test_usm_preset_returns_the_sharpened_target_and_the_gt():
    deg, gt = RealESRGANDegradation(), smooth()
    params = {k: torch.stack([deg.draw(s)[k] for s in (1, 2)]) for k in deg.draw(1)}
    out = deg(gt, params)
    assert torch.equal(out["gt_unsharpened"], gt) and not torch.equal(out["gt"], gt)
    assert torch.allclose(out["gt"], deg.usm(gt))


def test_cropped_usm_targets_are_sharpened_after_the_crop_as_in_real_esrgan():
    deg, gt = RealESRGANDegradation(gt_size=64), smooth(size=96)
    params = {k: torch.stack([deg.draw(s)[k] for s in (1, 2)]) for k in deg.draw(1)}
    torch.manual_seed(3)
    out = deg(gt, params)
    assert torch.allclose(out["gt"], deg.usm(out["gt_unsharpened"]), atol=1e-6)     # the patch's own USM
    whole = deg.usm(gt)
    assert not any(torch.allclose(out["gt"], whole[..., t:t + 64, l:l + 64], atol=1e-4)
                   for t in range(0, 33, 4) for l in range(0, 33, 4))           # not a crop of the whole image's


def test_osediff_preset_draws_per_image_and_puts_the_resized_back_lq_on_the_8_bit_grid():
    """OSEDiff's data code: each image its own choices (here: its own first resize), the resize back to
    the GT size with a drawn mode, then 8-bit rounding."""
    deg, gt = RealESRGANDegradation("osediff", noise_prob=0.0, noise_prob2=0.0, jpeg_prob=0.0, jpeg_prob2=0.0), smooth()
    draws = [deg.draw(s) for s in range(40)]
    pick = [i for i, d in enumerate(draws) if float(d["scale1"]) > 1.2][:1] + \
           [i for i, d in enumerate(draws) if float(d["scale1"]) < 0.8][:1]
    params = {k: torch.stack([draws[i][k] for i in pick]) for k in draws[0]}
    out = deg(gt, params)["lq"]
    assert out.shape == gt.shape and torch.equal(out, (out * 255).round() / 255)
    for j, i in enumerate(pick):                         # each image as if degraded alone
        alone = deg(gt[j:j + 1], {k: v[j:j + 1] for k, v in params.items()})["lq"]
        assert torch.equal(out[j:j + 1], alone)
    x4 = RealESRGANDegradation("realesrgan_x4", noise_prob=0.0, noise_prob2=0.0, jpeg_prob=0.0, jpeg_prob2=0.0,
                               use_usm=False)
    batched = x4(gt, params)["lq"]
    second_alone = x4(gt[1:2], {k: v[1:2] for k, v in params.items()})["lq"]
    assert not torch.equal(batched[1:2], second_alone)   # x4: the batch follows its first sample
    assert {int(d["back_mode"]) for d in draws} == {0, 1, 2}
