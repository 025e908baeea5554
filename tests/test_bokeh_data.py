"""BokehPairDataset: the NTIRE 2023 bokeh layout (src/, tgt/, meta.txt), lens numbers, aligned
augmentation, collation and the errors for bad folders and meta files."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from osir.data.io import DataError
from osir.methods.refusion.bokeh_data import KNOWN_LENSES, BokehPairDataset
from osir.core.registry import DATASETS

OFFSET = 20  # tgt = src + OFFSET (8-bit), so tgt - src is constant wherever the two stay aligned

META = """00000, Sony50mmf1.8BS, Sony50mmf16.0BS, 35
00001, Canon50mmf1.4BS, Sony50mmf1.8BS, 12.5

00002 ,Canon50mmf1.8BS,  Canon50mmf1.4BS , 7
"""
EXPECTED = {"00000": [18.0, 160.0, 35.0], "00001": [-14.0, 18.0, 12.5], "00002": [-18.0, -14.0, 7.0]}


def make_bokeh(root, size=(20, 28), meta=META, target=True):
    """Three smooth random pairs; pair 00001 uses the challenge's '<id>.src.png' naming."""
    rng = np.random.default_rng(0)
    (root / "src").mkdir(parents=True)
    if target:
        (root / "tgt").mkdir()
    for i, pair_id in enumerate(["00000", "00001", "00002"]):
        small = rng.integers(0, 256 - OFFSET, (size[0] // 4, size[1] // 4, 3)).astype(np.uint8)
        src = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        suffix = (".src", ".tgt") if i == 1 else ("", "")
        cv2.imwrite(str(root / "src" / f"{pair_id}{suffix[0]}.png"), src)
        if target:
            cv2.imwrite(str(root / "tgt" / f"{pair_id}{suffix[1]}.png"), src + OFFSET)
    (root / "meta.txt").write_text(meta)
    return root


def test_items_carry_images_paths_and_lens_numbers(tmp_path):
    root = make_bokeh(tmp_path / "bokeh")
    ds = DATASETS.build({"type": "BokehPairDataset", "dataroot": str(root)})
    assert isinstance(ds, BokehPairDataset) and len(ds) == 3
    for index, pair_id in enumerate(["00000", "00001", "00002"]):
        item = ds[index]
        assert set(item) == {"lq", "gt", "lq_path", "gt_path", "name", "lens_info"}
        assert item["name"] == pair_id
        assert item["lq"].shape == item["gt"].shape == (3, 20, 28) and item["lq"].dtype == torch.float32
        assert item["lens_info"].dtype == torch.float32 and item["lens_info"].shape == (3,)
        assert item["lens_info"].tolist() == EXPECTED[pair_id]
        assert "/src/" in item["lq_path"] and "/tgt/" in item["gt_path"]
        torch.testing.assert_close(item["gt"] - item["lq"], torch.full_like(item["lq"], OFFSET / 255))
    assert ds[1]["lq_path"].endswith("00001.src.png") and ds[1]["gt_path"].endswith("00001.tgt.png")
    # Refusion's rule: Sony +10 x f-number, Canon -10 x f-number
    assert KNOWN_LENSES == {"Sony50mmf1.8BS": 18.0, "Sony50mmf1.4BS": 14.0, "Sony50mmf16.0BS": 160.0,
                            "Canon50mmf1.8BS": -18.0, "Canon50mmf1.4BS": -14.0}


def test_crop_flip_and_rotation_keep_source_and_target_aligned(tmp_path):
    ds = BokehPairDataset(str(make_bokeh(tmp_path / "b")), gt_size=12, use_flip=True, use_rot=True)
    crops = set()
    for seed in range(12):
        item = ds[(0, seed)]
        assert item["lq"].shape == item["gt"].shape == (3, 12, 12)
        torch.testing.assert_close(item["gt"] - item["lq"], torch.full_like(item["lq"], OFFSET / 255))
        crops.add(item["lq"].numpy().tobytes())
        torch.testing.assert_close(ds[(0, seed)]["lq"], item["lq"])  # replayable from the seed
    assert len(crops) > 1
    # without a crop, the 90-degree transpose shows as swapped sides (for some seeds, to both images)
    full = BokehPairDataset(str(tmp_path / "b"), use_rot=True)
    shapes = {tuple(full[(2, s)]["gt"].shape) for s in range(12)}
    assert shapes == {(3, 20, 28), (3, 28, 20)}
    for s in range(12):
        item = full[(2, s)]
        torch.testing.assert_close(item["gt"] - item["lq"], torch.full_like(item["lq"], OFFSET / 255))


def test_loader_collates_lens_info_to_batch_by_three(tmp_path):
    ds = BokehPairDataset(str(make_bokeh(tmp_path / "b")), gt_size=8)
    batch = next(iter(DataLoader(ds, batch_size=3, shuffle=False)))
    assert batch["lq"].shape == batch["gt"].shape == (3, 3, 8, 8)
    assert batch["lens_info"].shape == (3, 3) and batch["lens_info"].dtype == torch.float32
    assert batch["lens_info"].tolist() == [EXPECTED["00000"], EXPECTED["00001"], EXPECTED["00002"]]
    assert batch["name"] == ["00000", "00001", "00002"]


def test_lmdb_backend_and_loader_workers(tmp_path):
    from osir._compat import basicsr  # noqa: F401
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    disk = make_bokeh(tmp_path / "disk")
    lmdb_root = tmp_path / "lmdb"
    lmdb_root.mkdir()
    for role in ("src", "tgt"):
        names = sorted(q.name for q in (disk / role).iterdir())
        make_lmdb_from_imgs(str(disk / role), str(lmdb_root / f"{role}.lmdb"), names, [n[:-4] for n in names],
                            map_size=1 << 22)
    (lmdb_root / "meta.txt").write_text(META)
    ds = BokehPairDataset(str(lmdb_root), io_backend="lmdb")
    reference = BokehPairDataset(str(disk))
    assert len(ds) == 3 and ds[1]["lens_info"].tolist() == EXPECTED["00001"]
    torch.testing.assert_close(ds[1]["gt"], reference[1]["gt"])
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=1)))   # the dataset pickles into a worker
    assert batch["lens_info"].shape == (3, 3)


