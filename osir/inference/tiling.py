"""Padding to a method's size contract and tiled restoration for images larger than memory allows.

Written here because no dependency offers a method-agnostic version.  ``restore_image`` pads the
batch's LQ (and every tensor of the LQ's size, such as masks) to the method's ``size_multiple`` and
``min_size``, restores, and crops the output back to ``scale`` x the input size.  Large images are
cut into overlapping tiles (multiples of the size multiple), each padded and restored
independently, and the outputs blended with weights that are 0 for the first quarter of each
overlap (a tile's own border effects) and then ramp linearly: a network whose receptive radius is
at most overlap / 4 gives the whole-image output, larger ones leave faint seams, and a constant
image stays constant.  Methods that tile internally (latent / VAE tiles)
declare ``tiles_internally`` and get the whole image.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def _spatial_keys(batch: dict) -> list[str]:
    size = batch["lq"].shape[-2:]
    return [k for k, v in batch.items() if torch.is_tensor(v) and v.ndim >= 3 and v.shape[-2:] == size]


def pad_batch(batch: dict, multiple: int = 1, min_size: int = 1, mode: str = "reflect") -> dict:
    """Pad the LQ-sized tensors of ``batch`` at the bottom/right to a multiple of ``multiple`` and at
    least ``min_size``; 'reflect' falls back to 'replicate' where the image is too small for it.
    ``lq_size`` holds the unpadded (h, w), for methods that must see the content only (e.g. a prompt
    extractor reading the whole image)."""
    h, w = batch["lq"].shape[-2:]
    th = max(-(-h // multiple) * multiple, -(-min_size // multiple) * multiple)
    tw = max(-(-w // multiple) * multiple, -(-min_size // multiple) * multiple)
    if (th, tw) == (h, w):
        return batch
    pad_mode = "replicate" if mode == "reflect" and (th - h >= h or tw - w >= w) else mode
    out = dict(batch)
    for key in _spatial_keys(batch):
        value = batch[key]
        flat = value.reshape(-1, *value.shape[-3:]) if value.ndim != 4 else value
        padded = F.pad(flat.float() if flat.dtype not in (torch.float32, torch.float64) else flat,
                       (0, tw - w, 0, th - h), mode=pad_mode).to(value.dtype)
        out[key] = padded.reshape(*value.shape[:-2], th, tw)
    out["lq_size"] = batch.get("lq_size", (h, w))
    return out


def restore_padded(restore: Callable[[dict], torch.Tensor], batch: dict, scale: int = 1, multiple: int = 1,
                   min_size: int = 1, mode: str = "reflect") -> torch.Tensor:
    """``restore`` on the padded batch, cropped back to ``scale`` x the input size."""
    h, w = batch["lq"].shape[-2:]
    out = restore(pad_batch(batch, multiple, min_size, mode))
    return out[..., : h * scale, : w * scale]


def _starts(length: int, tile: int, stride: int, multiple: int = 1) -> list[int]:
    """Tile starts, all multiples of ``multiple`` (so every tile keeps the image's downsampling grid);
    the last tile is cut short by the image's end (and padded by ``restore_padded``)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    last = -(-(length - tile) // multiple) * multiple
    return starts + ([last] if last > starts[-1] else [])


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool, device) -> torch.Tensor:
    """1 inside the tile; across an overlap with a neighbour: 0 for the first overlap // 4 pixels
    (where the tile's own border effects live), then a linear ramp, then 1."""
    w = torch.ones(length, device=device)
    if overlap <= 0:
        return w
    margin = overlap // 4
    edge = torch.ones(overlap, device=device)
    edge[:margin] = 0
    edge[margin:overlap - margin] = torch.linspace(0, 1, overlap - 2 * margin + 2, device=device)[1:-1]
    if not at_start:
        w[:overlap] = edge
    if not at_end:
        w[-overlap:] = torch.minimum(w[-overlap:], edge.flip(0))
    return w


def restore_tiled(restore: Callable[[dict], torch.Tensor], batch: dict | torch.Tensor, tile: int | None,
                  overlap: int = 32, scale: int = 1, multiple: int = 1) -> torch.Tensor:
    """Restore ``batch['lq']`` (B x C x H x W) with ``restore`` on tiles of ``tile`` pixels overlapping
    by ``overlap`` (every LQ-sized tensor of the batch is cut the same way; other entries pass
    through); the whole image at once when ``tile`` is None or the image fits.  A tensor stands for
    ``{'lq': tensor}``, and ``restore`` then takes tensors."""
    if torch.is_tensor(batch):
        fn = restore
        return restore_tiled(lambda b: fn(b["lq"]), {"lq": batch}, tile, overlap, scale, multiple)
    lq = batch["lq"]
    b, c, h, w = lq.shape
    if tile is None or (h <= tile and w <= tile):
        return restore(batch)
    tile = max(multiple, tile // multiple * multiple)
    overlap = min(-(-overlap // multiple) * multiple, tile // 2 // multiple * multiple)   # a multiple too
    stride = tile - overlap
    keys = _spatial_keys(batch)
    out = weight = None
    ys, xs = _starts(h, tile, stride, multiple), _starts(w, tile, stride, multiple)
    for y in ys:
        for x in xs:
            part = {**batch, **{k: batch[k][..., y:y + tile, x:x + tile] for k in keys}}
            res = restore(part)
            if out is None:
                out = torch.zeros(b, res.shape[1], h * scale, w * scale, device=res.device, dtype=res.dtype)
                weight = torch.zeros(1, 1, h * scale, w * scale, device=res.device, dtype=res.dtype)
            ph, pw = part["lq"].shape[-2:]
            wy = _ramp(ph * scale, overlap * scale, y == ys[0], y == ys[-1], res.device)
            wx = _ramp(pw * scale, overlap * scale, x == xs[0], x == xs[-1], res.device)
            mask = (wy[:, None] * wx[None, :]).to(res.dtype)
            ys_, xs_ = slice(y * scale, (y + ph) * scale), slice(x * scale, (x + pw) * scale)
            out[..., ys_, xs_] += res * mask
            weight[..., ys_, xs_] += mask
    return out / weight


def restore_image(method, batch: dict, tile: int | None = None, overlap: int = 32,
                  generator: torch.Generator | None = None, **settings) -> torch.Tensor:
    """Restore a batch with ``method`` under its size contract: padded to its multiple, tiled in
    pixel space when ``tile`` is set and the method does not tile internally; the method's
    ``whole_image_inputs`` are computed first, from the whole image, and reach every tile.
    ``settings``: per-call sampling settings (``sampler``, ``steps``) handed to ``method.restore``; those
    that are None are left out, so feed-forward methods never see them."""
    batch = {**batch, **method.whole_image_inputs(batch)}
    settings = {k: v for k, v in settings.items() if v is not None}
    size = method.size_requirements

    def padded(part: dict) -> torch.Tensor:
        return restore_padded(lambda b: method.restore(b, generator=generator, **settings), part, method.scale,
                              size.multiple_of, size.minimum, method.pad_mode)
    if method.tiles_internally:
        return padded(batch)
    return restore_tiled(padded, batch, tile, overlap, method.scale, size.multiple_of)
