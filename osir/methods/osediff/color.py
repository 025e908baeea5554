"""Colour correction of OSEDiff's outputs against the (upsampled) LQ, as the paper's code does after
decoding (its default: AdaIN).  Written here from the equations; a few lines of torch each.

* AdaIN (Huang & Belongie 2017, Eq. 8): each channel of the output gets the LQ's mean and standard
  deviation, out' = sigma_lq (out - mu_out) / sigma_out + mu_lq.
* Wavelet: an a-trous decomposition (5 levels of a 3x3 binomial blur with dilation 2^i, replicate
  padding) splits an image into its low-frequency residual and high-frequency details; the output
  keeps its details and takes the LQ's low frequencies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def adain(out: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel mean/std of ``out`` matched to ``lq``'s (B x C x H x W)."""
    o = out.flatten(2)
    r = lq.flatten(2)
    o_mean, o_std = o.mean(-1, keepdim=True), (o.var(-1, keepdim=True) + EPS).sqrt()
    r_mean, r_std = r.mean(-1, keepdim=True), (r.var(-1, keepdim=True) + EPS).sqrt()
    return ((o - o_mean) / o_std * r_std + r_mean).view_as(out)


def _binomial_blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    kernel = (k[:, None] * k[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (dilation,) * 4, mode="replicate"), kernel, groups=x.shape[1], dilation=dilation)


def wavelet_split(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high-frequency details, low-frequency residual); they sum to ``x``.  The details are summed
    level by level, as the release computes them: the same float rounding, which matters once the
    result is truncated to 8 bits."""
    low, high = x, torch.zeros_like(x)
    for i in range(levels):
        blurred = _binomial_blur(low, 2 ** i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet(out: torch.Tensor, lq: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """``out``'s details on ``lq``'s low frequencies."""
    return wavelet_split(out, levels)[0] + wavelet_split(lq, levels)[1]


def correct_colour(out: torch.Tensor, lq: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "adain":
        return adain(out, lq)
    if mode == "wavelet":
        return wavelet(out, lq)
    if mode == "none":
        return out
    raise ValueError(f"colour correction must be adain, wavelet or none, got '{mode}'")