def test_without_target_folder_items_have_no_gt(tmp_path):
    root = make_bokeh(tmp_path / "b", target=False)
    ds = BokehPairDataset(str(root), gt_size=8)
    item = ds[1]
    assert set(item) == {"lq", "lq_path", "name", "lens_info"}
    assert item["lq"].shape == (3, 8, 8) and item["lens_info"].tolist() == EXPECTED["00001"]
    with pytest.raises(DataError, match=re.escape(f"image folder not found: '{root / 'tgt'}'")):
        BokehPairDataset(str(root), with_target=True)
    # and with_target=False ignores an existing tgt folder
    both = make_bokeh(tmp_path / "c")
    assert "gt" not in BokehPairDataset(str(both), with_target=False)[0]


def test_swap_turns_only_pairs_with_the_f16_lens_around(tmp_path):
    ds = BokehPairDataset(str(make_bokeh(tmp_path / "b")), use_swap=True)
    lens = {tuple(ds[(0, s)]["lens_info"].tolist()) for s in range(16)}
    assert lens == {(18.0, 160.0, 35.0), (160.0, 18.0, 35.0)}
    for s in range(16):
        item = ds[(0, s)]
        swapped = item["lens_info"][0] == 160.0
        sign = -1 if swapped else 1
        torch.testing.assert_close(item["gt"] - item["lq"], torch.full_like(item["lq"], sign * OFFSET / 255))
        assert item["lq_path"].count("/tgt/" if swapped else "/src/") == 1
    assert {tuple(ds[(1, s)]["lens_info"].tolist()) for s in range(16)} == {tuple(EXPECTED["00001"])}


def test_extra_lenses_option(tmp_path):
    meta = META.replace("Canon50mmf1.8BS", "Canon50mmf2.0BS")
    ds = BokehPairDataset(str(make_bokeh(tmp_path / "b", meta=meta)), lenses={"Canon50mmf2.0BS": -20.0})
    assert ds[2]["lens_info"].tolist() == [-20.0, -14.0, 7.0]


def _rewrite_meta(root, text):
    (root / "meta.txt").write_text(text)


@pytest.mark.parametrize("case, pattern", [
    ("no meta file", r"bokeh meta file not found: '.*/b/meta\.txt'"),
    ("unknown lens", r"'.*/b/meta\.txt', line 2: unknown source lens 'Sony50mmf1\.8' \(did you mean "
                     r"'Sony50mmf1\.8BS'\?\); known lenses: Sony50mmf1\.8BS, Sony50mmf1\.4BS, Sony50mmf16\.0BS, "
                     r"Canon50mmf1\.8BS, Canon50mmf1\.4BS"),
    ("three fields", r"'.*/b/meta\.txt', line 4: expected '<id>, <source lens>, <target lens>, <disparity>' "
                     r"\(4 comma-separated fields\), got '00002, Canon50mmf1\.8BS, 7'"),
    ("bad disparity", r"'.*/b/meta\.txt', line 1: disparity 'far' is not a finite number"),
    ("duplicate id", r"'.*/b/meta\.txt', line 4: id '00001' already listed on line 2"),
    ("empty meta", r"bokeh meta file '.*/b/meta\.txt' lists no pairs"),
    ("missing src", r"src image for pair '00002' \('.*/b/meta\.txt', line 4\) not found: expected '.*/b/src/00002\.<ext>'"),
    ("missing tgt", r"tgt image for pair '00001' \('.*/b/meta\.txt', line 2\) not found: expected '.*/b/tgt/00001\.<ext>'"),
    ("image without meta line", r"src image '.*/b/src/00003\.png' has no line for id '00003' in '.*/b/meta\.txt'"),
    ("size mismatch", r"size mismatch: src '.*/b/src/00000\.png' is 28x20, tgt '.*/b/tgt/00000\.png' is 10x20"),
])
def test_bad_input_is_one_data_error_naming_file_and_line(tmp_path, case, pattern):
    root = make_bokeh(tmp_path / "b")
    if case == "no meta file":
        (root / "meta.txt").unlink()
    elif case == "unknown lens":
        _rewrite_meta(root, META.replace("Canon50mmf1.4BS, Sony50mmf1.8BS", "Sony50mmf1.8, Sony50mmf1.8BS"))
    elif case == "three fields":
        _rewrite_meta(root, META.replace(" ,Canon50mmf1.8BS,  Canon50mmf1.4BS , 7", ", Canon50mmf1.8BS, 7"))
    elif case == "bad disparity":
        _rewrite_meta(root, META.replace("35", "far"))
    elif case == "duplicate id":
        _rewrite_meta(root, META.replace("00002 ,", "00001,"))
    elif case == "empty meta":
        _rewrite_meta(root, "\n  \n")
    elif case == "missing src":
        (root / "src" / "00002.png").unlink()
    elif case == "missing tgt":
        (root / "tgt" / "00001.tgt.png").unlink()
    elif case == "image without meta line":
        cv2.imwrite(str(root / "src" / "00003.png"), np.zeros((20, 28, 3), np.uint8))
    elif case == "size mismatch":
        cv2.imwrite(str(root / "tgt" / "00000.png"), np.zeros((20, 10, 3), np.uint8))
    with pytest.raises(DataError, match=pattern):
        BokehPairDataset(str(root))[0]
