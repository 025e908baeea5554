"""Spatial-entropy loss of Lian, Lian & Luo, "Equipping Diffusion Models with Differentiable Spatial
Entropy for Low-Light Image Enhancement" (CVPR-W NTIRE 2024, arXiv:2404.09735).

Written by hand from the paper's definition: no library provides a differentiable spatial (2-D,
intensity x neighbourhood-mean) entropy, and the authors' code is not used (see the differences
below).  What is implemented, per image and per channel:

1. Bins.  ``L`` bins per axis with centres ``c_k = k / (L - 1)``, ``k = 0 .. L-1`` (both ends of
   [0, 1] are centres).  Intensities are clamped to [0, 1].
2. Neighbourhood mean (the second variable of the 2-D entropy) for a window ``w`` (odd):
   ``m = x`` for ``w = 1``; for ``w >= 3`` the box mean of the ``w*w - 1`` neighbours (the centre
   pixel excluded), with *replicate* padding at the border (chosen over reflect because it works for
   any image size, where reflect needs ``H, W > w // 2``).
3. Kernel (the paper's KDE with the logistic kernel, i.e. the derivative of the sigmoid):
   ``K(u) = s(u) (1 - s(u)) = 1 / (4 cosh^2(u / 2))`` with ``u = ((L - 1) x - k) / h``.  The
   bandwidth ``h`` is in units of the bin spacing ``1 / (L - 1)``: the paper (and its code) scale the
   image to [0, L - 1] and put the kernel centres on the integers, so the published ``h = 0.5`` is half
   a bin (``0.5 / 31 ~ 0.016`` in intensity for ``L = 32``).
4. Per-pixel normalisation: pixel ``n`` puts the weights ``a_nk = K(u_nk) / sum_j K(u_nj)`` on the
   intensity bins and ``b_nk`` (the same for its neighbourhood mean) on the mean bins, so each pixel's
   joint weights ``a_ni b_nj`` sum to exactly 1.  Computed as ``e / (1 + e)^2``, ``e = exp(-|u|)``,
   divided by its sum while ``h >= 1/80`` (the nearest centre has ``|u| <= 40``, so the sum cannot
   underflow), else as a softmax of ``log K(u) = -softplus(u) - softplus(-u)`` (any bandwidth).
5. Joint histogram (the KDE of ``p(i, j)``, normalised to a probability distribution):
   ``P_ij = (1/N) sum_n a_ni b_nj``, i.e. ``P = A^T B / N`` over the ``N = H W`` pixels.  It is
   accumulated over chunks of pixels by a custom autograd function whose backward recomputes the
   weights chunk by chunk (``dL/dA = B G^T / N``, ``dL/dB = A G / N`` with ``G = dL/dP``, then the
   softmax and ``d log K / du = -tanh(u / 2)``), so memory is linear in ``H W`` and ``L`` (at most
   ``chunk_pixels x L`` floats per temporary) instead of the direct form's ``L^2 H W`` per channel.
6. Distance between the prediction's histogram ``p`` and the target's ``q``, after smoothing both
   to ``p' = (p + eps) / (1 + L^2 eps)`` (``eps = 1e-8``: still distributions, no bin exactly 0):
   Hellinger ``H(p', q') = sqrt(1/2 sum (sqrt p' - sqrt q')^2)`` (the outer square root evaluated as
   ``sqrt(H^2 + 1e-12) - 1e-6``, exactly 0 for equal histograms and with a finite gradient there), or
   relative entropy ``KL(q' || p') = sum q' log(q' / p')`` (target as the reference distribution, as
   in the published code).  The loss is the mean over windows (default 1, 3, 5), channels and batch.

Everything is computed in float32 with autocast disabled.

``variant: release`` is the published estimator instead (for reproducing the paper's training; the
release's low-light ``entropy-refusion.yml`` uses its Hellinger form with 32 bins and h = 0.5), written
from the formulas of ``kde_utils.py``, not copied.  Per image, channel and pixel ``n``, with ``t = (L - 1)
clamp(x, 0, 1)``:

* neighbour value ``m = conv(t, R)``: the 3x3 ring (centre weight 0) with zero padding, its weights
  normalised over the ring *and all C channels* together, i.e. the neighbour mean divided by C (kept as
  published: the released weights were trained with it);
* per-pixel 2-D density on the ``L x L`` bin centres ``(i, j)``: ``K2_ij = K((i - t) / h) K((j - m) / h)``
  with the published kernel ``K(v) = s(v) (1 - s(v))`` (``s`` the sigmoid, evaluated as published, so it
  underflows to 0 far from the bins), divided by ``0.5 h``, then averaged over a ``w x w`` box for each
  window ``w`` (default 1, 3, 5; zero padding, the padded area counted in the mean);
* distance per pixel between the prediction's density ``p`` and the target's ``q``: Hellinger
  ``(1 / sqrt 2) sqrt(sum_ij (sqrt p_ij - sqrt q_ij)^2)`` or the relative entropy
  ``sum_ij q_ij (log(q_ij + 1e-10) - log(p_ij + 1e-10))``; the loss is the mean over pixels, windows,
  channels and batch (the published reduction).

Its two defects are removed, and nothing else is changed: (1) the ring's weights are fixed (uniform:
the published code's ``random_weight=False`` path) instead of a fresh standard-normal 3x3 draw on every
call (the published loss is random: the same pair gives another value on every call); (2) every square
root of the Hellinger form takes its argument clamped to at least 1e-12, so the gradient is finite
where the published one is NaN (empty bins, identical pixels); values change by at most ~1e-6
(identical images give 1e-6 / sqrt 2, not 0).  The ``L^2`` densities are computed in chunks of
intensity bins under activation checkpointing (each chunk recomputed in backward), so memory stays at
one chunk (about ``max(chunk_pixels, B C H W) x L`` floats per temporary) instead of the published
``[B, L^2, C, H, 3 W]`` tensors.  Checked side by side against the published functions (run in a
scratch folder with its Hellinger crash fixed and fixed weights): equal to ~1e-7.

Differences of the default (``variant: osir``) from the published code (``shermanlian/spatial-entropy-loss``
at 247d96f, ``codes/config/low-light/models/modules/kde_utils.py`` and ``loss.py``, read, not copied; the
facts below measured by running its functions on skimage's astronaut at 64^2, float32 CPU):

* Its Hellinger distance (the one its training configuration uses) crashes: ``torch.sqrt`` is called
  on the Python int 2 (TypeError).
* With that fixed, its Hellinger loss has NaN gradients: its kernel ``s(v)(1 - s(v))`` is exactly 0 in
  float32 once ``1 - s(v)`` rounds to 0 (more than ~8.5 bins away at ``h = 0.5``), so most density
  bins are exactly 0 (62% of them, 57-69% per window) and ``sqrt`` has an infinite derivative there
  (0 * inf = NaN: every gradient entry was NaN).  Here no bin is 0 after smoothing and the kernel
  weights are computed without ``1 - s``.
* Its relative-entropy variant gave a finite value and gradient in that run (1.434 against the image
  plus N(0, 0.1^2) noise).  Here the smoothed distributions are strictly positive, so the value and
  the gradient are finite whatever the images.
* Its neighbourhood kernel is normalised over all channels at once, so the neighbourhood "mean" is
  divided by the channel count (a third of the mean for RGB).  Here it is the mean.
* It draws a fresh random 3x3 neighbour weight (standard normal, possibly negative; the paper's
  "random-weighted" neighbourhood) on every call, so the loss is not deterministic.  Here the
  neighbourhood mean is a deterministic box mean.
* Its per-pixel densities are divided by a constant (``0.5 h``, the 2-D kernel's integral ``h^2`` at
  ``h = 0.5``), not by the kernel mass on the bins; with mass falling outside [0, L - 1] and
  zero-padded windows they summed to 0.93 per pixel on average (0.95 / 0.93 / 0.91 for windows 1 / 3 /
  5), single pixels down to 0.34, instead of 1.  Here each pixel's weights sum to 1.
* Its windows 1, 3 and 5 aggregate the per-pixel densities over local windows (zero padded) with a
  fixed 3x3 neighbourhood, and the distance is taken per pixel and averaged; here, following the
  2-D-entropy definition, the windows set the neighbourhood of the mean and one histogram is
  estimated per image and channel.
* Its 3x3 neighbourhood uses zero padding (border means pulled towards 0); here replicate padding.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from osir.core.registry import LOSSES

DISTANCES = ("hellinger", "kl")
VARIANTS = ("osir", "release")
EPS = 1e-8                 # histogram smoothing (both distances)
_SQRT_EPS = 1e-12          # inside the Hellinger distance's outer square root
_RELEASE_SQRT_MIN = 1e-12  # variant release: every square root's argument clamped to at least this
_RELEASE_LOG_EPS = 1e-10   # variant release: the published constant inside the relative entropy's logs


# ----------------------------------------------------------------------------- arguments
def _check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins: must be an integer >= 2 (e.g. 32); got {bins!r}")
    return bins


def _check_bandwidth(bandwidth) -> float:
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not bandwidth > 0 \
            or not math.isfinite(bandwidth):
        raise ValueError(f"bandwidth: must be a finite number > 0 (in bin units, e.g. 0.5); got {bandwidth!r}")
    return float(bandwidth)


def _check_window(window, name: str = "window") -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"{name}: window sizes must be odd positive integers (1, 3, 5, ...); got {window!r}")
    return window


def _check_chunk(chunk_pixels) -> int:
    if isinstance(chunk_pixels, bool) or not isinstance(chunk_pixels, int) or chunk_pixels < 1:
        raise ValueError(f"chunk_pixels: must be an integer >= 1; got {chunk_pixels!r}")
    return chunk_pixels


def _check_image(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a B x C x H x W tensor; got {shape}")
    if not (x.is_floating_point()):
        raise ValueError(f"{name}: expected a floating-point tensor; got {x.dtype}")


# ----------------------------------------------------------------------------- pieces
def log_kernel(u: torch.Tensor) -> torch.Tensor:
    """log of the logistic kernel ``s(u)(1 - s(u))``, stable for any ``u``."""
    return -(F.softplus(u) + F.softplus(-u))


def kernel_weights(x: torch.Tensor, bins: int = 32, bandwidth: float = 0.5) -> torch.Tensor:
    """Each value's normalised kernel weights on the ``bins`` bin centres: ``x.shape + (bins,)``,
    summing to 1 over the last axis.  ``x`` in [0, 1] (clamped)."""
    bins, h = _check_bins(bins), _check_bandwidth(bandwidth)
    pos = x.float().clamp(0, 1) * (bins - 1)
    return _weights(pos, torch.arange(bins, device=x.device, dtype=torch.float32), h)[0]


def _weights(pos: torch.Tensor, centres: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised kernel weights, u) for positions in bin units: ``pos.shape + (bins,)``."""
    u = (pos.unsqueeze(-1) - centres).div_(h)
    if h >= 1 / 80:
        # the nearest centre has |u| <= 0.5 / h <= 40, so exp(-|u|) cannot underflow there:
        # K = e / (1 + e)^2 with e = exp(-|u|), normalised by its sum (>= exp(-40) / 4)
        e = u.abs().neg_().exp_()
        k = e.div_((e + 1).square_())
        return k.div_(k.sum(-1, keepdim=True)), u
    return torch.softmax(log_kernel(u), dim=-1), u       # any bandwidth: in log space


