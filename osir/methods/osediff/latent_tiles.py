"""OSEDiff's latent tiling of the UNet as the release's test code runs it (read in its
``OSEDiff_test.forward`` and ``_gaussian_weights``), written here because osir's pixel tiling
(``osir.inference.tiling``) cuts and blends differently (ramps, tiles cut short at the end).

* A latent of h x w is run whole when h * w <= tile^2 (an area rule: 128 x 64 latents stay whole);
  otherwise square tiles of side T = min(tile, h, w) start at k (T - overlap) along each axis, the
  last one flush with the end (at length - T).
* The noise predictions are averaged with Gaussian weights (variance 0.01 in units of the tile side):
  column x of a tile weighs exp(-(x - (T - 1) / 2)^2 / (2 * 0.01 T^2)) and row y
  exp(-(y - T / 2)^2 / (2 * 0.01 T^2)); the release centres the rows at T / 2, half a latent off the
  columns' centre, and osir keeps that.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

VARIANCE = 0.01


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: 0, T - overlap, 2 (T - overlap), ... while the tile ends before
    ``length``, then ``length - tile``."""
    stride = tile - overlap
    count = 1 + max(0, math.ceil((length - tile) / stride))
    return [k * stride for k in range(count - 1)] + [length - tile]


def gaussian_weights(tile: int, variance: float = VARIANCE) -> torch.Tensor:
    """The tile x tile blending weights (rows centred at T / 2, columns at (T - 1) / 2), float64."""
    index = torch.arange(tile, dtype=torch.float64)
    rows = torch.exp(-(index - tile / 2) ** 2 / tile ** 2 / (2 * variance))
    cols = torch.exp(-(index - (tile - 1) / 2) ** 2 / tile ** 2 / (2 * variance))
    return rows[:, None] * cols[None, :]


def predict_tiled(predict: Callable[[torch.Tensor], torch.Tensor], latent: torch.Tensor, tile: int,
                  overlap: int) -> torch.Tensor:
    """``predict`` (B x C x h x w -> same) on the whole latent or, above tile^2 latents, on Gaussian-
    weighted square tiles.  An overlap of at least the tile side (possible only when h or w < overlap)
    is reduced to side - 1, where the release would loop forever."""
    h, w = latent.shape[-2:]
    if h * w <= tile * tile:
        return predict(latent)
    side = min(tile, h, w)
    overlap = min(overlap, side - 1)
    weights = gaussian_weights(side).to(latent.device, torch.float32)
    out = total = None
    for y in starts(h, side, overlap):
        for x in starts(w, side, overlap):
            pred = predict(latent[..., y:y + side, x:x + side]).float()
            if out is None:
                out = torch.zeros(*pred.shape[:2], h, w, device=pred.device)
                total = torch.zeros(h, w, device=pred.device)
            out[..., y:y + side, x:x + side] += pred * weights
            total[y:y + side, x:x + side] += weights
    return out / total
