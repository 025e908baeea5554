"""Bokeh-transformation pairs (NTIRE 2023 Bokeh Effect Transformation) for Refusion's lens-conditioned
model.

Folder layout (the challenge data split into one folder per role, as Refusion's options expect)::

    <dataroot>/src/<id>[.anything].<ext>   the scene shot with the source lens
    <dataroot>/tgt/<id>[.anything].<ext>   the same scene with the target lens (absent for test inputs)
    <dataroot>/meta.txt                    one line per pair:  <id>, <source lens>, <target lens>, <disparity>

e.g. ``00000, Sony50mmf1.8BS, Sony50mmf16.0BS, 35``.  An image belongs to the pair named by its file
name up to the first dot, so both ``00000.png`` and the challenge's ``00000.src.jpg`` / ``00000.tgt.jpg``
work.  (The challenge's ``alpha`` masks are not read: Refusion's loss does not use them.)

Each item is the usual pair dict plus ``lens_info``, a float32 tensor ``[source lens, target lens,
disparity]`` (a batch collates it to B x 3).  A lens becomes a signed, scaled aperture: the f-number
times 10, positive for Sony and negative for Canon lenses (``Sony50mmf1.8BS`` -> 18, ``Canon50mmf1.4BS``
-> -14, ``Sony50mmf16.0BS`` -> 160); the disparity (the blur strength) is taken as it is written.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Optional

import torch
from torch.utils.data import Dataset
from pydantic import PositiveInt

from osir.data.datasets import _ImageFolderSource, _split_key
from osir.data.io import DataError, img2tensor
from osir.data.sampler import AUGMENT, sample_rng
from osir.data.transforms import paired_random_crop, random_flip_rot
from osir.core.registry import DATASETS, nearest
import osir.methods.refusion.files  # noqa: F401  (its file declarations, also where the entry points are stale)

#: the lenses of the challenge data and their numbers (sign = maker, magnitude = 10 x f-number)
KNOWN_LENSES: dict[str, float] = {
    "Sony50mmf1.8BS": 18.0,
    "Sony50mmf1.4BS": 14.0,
    "Sony50mmf16.0BS": 160.0,
    "Canon50mmf1.8BS": -18.0,
    "Canon50mmf1.4BS": -14.0,
}

#: a lens number above this is the (nearly all-in-focus) f/16 rendering; only pairs with such a
#: lens may be used in the reverse direction (``use_swap``)
SHARP_LENS_ABOVE = 100.0

META_FORMAT = "'<id>, <source lens>, <target lens>, <disparity>'"


def read_bokeh_meta(path: str | Path, lenses: dict[str, float]) -> dict[str, tuple[float, float, float, int]]:
    """Parse a bokeh meta file: ``{id: (source lens value, target lens value, disparity, line number)}``.

    Blank lines are skipped; any other line must have four comma-separated fields, known lens names
    and a finite disparity, else a :class:`DataError` names the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"bokeh meta file not found: '{path}' (one line per pair: {META_FORMAT})")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"bokeh meta file '{path}' is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(f"cannot read bokeh meta file '{path}': {err.strerror or err}") from None

    def lens_value(name: str, line_no: int, role: str) -> float:
        if name not in lenses:
            raise DataError(f"'{path}', line {line_no}: unknown {role} lens '{name}'{nearest(name, lenses)}; "
                            f"known lenses: {', '.join(lenses)} (add others with the dataset option "
                            f"'lenses: {{<name>: <value>}}')")
        return float(lenses[name])

    meta: dict[str, tuple[float, float, float, int]] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4 or not all(fields):
            raise DataError(f"'{path}', line {line_no}: expected {META_FORMAT} (4 comma-separated fields), "
                            f"got {line.strip()!r}")
        pair_id, src_lens, tgt_lens, disparity_text = fields
        try:
            disparity = float(disparity_text)
        except ValueError:
            disparity = math.nan
        if not math.isfinite(disparity):
            raise DataError(f"'{path}', line {line_no}: disparity {disparity_text!r} is not a finite number")
        if pair_id in meta:
            raise DataError(f"'{path}', line {line_no}: id '{pair_id}' already listed on line {meta[pair_id][3]}")
        meta[pair_id] = (lens_value(src_lens, line_no, "source"), lens_value(tgt_lens, line_no, "target"),
                         disparity, line_no)
    if not meta:
        raise DataError(f"bokeh meta file '{path}' lists no pairs (one line per pair: {META_FORMAT})")
    return meta


def _pair_ids(source: _ImageFolderSource, role: str) -> dict[str, str]:
    """{pair id: image key} of one folder; the id is the file name up to its first dot."""
    out: dict[str, str] = {}
    for key in source.items:
        parent, _, name = key.rpartition("/")
        pair_id = (f"{parent}/" if parent else "") + name.split(".", 1)[0]
        if pair_id in out:
            raise DataError(f"{role} images '{source.items[out[pair_id]]}' and '{source.items[key]}' both "
                            f"belong to pair '{pair_id}'")
        out[pair_id] = key
    return out


