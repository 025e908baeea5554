"""Datasets and image reading: bad images give the documented result."""
import cv2
import numpy as np
import pytest
import torch

from osir.data.datasets import PairedImageDataset, SingleImageDataset, SyntheticPairDataset
from osir.data.io import DataError, ImageReadError, read_image
from osir.data.sampler import SeededSampler
from tests.conftest import write_images


def test_grey_rgba_16bit_become_rgb_float(tmp_path):
    grey = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    rgba = np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 0)])       # BGRA on disk
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    cv2.imwrite(str(tmp_path / "d.png"), np.dstack([deep] * 3))
    g, a, d = (read_image(tmp_path / n) for n in ("g.png", "a.png", "d.png"))
    assert g.shape == a.shape == d.shape == (8, 8, 3) and g.dtype == np.float32
    assert np.allclose(g[..., 0], grey / 255.0) and np.allclose(g[..., 0], g[..., 2])
    assert np.allclose(a[0, 0], [30 / 255, 20 / 255, 10 / 255])                       # RGB order, alpha dropped
    assert np.allclose(d[..., 0], deep / 65535.0) and d.max() > 0.9


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(ImageReadError, match="gone.png"):
        read_image(tmp_path / "gone.png")


def test_paired_dataset_crops_matching_patches(tmp_path):
    write_images(tmp_path / "gt", 2, (32, 48), scale=4, lq_folder=tmp_path / "lq")
    ds = PairedImageDataset(str(tmp_path / "gt"), str(tmp_path / "lq"), scale=4, gt_size=16, use_flip=True, use_rot=True)
    item = ds[(1, 123)]
    assert item["gt"].shape == (3, 16, 16) and item["lq"].shape == (3, 4, 4)
    down = torch.nn.functional.avg_pool2d(item["gt"][None], 4)[0]
    assert (down - item["lq"]).abs().mean() < 0.05                                      # same region
    assert torch.equal(ds[(1, 123)]["gt"], item["gt"])                                  # replayable from its seed
    assert not torch.equal(ds[(1, 124)]["gt"], item["gt"])


def test_missing_partner_and_mismatched_pair(tmp_path):
    write_images(tmp_path / "gt", 2, (32, 32), lq_folder=tmp_path / "lq", scale=2)
    (tmp_path / "lq" / "img1.png").unlink()
    with pytest.raises(DataError, match=r"img1\.png' has no LQ partner"):
        PairedImageDataset(str(tmp_path / "gt"), str(tmp_path / "lq"), scale=2)
    write_images(tmp_path / "lq", 2, (20, 20))
    ds = PairedImageDataset(str(tmp_path / "gt"), str(tmp_path / "lq"), scale=2)
    with pytest.raises(ValueError, match=r"size mismatch: GT .*img0\.png' is 32x32, LQ .*img0\.png' is 20x20"):
        ds[0]
    ds = PairedImageDataset(str(tmp_path / "gt"), str(tmp_path / "lq"), scale=2, gt_size=16)
    with pytest.raises(ValueError, match=r"img0\.png': GT 32x32 is not 2x the LQ 20x20"):
        ds[0]


def test_image_smaller_than_patch_is_reflect_padded(tmp_path):
    write_images(tmp_path / "gt", 1, (16, 24))
    ds = SyntheticPairDataset(str(tmp_path / "gt"), {"type": "GaussianNoise", "sigma": 0}, gt_size=32)
    item = ds[0]
    assert item["gt"].shape == (3, 32, 32)
    assert torch.allclose(item["gt"][:, :16, :24], torch.from_numpy(read_image(tmp_path / "gt" / "img0.png")).permute(2, 0, 1))
    assert torch.equal(item["gt"][:, 16:, :24], item["gt"][:, :16, :24].flip(1))        # mirrored


def test_synthetic_noise_has_requested_sigma_and_is_seeded(tmp_path):
    write_images(tmp_path / "gt", 2, (64, 64))
    ds = SyntheticPairDataset(str(tmp_path / "gt"), {"type": "GaussianNoise", "sigma": 25})
    a, b = ds[(0, 5)], ds[(0, 5)]
    assert torch.equal(a["lq"], b["lq"]) and float(a["degradation"]["sigma"]) == 25
    assert float((a["lq"] - a["gt"]).std()) == pytest.approx(25 / 255, rel=0.05)
    ranged = SyntheticPairDataset(str(tmp_path / "gt"), {"type": "GaussianNoise", "sigma_range": [5, 50]})
    sigmas = {float(ranged[(0, s)]["degradation"]["sigma"]) for s in range(5)}
    assert len(sigmas) == 5 and all(5 <= s <= 50 for s in sigmas)


