"""Tiled restoration for images larger than memory allows.

Written here because no dependency offers a method-agnostic version: the LQ is cut into
overlapping tiles (multiples of the method's size multiple), each is restored independently,
and the outputs are blended with weights that ramp linearly across the overlap, so seams vanish
and a constant image stays constant.
"""
from __future__ import annotations

from typing import Callable

import torch


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool, device) -> torch.Tensor:
    w = torch.ones(length, device=device)
    ramp = torch.linspace(0, 1, overlap + 2, device=device)[1:-1] if overlap > 0 else None
    if ramp is not None and not at_start:
        w[:overlap] = ramp
    if ramp is not None and not at_end:
        w[-overlap:] = ramp.flip(0)
    return w


def restore_tiled(restore: Callable[[torch.Tensor], torch.Tensor], lq: torch.Tensor, tile: int | None,
                  overlap: int = 32, scale: int = 1, multiple: int = 1) -> torch.Tensor:
    """Restore ``lq`` (B x C x H x W) with ``restore`` on tiles of ``tile`` pixels overlapping by
    ``overlap``; the whole image at once when ``tile`` is None or the image fits."""
    b, c, h, w = lq.shape
    if tile is None or (h <= tile and w <= tile):
        return restore(lq)
    tile = max(multiple, tile // multiple * multiple)
    overlap = min(overlap, tile // 2)
    stride = tile - overlap
    out = weight = None
    ys, xs = _starts(h, tile, stride), _starts(w, tile, stride)
    for y in ys:
        for x in xs:
            patch = lq[..., y:y + tile, x:x + tile]
            res = restore(patch)
            if out is None:
                out = torch.zeros(b, res.shape[1], h * scale, w * scale, device=res.device, dtype=res.dtype)
                weight = torch.zeros(1, 1, h * scale, w * scale, device=res.device, dtype=res.dtype)
            ph, pw = patch.shape[-2:]
            wy = _ramp(ph * scale, overlap * scale, y == ys[0], y == ys[-1], res.device)
            wx = _ramp(pw * scale, overlap * scale, x == xs[0], x == xs[-1], res.device)
            mask = (wy[:, None] * wx[None, :]).to(res.dtype)
            ys_, xs_ = slice(y * scale, (y + ph) * scale), slice(x * scale, (x + pw) * scale)
            out[..., ys_, xs_] += res * mask
            weight[..., ys_, xs_] += mask
    return out / weight