def _position_grad(w: torch.Tensor, g: torch.Tensor, u: torch.Tensor, h: float) -> torch.Tensor:
    """d/d pos of sum(g * w) for w = softmax(log K(u)), u = (pos - c) / h, d log K / du = -tanh(u / 2):
    -(1/h) sum_k w_k (g_k - sum_j w_j g_j) tanh(u_k / 2)."""
    wt = torch.tanh(u.mul_(0.5)).mul_(w)                   # u is not needed afterwards
    mean_g = (w * g).sum(-1)
    return (mean_g * wt.sum(-1) - (wt.mul_(g)).sum(-1)) / h


def neighbourhood_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of the ``window**2 - 1`` neighbours of each pixel (replicate padding); ``x`` itself for
    ``window == 1``."""
    window = _check_window(window)
    if window == 1:
        return x
    r = window // 2
    box = F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), window, stride=1)
    n = window * window
    return (box * n - x) / (n - 1)


class _JointHistograms(torch.autograd.Function):
    """``P[w, m] = A[m]^T B_w[m] / N`` for intensity positions ``pos_x [M, N]`` and neighbourhood-mean
    positions ``pos_m [K, M, N]`` (bin units); ``layout[w]`` is the row of ``pos_m`` for window ``w``,
    or -1 where the mean is the pixel itself (``B_w = A``).  Chunked over pixels in forward and
    backward: the weights are recomputed, never stored."""

    @staticmethod
    def forward(ctx, pos_x, pos_m, layout: tuple, bins: int, h: float, chunk_pixels: int):
        m, n = pos_x.shape
        step = max(1, chunk_pixels // m)
        centres = torch.arange(bins, device=pos_x.device, dtype=pos_x.dtype)
        hist = pos_x.new_zeros(len(layout), m, bins, bins)
        for s in range(0, n, step):
            a = _weights(pos_x[:, s:s + step], centres, h)[0]
            at = a.transpose(1, 2)
            bs = [_weights(pos_m[k, :, s:s + step], centres, h)[0] for k in range(pos_m.shape[0])]
            for w, k in enumerate(layout):
                hist[w].baddbmm_(at, a if k < 0 else bs[k])
        ctx.save_for_backward(pos_x, pos_m)
        ctx.layout, ctx.bins, ctx.h, ctx.step = layout, bins, h, step
        return hist / n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        pos_x, pos_m = ctx.saved_tensors
        need_x, need_m = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(pos_x) if need_x else None
        grad_m = torch.zeros_like(pos_m) if need_m else None
        if not (need_x or need_m):
            return None, None, None, None, None, None
        with torch.autocast(device_type=pos_x.device.type, enabled=False):    # backward may run under autocast
            _histogram_backward(ctx, grad, pos_x, pos_m, grad_x, grad_m, need_x, need_m)
        return grad_x, grad_m, None, None, None, None


def _histogram_backward(ctx, grad, pos_x, pos_m, grad_x, grad_m, need_x, need_m) -> None:
    """Fills ``grad_x`` / ``grad_m`` for ``_JointHistograms`` chunk by chunk."""
    n, h, step, layout = pos_x.shape[1], ctx.h, ctx.step, ctx.layout
    g = grad.to(pos_x.dtype) / n                                    # [W, M, L(x), L(mean)]
    g_self = {w: g[w] + g[w].transpose(1, 2) for w, k in enumerate(layout) if k < 0}
    centres = torch.arange(ctx.bins, device=pos_x.device, dtype=pos_x.dtype)
    for s in range(0, n, step):
        a, ua = _weights(pos_x[:, s:s + step], centres, h)
        ga = torch.zeros_like(a)
        for k in range(pos_m.shape[0]):
            b, ub = _weights(pos_m[k, :, s:s + step], centres, h)
            gb = torch.zeros_like(b) if need_m else None
            for w in (w for w, kk in enumerate(layout) if kk == k):
                if need_x:
                    ga.baddbmm_(b, g[w].transpose(1, 2))                # dP/dA = B G^T
                if need_m:
                    gb.baddbmm_(a, g[w])                                # dP/dB = A G
            if need_m:
                grad_m[k, :, s:s + step] = _position_grad(b, gb, ub, h)
        if need_x:
            for w, gs in g_self.items():                                # P = A^T A: A (G + G^T)
                ga.baddbmm_(a, gs)
            grad_x[:, s:s + step] = _position_grad(a, ga, ua, h)


def spatial_histograms(x: torch.Tensor, bins: int = 32, bandwidth: float = 0.5, windows=(1, 3, 5),
                       chunk_pixels: int = 65536) -> torch.Tensor:
    """``spatial_histogram`` for several windows at once (the intensity weights are shared):
    ``B x C x len(windows) x bins x bins``."""
    _check_image(x)
    bins, h, chunk_pixels = _check_bins(bins), _check_bandwidth(bandwidth), _check_chunk(chunk_pixels)
    windows = tuple(_check_window(w, "windows") for w in windows)
    if not windows:
        raise ValueError("windows: expected at least one odd window size (e.g. [1, 3, 5])")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float().clamp(0, 1)
        bsz, c, height, width = x.shape
        distinct = sorted({w for w in windows if w > 1})
        layout = tuple(-1 if w == 1 else distinct.index(w) for w in windows)
        pos_x = (x * (bins - 1)).reshape(bsz * c, height * width)
        if distinct:
            pos_m = torch.stack([(neighbourhood_mean(x, w) * (bins - 1)).reshape(bsz * c, height * width)
                                 for w in distinct])
        else:
            pos_m = pos_x.new_zeros(0, bsz * c, height * width)
        hist = _JointHistograms.apply(pos_x, pos_m, layout, bins, h, chunk_pixels)
    return hist.view(len(windows), bsz, c, bins, bins).permute(1, 2, 0, 3, 4)


def spatial_histogram(x: torch.Tensor, bins: int = 32, bandwidth: float = 0.5, window: int = 1,
                      chunk_pixels: int = 65536) -> torch.Tensor:
    """Normalised joint KDE histograms of (intensity, neighbourhood mean): ``B x C x bins x bins``
    (intensity bin first), each summing to 1.  ``x``: ``B x C x H x W`` in [0, 1] (clamped).
    Memory is linear in ``H W`` and ``bins``; float32 whatever the input dtype or autocast."""
    return spatial_histograms(x, bins, bandwidth, (_check_window(window),), chunk_pixels)[:, :, 0]


def spatial_histogram_reference(x: torch.Tensor, bins: int = 32, bandwidth: float = 0.5,
                                window: int = 1) -> torch.Tensor:
    """The direct form, for tests only: materialises the ``B x C x bins x bins x H x W`` tensor of
    every pixel's joint kernel weights (plain autograd, kernel ``e^-|u| / (1 + e^-|u|)^2`` normalised
    by division, neighbourhood mean by explicit shifts)."""
    _check_image(x)
    bins, h, window = _check_bins(bins), _check_bandwidth(bandwidth), _check_window(window)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float().clamp(0, 1) if x.dtype != torch.float64 else x.clamp(0, 1)
        height, width = x.shape[-2:]
        if window == 1:
            mean = x
        else:
            r = window // 2
            padded = F.pad(x, (r, r, r, r), mode="replicate")
            total = torch.zeros_like(x)
            for dy in range(window):
                for dx in range(window):
                    if dy != r or dx != r:
                        total = total + padded[..., dy:dy + height, dx:dx + width]
            mean = total / (window * window - 1)
        centres = torch.arange(bins, device=x.device, dtype=x.dtype).view(-1, 1, 1)

        def weights(v):                                  # B x C x L x H x W
            u = (v.unsqueeze(2) * (bins - 1) - centres) / h
            k = torch.exp(-u.abs()) / (1 + torch.exp(-u.abs())) ** 2
            return k / k.sum(2, keepdim=True)

        joint = torch.einsum("bcihw,bcjhw->bcijhw", weights(x), weights(mean))
        return joint.mean(dim=(-2, -1))


def smooth(p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``(p + eps) / (1 + bins^2 eps)``: a distribution with no empty bin."""
    return (p + eps) / (1 + eps * p.shape[-1] * p.shape[-2])


