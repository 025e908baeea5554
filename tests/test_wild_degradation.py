"""Wild-IR's three-stage shuffled degradation: registered, GT-sized, 8-bit, seeded, its operations'
statistics and order, its options checked, and usable by ``osir degrade``."""
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from osir.degradations.wild import OPERATIONS
from osir.core.registry import BATCH_DEGRADATIONS, OptionsError

# every operation of every stage off
OFF = dict(blur_prob=0.0, blur_prob2=0.0, blur_prob3=0.0, resize_prob=[0.0, 0.0, 1.0], resize_prob2=[0.0, 0.0, 1.0],
           noise_prob=0.0, noise_prob2=0.0, noise_prob3=0.0, jpeg_prob=0.0, jpeg_prob2=0.0, jpeg_prob3=0.0)


def build(**options):
    return BATCH_DEGRADATIONS.build({"type": "WildDegradation", **options}, "degradation")


def stack(draws):
    return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}


def run(deg, gt, seeds, torch_seed=0, params=None):
    params = params if params is not None else stack([deg.draw(s) for s in seeds])
    torch.manual_seed(torch_seed)
    return deg(gt, params)


def smooth(b=2, h=64, w=72, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(b, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bicubic").clamp(0, 1)


def test_registered_by_entry_point_and_gt_sized_8_bit_output():
    names = [e.name for e in entry_points(group="osir.batch_degradations")]
    assert "WildDegradation" in names
    deg, gt = build(), smooth(3, 50, 61)
    out = run(deg, gt, [1, 2, 3])
    assert set(out) == {"lq", "gt"} and torch.equal(out["gt"], gt)
    assert out["lq"].shape == gt.shape                                     # restoration: the GT's size
    lq = out["lq"]
    assert lq.min() >= 0 and lq.max() <= 1 and torch.equal(lq, (lq * 255).round() / 255)
    assert not torch.equal(lq, gt)


def test_same_seed_same_lq_and_different_seeds_differ_in_order_and_lq():
    deg, gt = build(), smooth()
    a, b = run(deg, gt, [11, 12])["lq"], run(deg, gt, [11, 12])["lq"]
    assert torch.equal(a, b)
    for key, value in deg.draw(11).items():
        assert torch.equal(value, deg.draw(11)[key])                      # drawn parameters replay
    orders = [deg.draw(s)["order"] for s in (11, 12, 13)]
    for order in orders:                                                   # each stage a permutation of the 4
        assert order.shape == (3, 4) and all(sorted(row.tolist()) == [0, 1, 2, 3] for row in order)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    c = run(deg, gt, [13, 14])["lq"]
    assert not torch.equal(a, c)


def test_gaussian_noise_alone_has_the_drawn_sigma():
    """One stage, one operation: on a flat grey image the LQ's deviation is the drawn sigma (plus the
    8-bit rounding's 1/12 variance), per image, and grey noise is the same in every channel."""
    deg = build(**{**OFF, "noise_prob": 1.0, "gaussian_noise_prob": 1.0, "poisson_noise_prob": 0.0,
                   "gray_noise_prob": 0.0, "noise_range": [4.0, 30.0]})
    gt = torch.full((3, 3, 64, 64), 0.5)
    seeds = [1, 2, 3]
    sigmas = [float(deg.draw(s)["sigma1"]) for s in seeds]
    assert max(sigmas) - min(sigmas) > 3                                   # the strengths really differ
    lq = run(deg, gt, seeds)["lq"]
    for i, sigma in enumerate(sigmas):
        measured = float((lq[i] - gt[i]).std()) * 255
        assert measured == pytest.approx(np.sqrt(sigma ** 2 + 1 / 12), rel=0.05)
        assert abs(float((lq[i] - gt[i]).mean())) * 255 < 0.5
    grey = build(**{**OFF, "noise_prob": 1.0, "gaussian_noise_prob": 1.0, "poisson_noise_prob": 0.0,
                    "gray_noise_prob": 1.0, "noise_range": [10.0, 10.0]})
    lq = run(grey, gt[:1], [5])["lq"]
    assert torch.equal(lq[:, 0], lq[:, 1]) and torch.equal(lq[:, 1], lq[:, 2])
    assert float((lq - gt[:1]).std()) * 255 == pytest.approx(10, rel=0.05)


def test_resize_alone_goes_down_in_stage_1_and_back_to_the_gt_size_in_stage_3():
    deg = build(**{**OFF, "resize_prob": [0.0, 1.0, 0.0], "resize_range": [0.5, 1.0],
                   "resize_mode_prob": [0.0, 0.0, 1.0]})
    gt = smooth(1, 64, 72)
    scale = float(deg.draw(3)["scale1"])
    assert 0.5 <= scale < 1
    lq = run(deg, gt, [3])["lq"]
    small = F.interpolate(gt, size=(int(64 * scale), int(72 * scale)), mode="bicubic")
    expected = F.interpolate(small, size=(64, 72), mode="bicubic")
    assert (lq - (expected.clamp(0, 1) * 255).round() / 255).abs().max() < 1e-6


def test_the_order_of_a_stage_changes_the_result():
    """Blur then noise keeps the full noise; noise then blur smooths it (a Gaussian of sigma ~2 keeps
    about 15% of white noise's deviation), on the same drawn kernel and noise field."""
    deg = build(**{**OFF, "blur_prob": 1.0, "noise_prob": 1.0, "sinc_prob": 0.0,
                   "kernel_prob": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0], "kernel_size": [15, 15], "blur_sigma": [2.0, 2.2],
                   "gaussian_noise_prob": 1.0, "poisson_noise_prob": 0.0, "gray_noise_prob": 0.0,
                   "noise_range": [20.0, 20.0]})
    gt = torch.full((1, 3, 64, 64), 0.5)
    params = stack([deg.draw(7)])

    def with_order(first_stage):
        order = params["order"].clone()
        order[0, 0] = torch.tensor([OPERATIONS.index(n) for n in first_stage], dtype=order.dtype)
        return run(deg, gt, None, torch_seed=4, params={**params, "order": order})["lq"]

    blur_noise = with_order(["blur", "noise", "resize", "jpeg"])
    noise_blur = with_order(["noise", "blur", "resize", "jpeg"])
    assert not torch.equal(blur_noise, noise_blur)
    assert float((blur_noise - gt).std()) * 255 == pytest.approx(20, rel=0.05)
    assert float((noise_blur - gt).std()) < 0.3 * float((blur_noise - gt).std())


def test_options_are_checked_and_errors_name_the_key():
    with pytest.raises(OptionsError, match=r"degradation\.nois_range2: unknown key \(did you mean 'noise_range2'\?\); "
                                           r"allowed: preset, blur_prob, "):
        build(nois_range2=[1, 2])
    with pytest.raises(OptionsError, match=r"degradation\.preset: unknown preset 'wild'"):
        build(preset="wild")
    with pytest.raises(OptionsError, match=r"degradation\.resize_prob2: expected 3 probabilities"):
        build(resize_prob2=[0.5, 0.5])
    with pytest.raises(OptionsError, match=r"degradation\.blur_prob3: probabilities must lie in \[0, 1\]"):
        build(blur_prob3=1.5)
    with pytest.raises(OptionsError, match=r"degradation\.kernel_size2: expected odd kernel sizes"):
        build(kernel_size2=[4, 9])
    with pytest.raises(OptionsError, match=r"degradation\.jpeg_range3: JPEG qualities lie in \[1, 100\]"):
        build(jpeg_range3=[80, 120])
    assert float(build(jpeg_range3=[100, 100]).draw(0)["quality3"]) == 99.0     # DiffJPEG cannot do 100


def test_images_too_small_for_the_kernels_are_refused():
    from osir.data.io import DataError
    with pytest.raises(DataError, match=r"GT images of 12x12 are too small"):
        run(build(), smooth(1, 12, 12), [1])


def test_degrade_command_writes_a_replayable_gt_sized_test_set(tmp_path):
    from osir.data.io import read_image
    from osir.degrade import main
    from tests.conftest import write_images, write_yaml
    gt = write_images(tmp_path / "gt", 2, (40, 48), seed=2)
    opt = write_yaml(tmp_path / "wild.yml", {"degradation": {"type": "WildDegradation", "noise_prob": 1.0}})
    assert main(["-opt", str(opt), "--input", str(gt), "--output", str(tmp_path / "a"), "--seed", "3"]) == 0
    for name in ("img0", "img1"):
        lq = read_image(tmp_path / "a" / "LQ" / f"{name}.png")
        assert lq.shape == (40, 48, 3) and read_image(tmp_path / "a" / "GT" / f"{name}.png").shape == (40, 48, 3)
    card = yaml.safe_load((tmp_path / "a" / "degradation_card.yml").read_text())
    assert card["degradation"]["preset"] == "wild_ir" and card["degradation"]["noise_prob"] == 1.0
    assert main(["--card", str(tmp_path / "a" / "degradation_card.yml"), "--input", str(gt),
                 "--output", str(tmp_path / "b")]) == 0
    for name in ("img0", "img1"):
        assert np.array_equal(read_image(tmp_path / "a" / "LQ" / f"{name}.png"),
                              read_image(tmp_path / "b" / "LQ" / f"{name}.png"))