def test_single_image_dataset(tmp_path):
    write_images(tmp_path / "lq", 2, (8, 8))
    ds = SingleImageDataset(str(tmp_path / "lq"))
    assert len(ds) == 2 and ds[1]["lq"].shape == (3, 8, 8) and ds[1]["lq_path"].endswith("img1.png")


def test_lmdb_backend_through_basicsr(tmp_path):
    from osir._compat import basicsr  # noqa: F401
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    for kind, size in (("gt", (32, 32)), ("lq", (16, 16))):
        folder = write_images(tmp_path / kind, 2, size, seed=0 if kind == "gt" else 1)
        names = sorted(p.name for p in folder.iterdir())
        make_lmdb_from_imgs(str(folder), str(tmp_path / f"{kind}.lmdb"), names, [n[:-4] for n in names],
                            map_size=1 << 24)
    ds = PairedImageDataset(str(tmp_path / "gt.lmdb"), str(tmp_path / "lq.lmdb"), scale=2, io_backend="lmdb")
    assert len(ds) == 2
    item = ds[1]
    assert np.allclose(item["gt"].permute(1, 2, 0).numpy(), read_image(tmp_path / "gt" / "img1.png"))


def test_sampler_resumes_where_it_stopped_and_splits_ranks():
    full = list(zip(range(20), SeededSampler(7, seed=1)))
    resumed = list(zip(range(10), SeededSampler(7, seed=1, start=10)))
    assert [k for _, k in full[10:]] == [k for _, k in resumed]
    r0 = [k for _, k in zip(range(7), SeededSampler(7, seed=1, rank=0, world_size=2))]
    r1 = [k for _, k in zip(range(7), SeededSampler(7, seed=1, rank=1, world_size=2))]
    assert not set(r0[:3]) & set(r1[:3])
    epoch0 = [k[0] for _, k in zip(range(7), SeededSampler(7, seed=1))]
    assert sorted(epoch0) == list(range(7))


def test_crop_flip_and_degradation_draws_use_independent_streams(tmp_path):
    """A sample's seed drives its flips and its Real-ESRGAN draw from separate SeedSequence children:
    over 300 seeds, the vertical flip is taken about half the time whether or not the first kernel is
    a sinc (with one shared stream the two choices were tied together)."""
    from osir.data.datasets import SyntheticPairDataset, WithDegradationParams
    from osir.degradations.realesrgan import RealESRGANDegradation
    ramp = np.repeat(np.linspace(0, 255, 16, dtype=np.uint8)[:, None, None], 3, 2).repeat(16, 1)
    (tmp_path / "gt").mkdir()
    cv2.imwrite(str(tmp_path / "gt" / "ramp.png"), ramp)       # rows get brighter downwards
    stage = RealESRGANDegradation("realesrgan_x4", sinc_prob=0.5)
    dataset = WithDegradationParams(SyntheticPairDataset(str(tmp_path / "gt"), use_rot=True), stage.draw)
    vflip, sinc = [], []
    for seed in range(300):
        item = dataset[(0, seed)]
        vflip.append(bool(item["gt"][0, 0, 0] > item["gt"][0, -1, -1]))
        sinc.append(bool((item["degradation_params"]["kernel1"] < 0).any()))   # only sinc kernels go negative
    flips_with_sinc = [f for f, s in zip(vflip, sinc) if s]
    flips_without = [f for f, s in zip(vflip, sinc) if not s]
    assert 100 < len(flips_with_sinc) < 200
    assert 0.35 < np.mean(flips_with_sinc) < 0.65 and 0.35 < np.mean(flips_without) < 0.65


def test_random_masks_fill_holes_with_one_and_replay_from_the_seed(tmp_path):
    write_images(tmp_path / "gt", 2, (64, 64))
    spec = {"type": "RandomMask", "strokes": [2, 3], "width": [4, 8], "box_prob": 1.0}
    data = SyntheticPairDataset(str(tmp_path / "gt"), degradation=spec)
    a, b, other = data[(0, 5)], data[(0, 5)], data[(0, 6)]
    assert torch.equal(a["lq"], b["lq"]) and not torch.equal(a["lq"], other["lq"])
    holes = (a["lq"] != a["gt"]).any(0)
    assert 0.01 < float(a["degradation"]["hole_fraction"]) < 0.9
    assert torch.all(a["lq"][:, holes] == 1.0) and torch.equal(a["lq"][:, ~holes], a["gt"][:, ~holes])