def hellinger_distance(p: torch.Tensor, q: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Hellinger distance between ``... x L x L`` histograms (smoothed by ``eps``), finite gradient
    everywhere (0 for equal histograms)."""
    h2 = 0.5 * (smooth(p, eps).sqrt() - smooth(q, eps).sqrt()).pow(2).sum(dim=(-2, -1))
    tiny = torch.tensor(_SQRT_EPS, dtype=h2.dtype, device=h2.device)
    return (h2.clamp_min(0) + tiny).sqrt() - tiny.sqrt()


def relative_entropy(p: torch.Tensor, q: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``KL(q || p)`` between ``... x L x L`` histograms (smoothed by ``eps``); ``q`` is the target."""
    ps, qs = smooth(p, eps), smooth(q, eps)
    return (qs * (qs.log() - ps.log())).sum(dim=(-2, -1))


# ----------------------------------------------------------------------------- variant: release
def release_neighbour(t: torch.Tensor) -> torch.Tensor:
    """The published neighbour value: the 3x3 ring (uniform, centre 0, zero padding) normalised over
    the ring and all ``C`` channels together, i.e. the neighbour mean divided by ``C``."""
    c = t.shape[1]
    ring = torch.ones(c, 1, 3, 3, dtype=t.dtype, device=t.device)
    ring[:, :, 1, 1] = 0
    return F.conv2d(t, ring / ring.sum(), padding=1, groups=c)


def _release_kernel(v: torch.Tensor) -> torch.Tensor:
    """The published kernel ``s(v) (1 - s(v))`` as published (it underflows to exactly 0)."""
    s = torch.sigmoid(v)
    return s * (1 - s)


def release_densities(x: torch.Tensor, bins: int = 32, bandwidth: float = 0.5, windows=(1, 3, 5),
                      first_bin: int = 0, last_bin: Optional[int] = None) -> torch.Tensor:
    """The published per-pixel 2-D densities for intensity bins ``first_bin .. last_bin - 1`` (all by
    default): ``B x C x len(windows) x k x bins x H x W`` (intensity bin, then neighbour bin)."""
    _check_image(x)
    bins, h = _check_bins(bins), _check_bandwidth(bandwidth)
    windows = tuple(_check_window(w, "windows") for w in windows)
    with torch.autocast(device_type=x.device.type, enabled=False):
        t = x.float().clamp(0, 1) * (bins - 1)
        return torch.stack(_release_chunk(t, release_neighbour(t), bins, h, windows, first_bin,
                                          bins if last_bin is None else last_bin), 2)


def _release_chunk(t, m, bins: int, h: float, windows: tuple, first: int, last: int) -> list[torch.Tensor]:
    """One ``B x C x k x L x H x W`` density tensor per window, for intensity bins ``first .. last - 1``."""
    b, c, height, width = t.shape
    ci = torch.arange(first, last, device=t.device, dtype=t.dtype).view(-1, 1, 1, 1)
    cj = torch.arange(bins, device=t.device, dtype=t.dtype).view(-1, 1, 1)
    kx = _release_kernel((ci - t.unsqueeze(2).unsqueeze(3)) / h)            # B C k 1 H W
    km = _release_kernel((cj - m.unsqueeze(2)) / h).unsqueeze(2)            # B C 1 L H W
    k2 = (kx * km).div_(0.5 * h).view(b, -1, height, width)
    return [(k2 if w == 1 else F.avg_pool2d(k2, w, stride=1, padding=w // 2, count_include_pad=True))
            .view(b, c, last - first, bins, height, width) for w in windows]


def _release_partial(t_p, m_p, t_q, m_q, bins: int, h: float, windows: tuple, first: int, last: int,
                     distance: str) -> torch.Tensor:
    """Sum over intensity bins ``first .. last - 1`` and all neighbour bins of the per-pixel distance
    terms: ``B x C x W x H x W``."""
    sums = []
    for p, q in zip(_release_chunk(t_p, m_p, bins, h, windows, first, last),
                    _release_chunk(t_q, m_q, bins, h, windows, first, last)):
        if distance == "hellinger":
            terms = (p.clamp_min(_RELEASE_SQRT_MIN).sqrt() - q.clamp_min(_RELEASE_SQRT_MIN).sqrt()).square()
        else:
            terms = q * ((q + _RELEASE_LOG_EPS).log() - (p + _RELEASE_LOG_EPS).log())
        sums.append(terms.sum((2, 3)))
    return torch.stack(sums, 2)


def release_loss(pred: torch.Tensor, target: torch.Tensor, bins: int = 32, bandwidth: float = 0.5,
                 windows=(1, 3, 5), distance: str = "hellinger", chunk_pixels: int = 65536) -> torch.Tensor:
    """The published spatial-entropy loss with fixed neighbour weights and clamped square roots (see
    the module docstring, ``variant: release``)."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        t_p = pred.float().clamp(0, 1) * (bins - 1)
        t_q = target.float().clamp(0, 1) * (bins - 1)
        m_p, m_q = release_neighbour(t_p), release_neighbour(t_q)
        step = max(1, chunk_pixels // t_p.numel())                      # intensity bins per chunk
        grad = torch.is_grad_enabled() and (pred.requires_grad or target.requires_grad)
        total = 0
        for first in range(0, bins, step):
            args = (t_p, m_p, t_q, m_q, bins, bandwidth, windows, first, min(bins, first + step), distance)
            total = total + (checkpoint(_release_partial, *args, use_reentrant=False) if grad
                             else _release_partial(*args))
        if distance == "hellinger":
            total = total.clamp_min(_RELEASE_SQRT_MIN).sqrt() / math.sqrt(2)
        return total.mean()


@LOSSES.register()
class SpatialEntropyLoss(torch.nn.Module):
    """Distance between the spatial (intensity x neighbourhood-mean) KDE histograms of prediction and
    target (Lian et al., CVPR-W 2024), averaged over windows, channels and batch.

        bins: bins per axis on [0, 1] (bin centres ``k / (bins - 1)``).
        bandwidth: logistic-kernel bandwidth in bin units (0.5 = half a bin, as published).
        windows: odd neighbourhood sizes for the neighbourhood mean (1 = the pixel itself).
        distance: ``hellinger`` or ``kl`` (relative entropy of the target from the prediction).
        chunk_pixels: pixels (over batch x channels) expanded to bins at once; bounds the memory.
        eps: histogram smoothing before the distance (variant osir).
        variant: ``osir`` (one normalised joint histogram per image and channel, the default) or
            ``release`` (the published per-pixel estimator, its two defects removed: fixed neighbour
            weights, clamped square roots; ``windows`` are then its box sizes; see the module docstring).
    """

    def __init__(self, bins: int = 32, bandwidth: float = 0.5, windows: Sequence[int] = (1, 3, 5),
                 distance: Literal["hellinger", "kl"] = "hellinger", chunk_pixels: int = 65536,
                 eps: float = EPS, variant: Literal["osir", "release"] = "osir"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant: {variant!r} is not one of {', '.join(map(repr, VARIANTS))}")
        self.variant = variant
        self.bins, self.bandwidth = _check_bins(bins), _check_bandwidth(bandwidth)
        if isinstance(windows, int) or not isinstance(windows, Sequence) or len(windows) == 0:
            raise ValueError(f"windows: expected a non-empty list of odd window sizes (e.g. [1, 3, 5]); "
                             f"got {windows!r}")
        self.windows = tuple(_check_window(w, "windows") for w in windows)
        if distance not in DISTANCES:
            raise ValueError(f"distance: {distance!r} is not one of {', '.join(map(repr, DISTANCES))}")
        self.distance = distance
        self.chunk_pixels = _check_chunk(chunk_pixels)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"eps: must be a number in (0, 1) (e.g. 1e-8); got {eps!r}")
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return (f"bins={self.bins}, bandwidth={self.bandwidth}, windows={self.windows}, "
                f"distance={self.distance!r}, variant={self.variant!r}")

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_image(pred, "pred")
        _check_image(target, "target")
        if pred.shape != target.shape:
            raise ValueError(f"pred and target: shapes differ ({tuple(pred.shape)} vs {tuple(target.shape)})")
        if self.variant == "release":
            return release_loss(pred, target, self.bins, self.bandwidth, self.windows, self.distance,
                                self.chunk_pixels)
        fn = hellinger_distance if self.distance == "hellinger" else relative_entropy
        with torch.autocast(device_type=pred.device.type, enabled=False):
            p = spatial_histograms(pred, self.bins, self.bandwidth, self.windows, self.chunk_pixels)
            q = spatial_histograms(target, self.bins, self.bandwidth, self.windows, self.chunk_pixels)
            return fn(p, q, self.eps).mean()
