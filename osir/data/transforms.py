"""Paired random crops and flips/rotations, driven by a numpy Generator so that every
sample's augmentation is a function of its seed.  basicsr's ``paired_random_crop``/``augment``
draw from Python's global ``random`` (not replayable per sample) and refuse images smaller than
the patch, which is why these few lines are written here."""
from __future__ import annotations

import numpy as np

from osir.data.io import DataError


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Mirror-pad HxWxC at the bottom/right so both sides are at least ``size`` (reflect, or
    symmetric when the padding is as large as the image); a no-op if already large."""
    h, w = img.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return img
    mode = "reflect" if ph < h and pw < w else "symmetric"
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode=mode)


def paired_random_crop(gt: np.ndarray, lq: np.ndarray, gt_size: int, scale: int,
                       rng: np.random.Generator, gt_name: str = "gt") -> tuple[np.ndarray, np.ndarray]:
    """Crop a ``gt_size`` GT patch and the matching ``gt_size/scale`` LQ patch.

    Images smaller than the patch are reflect-padded (GT and LQ consistently) first."""
    if gt_size % scale:
        raise DataError(f"gt_size {gt_size} is not a multiple of scale {scale}")
    lq_size = gt_size // scale
    lq = pad_to(lq, lq_size)
    gt = pad_to(gt, gt_size)
    h, w = lq.shape[:2]
    if gt.shape[0] != h * scale or gt.shape[1] != w * scale:
        raise DataError(f"'{gt_name}': GT {gt.shape[1]}x{gt.shape[0]} is not {scale}x the LQ {w}x{h}")
    top = int(rng.integers(0, h - lq_size + 1))
    left = int(rng.integers(0, w - lq_size + 1))
    lq = lq[top:top + lq_size, left:left + lq_size]
    gt = gt[top * scale:(top + lq_size) * scale, left * scale:(left + lq_size) * scale]
    return gt, lq


def random_flip_rot(imgs: list[np.ndarray], rng: np.random.Generator, flip: bool = True,
                    rot: bool = True) -> list[np.ndarray]:
    """Apply the same random horizontal/vertical flip and 90-degree transpose to every image."""
    hflip = flip and rng.random() < 0.5
    vflip = rot and rng.random() < 0.5
    transpose = rot and rng.random() < 0.5
    out = []
    for img in imgs:
        if hflip:
            img = img[:, ::-1]
        if vflip:
            img = img[::-1]
        if transpose:
            img = img.transpose(1, 0, 2)
        out.append(np.ascontiguousarray(img))
    return out