@DATASETS.register()
class BokehPairDataset(Dataset):
    """Source/target bokeh pairs with their lens metadata (see the module docstring for the layout).

    ``gt_size`` takes the same random crop from source and target; ``use_flip``/``use_rot`` flip and
    transpose both alike.  ``use_swap`` (the release's option: on in its stage-1 ``train_bokeh.yml``, off
    in its stage-2 ``refusion.yml``) turns a pair whose source or target lens is the f/16 one around half
    of the time: target becomes input and the two lens numbers trade places.  ``lenses`` adds or overrides ``{lens name: number}`` entries.

    ``src_dir``/``tgt_dir`` (relative to ``dataroot``, or absolute) default to ``src``/``tgt``, or to
    ``src.lmdb``/``tgt.lmdb`` with ``io_backend: lmdb``.  ``meta_file`` is relative to ``dataroot`` too.

    ``with_target``: ``None`` reads the target folder if it exists; ``False`` never does (inference:
    items then carry no ``gt``/``gt_path``); ``True`` requires it.  A meta line without its images, an
    image without a meta line, and source/target images of different sizes are errors naming the file.
    """

    def __init__(self, dataroot: str, gt_size: Optional[PositiveInt] = None, use_flip: bool = False, use_rot: bool = False,
                 io_backend: Literal["disk", "lmdb"] = "disk", meta_file: str = "meta.txt",
                 with_target: Optional[bool] = None, use_swap: bool = False,
                 lenses: Optional[dict[str, float]] = None, src_dir: Optional[str] = None,
                 tgt_dir: Optional[str] = None):
        root = Path(dataroot)
        suffix = ".lmdb" if io_backend == "lmdb" else ""   # basicsr's LMDB folders end in .lmdb
        src_root, tgt_root = root / (src_dir or f"src{suffix}"), root / (tgt_dir or f"tgt{suffix}")
        self.meta_path = str(root / meta_file)
        self.meta = read_bokeh_meta(self.meta_path, {**KNOWN_LENSES, **(lenses or {})})
        self.gt_size, self.use_flip, self.use_rot, self.use_swap = gt_size, use_flip, use_rot, use_swap

        self.src = _ImageFolderSource(str(src_root), io_backend, "lq")
        self.src_keys = self._match(self.src, "src")
        if with_target is None:
            with_target = tgt_root.exists()
        if with_target:
            self.tgt = _ImageFolderSource(str(tgt_root), io_backend, "gt")
            self.tgt_keys = self._match(self.tgt, "tgt")
        else:
            if use_swap:
                raise DataError(f"use_swap needs target images, but '{tgt_root}' is not used")
            self.tgt, self.tgt_keys = None, {}
        self.ids = sorted(self.meta)

    def _match(self, source: _ImageFolderSource, role: str) -> dict[str, str]:
        keys = _pair_ids(source, role)
        for pair_id, (*_, line_no) in self.meta.items():
            if pair_id not in keys:
                raise DataError(f"{role} image for pair '{pair_id}' ('{self.meta_path}', line {line_no}) not found: "
                                f"expected '{Path(source.root) / pair_id}.<ext>' (or '{pair_id}.<anything>.<ext>')")
        for pair_id, key in keys.items():
            if pair_id not in self.meta:
                raise DataError(f"{role} image '{source.items[key]}' has no line for id '{pair_id}' "
                                f"in '{self.meta_path}'")
        return keys

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key) -> dict:
        index, seed = _split_key(key)
        pair_id = self.ids[index]
        src_lens, tgt_lens, disparity, _ = self.meta[pair_id]
        lq = self.src.read(self.src_keys[pair_id])
        lq_path = self.src.items[self.src_keys[pair_id]]
        rng = sample_rng(seed, AUGMENT)
        if self.tgt is None:
            if self.gt_size is not None:
                lq, _ = paired_random_crop(lq, lq, self.gt_size, 1, rng, lq_path)
            (lq,) = random_flip_rot([lq], rng, self.use_flip, self.use_rot)
            return {"lq": img2tensor(lq), "lq_path": lq_path, "name": pair_id,
                    "lens_info": torch.tensor([src_lens, tgt_lens, disparity], dtype=torch.float32)}

        gt = self.tgt.read(self.tgt_keys[pair_id])
        gt_path = self.tgt.items[self.tgt_keys[pair_id]]
        if gt.shape != lq.shape:
            raise DataError(f"size mismatch: src '{lq_path}' is {lq.shape[1]}x{lq.shape[0]}, "
                            f"tgt '{gt_path}' is {gt.shape[1]}x{gt.shape[0]}")
        if self.gt_size is not None:
            gt, lq = paired_random_crop(gt, lq, self.gt_size, 1, rng, gt_path)
        gt, lq = random_flip_rot([gt, lq], rng, self.use_flip, self.use_rot)
        if self.use_swap and rng.random() < 0.5 and max(src_lens, tgt_lens) > SHARP_LENS_ABOVE:
            lq, gt, lq_path, gt_path = gt, lq, gt_path, lq_path
            src_lens, tgt_lens = tgt_lens, src_lens
        return {"lq": img2tensor(lq), "gt": img2tensor(gt), "lq_path": lq_path, "gt_path": gt_path, "name": pair_id,
                "lens_info": torch.tensor([src_lens, tgt_lens, disparity], dtype=torch.float32)}
