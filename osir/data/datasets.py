"""Datasets. Each item is a dict: ``lq``, ``gt`` (3xHxW float tensors in [0, 1]), ``lq_path``,
``gt_path`` and, for synthetic pairs, ``degradation`` (the parameters drawn).

An item is addressed by an index or by ``(index, seed)``: the seed drives the crop, the
augmentation and any synthetic degradation (independent streams, ``sample_rng``), so a sample is
replayable from its seed.  ``name`` is the image's path relative to its folder, without suffix
(outputs are written under it, so two ``x.png`` in different sub-folders stay apart; ``x.png`` and ``x.jpg``
in one folder are an error naming both).  Bytes are
read through basicsr's FileClient (``io_backend: disk`` or ``lmdb``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import PositiveInt
from torch.utils.data import Dataset

from osir.data.io import DataError, ImageReadError, decode_image, images_by_name, img2tensor
from osir.data.sampler import AUGMENT, DEGRADATION, sample_rng
from osir.data.transforms import paired_random_crop, random_flip_rot
from osir.core.options import component
from osir.core.registry import DATASETS, DEGRADATIONS
import osir.data.files  # noqa: F401  (its file declarations, also where the entry points are stale)


def _lmdb_keys(root: str) -> list[str]:
    meta = Path(root) / "meta_info.txt"
    if not meta.is_file():
        raise DataError(f"LMDB '{root}' has no meta_info.txt (write it with basicsr's make_lmdb_from_imgs)")
    # basicsr's meta_info lines: "<key>.png (h,w,c) <compression>"
    keys: dict[str, str] = {}
    for entry in (line.split(" ")[0] for line in meta.read_text().splitlines() if line.strip()):
        key = entry.rsplit(".", 1)[0]
        if key in keys:
            raise DataError(f"LMDB '{root}': '{keys[key]}' and '{entry}' have the same name '{key}' (images are "
                            "matched by name without the extension)")
        keys[key] = entry
    return list(keys)


def skimage_photo(name: str) -> np.ndarray:
    """One of the photos that ship inside scikit-image (``skimage.data.<name>``) as HxWx3 float32 RGB in
    [0, 1] (grey photos repeated to three channels, alpha dropped)."""
    import skimage.data
    img = getattr(skimage.data, name)()
    img = np.repeat(img[:, :, None], 3, 2) if img.ndim == 2 else img[:, :, :3]
    return np.ascontiguousarray(img, dtype=np.float32) / 255.0


class _ImageFolderSource:
    """Lists and reads the images of one folder or LMDB; the client is opened lazily per worker.

    ``io_backend: skimage`` reads the photos that ship inside scikit-image instead (``root`` is a
    comma-separated list of ``skimage.data`` names): the offline demo data."""

    def __init__(self, root: str, io_backend: str, client_key: str):
        self.root, self.io_backend, self.client_key = str(root), io_backend, client_key
        self._client = None
        if io_backend == "skimage":
            self.items = {name.strip(): name.strip() for name in self.root.split(",") if name.strip()}
        elif io_backend == "disk":
            self.items = {name: str(p) for name, p in images_by_name(root).items()}   # a.png + a.jpg: an error
        else:
            self.items = {key: key for key in _lmdb_keys(root)}

    def read(self, name: str) -> np.ndarray:
        if self.io_backend == "skimage":
            return skimage_photo(name)
        if self._client is None:     # basicsr (and torchvision) imported here: option checks stay light
            from osir._compat import basicsr  # noqa: F401  (must precede basicsr imports)
            from basicsr.utils import FileClient
            kwargs = {"db_paths": [self.root], "client_keys": [self.client_key]} if self.io_backend == "lmdb" else {}
            self._client = FileClient(self.io_backend, **kwargs)
        path = self.items[name]
        try:
            data = self._client.get(path, self.client_key)
        except OSError as err:
            raise ImageReadError(f"cannot read image '{path}': {err.strerror or err}") from None
        if data is None:  # LMDB has no such key
            raise ImageReadError(f"LMDB '{self.root}' has no key '{path}'")
        return decode_image(data, path if self.io_backend == "disk" else f"{self.root}:{path}")

    def __getstate__(self):  # an LMDB environment cannot be pickled into workers
        return {**self.__dict__, "_client": None}


def _split_key(key) -> tuple[int, int]:
    return (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), int(key))


@DATASETS.register()
class PairedImageDataset(Dataset):
    """LQ/GT folders matched by file name (``lq name = filename_tmpl.format(gt name)``).

    A GT without an LQ partner (or the reverse) is an error naming the file.  With ``gt_size``
    a random paired crop is taken (images smaller than the patch are reflect-padded); the LQ must
    be exactly GT/``scale`` in size, else the item fails naming both files.  ``scale`` and ``gt_size``
    are positive (``PositiveInt``: checked with the options) and ``gt_size`` a multiple of ``scale``."""

    def __init__(self, dataroot_gt: str, dataroot_lq: str, scale: PositiveInt = 1,
                 gt_size: Optional[PositiveInt] = None, use_flip: bool = False, use_rot: bool = False,
                 filename_tmpl: str = "{}", io_backend: Literal["disk", "lmdb", "skimage"] = "disk"):
        self.gt = _ImageFolderSource(dataroot_gt, io_backend, "gt")
        self.lq = _ImageFolderSource(dataroot_lq, io_backend, "lq")
        if gt_size is not None and gt_size % scale:   # checked here: the crop would fail at the first item
            raise ValueError(f"gt_size {gt_size} is not a multiple of scale {scale}")
        self.scale, self.gt_size, self.use_flip, self.use_rot = scale, gt_size, use_flip, use_rot
        self.pairs = []
        lq_names = set(self.lq.items)
        for name in self.gt.items:
            lq_name = filename_tmpl.format(name)
            if lq_name not in lq_names:
                raise DataError(f"GT image '{self.gt.items[name]}' has no LQ partner '{lq_name}' in '{dataroot_lq}'")
            lq_names.discard(lq_name)
            self.pairs.append((name, lq_name))
        if lq_names:
            orphan = sorted(lq_names)[0]
            raise DataError(f"LQ image '{self.lq.items[orphan]}' has no GT partner in '{dataroot_gt}'")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key) -> dict:
        index, seed = _split_key(key)
        gt_name, lq_name = self.pairs[index]
        gt, lq = self.gt.read(gt_name), self.lq.read(lq_name)
        gt_path, lq_path = self.gt.items[gt_name], self.lq.items[lq_name]
        rng = sample_rng(seed, AUGMENT)
        if self.gt_size is not None:
            gt, lq = paired_random_crop(gt, lq, self.gt_size, self.scale, rng, gt_path)
        elif gt.shape[0] != lq.shape[0] * self.scale or gt.shape[1] != lq.shape[1] * self.scale:
            raise DataError(f"size mismatch: GT '{gt_path}' is {gt.shape[1]}x{gt.shape[0]}, LQ '{lq_path}' is "
                             f"{lq.shape[1]}x{lq.shape[0]} (scale {self.scale})")
        gt, lq = random_flip_rot([gt, lq], rng, self.use_flip, self.use_rot)
        return {"lq": img2tensor(lq), "gt": img2tensor(gt), "lq_path": lq_path, "gt_path": gt_path, "name": lq_name}


@DATASETS.register()
class SyntheticPairDataset(Dataset):
    """GT-only folder; the LQ is synthesised per sample by a registered degradation, seeded by the
    sample's seed (so validation pairs are fixed and training pairs replayable)."""

    def __init__(self, dataroot_gt: str, degradation: Optional[component(DEGRADATIONS)] = None,
                 gt_size: Optional[PositiveInt] = None, use_flip: bool = False, use_rot: bool = False,
                 io_backend: Literal["disk", "lmdb", "skimage"] = "disk"):
        self.gt = _ImageFolderSource(dataroot_gt, io_backend, "gt")
        self.names = list(self.gt.items)
        self.degrade = DEGRADATIONS.build(degradation, "degradation") if degradation else None
        self.gt_size, self.use_flip, self.use_rot = gt_size, use_flip, use_rot

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key) -> dict:
        index, seed = _split_key(key)
        name = self.names[index]
        gt = self.gt.read(name)
        rng = sample_rng(seed, AUGMENT)
        if self.gt_size is not None:
            gt, _ = paired_random_crop(gt, gt, self.gt_size, 1, rng, self.gt.items[name])
        (gt,) = random_flip_rot([gt], rng, self.use_flip, self.use_rot)
        path = self.gt.items[name]
        item = {"gt": img2tensor(gt), "lq_path": path, "gt_path": path, "name": name}
        if self.degrade is None:   # LQ made later by a batch degradation
            return {"lq": item["gt"], **item}
        lq, params = self.degrade(gt, sample_rng(seed, DEGRADATION))
        return {"lq": img2tensor(lq), **item, "degradation": {k: torch.tensor(v) for k, v in params.items()}}


@DATASETS.register()
class SingleImageDataset(Dataset):
    """LQ images only, for inference."""

    def __init__(self, dataroot_lq: str, io_backend: Literal["disk", "lmdb", "skimage"] = "disk"):
        self.lq = _ImageFolderSource(dataroot_lq, io_backend, "lq")
        self.names = list(self.lq.items)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key) -> dict:
        index, _ = _split_key(key)
        name = self.names[index]
        return {"lq": img2tensor(self.lq.read(name)), "lq_path": self.lq.items[name], "name": name}


class WithDegradationParams(Dataset):
    """Adds ``degradation_params = draw(seed)`` to each item of ``dataset``: the per-sample random
    choices of a batch degradation, drawn in the loader workers from the sample's seed."""

    def __init__(self, dataset: Dataset, draw):
        self.dataset, self.draw = dataset, draw

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        _, seed = _split_key(key)
        return {**self.dataset[key], "degradation_params": self.draw(seed)}
