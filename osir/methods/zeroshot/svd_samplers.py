"""Zero-shot samplers that work in the spectral space of a linear operator: DDRM and DDNM+.

**DDRM** (Kawar, Elad, Ermon & Song, "Denoising Diffusion Restoration Models", NeurIPS 2022, Sec. 3.2-3.3).  With
A = U Sigma V^T, the sampler runs in the variance-exploding form x_t / sqrt(abar_t) = x_0 + sigma_t e,
sigma_t = sqrt((1 - abar_t) / abar_t), on the spectral coordinates xbar = V^T x and ybar_i = (U^T y)_i / s_i
(whose noise has std sigma_y / s_i).  Coordinate by coordinate:

* Eq. 7, the start at the largest step T: xbar_T^(i) ~ N(ybar_i, sigma_T^2 - sigma_y^2 / s_i^2) where
  sigma_T > sigma_y / s_i, N(0, sigma_T^2) where s_i = 0 (and, as in the release, where sigma_T <= sigma_y / s_i);
* Eq. 8, every step t -> t' (sigma' = sigma_t', xbar_theta = V^T x0_hat, x0_hat = Tweedie's estimate):
  - s_i = 0 (unobserved): N(xbar_theta + sqrt(1 - eta^2) sigma' (xbar_t - xbar_theta) / sigma_t, eta^2 sigma'^2);
  - sigma' < sigma_y / s_i (less noisy than y): N(xbar_theta + sqrt(1 - eta^2) sigma' (ybar - xbar_theta) /
    (sigma_y / s_i), eta^2 sigma'^2);
  - sigma' >= sigma_y / s_i: N((1 - eta_b) xbar_theta + eta_b ybar, sigma'^2 - eta_b^2 sigma_y^2 / s_i^2).
  After the last network call sigma' = 0 (abar = 1): with sigma_y = 0 the observed coordinates end at ybar exactly
  (the paper's ">=": A x = y), the others at xbar_theta.  (The release tests ``s sigma' > sigma_y`` and
  ``s sigma' < sigma_y`` strictly, so at sigma' = sigma_y = 0 it returns the last x0 estimate unprojected;
  this follows the paper.)
* Defaults: eta = 0.85, eta_b = 1 (the settings of the paper's experiments, Sec. 5, and the defaults the
  release's README states: "ETA ... (default: 0.85)", "ETA_B ... (default: 1)"), 20 steps (the paper's
  DDRM-20, and every command of the release's README: ``--timesteps 20``).

**DDNM+** (Wang, Yu & Zhang, "Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model", ICLR 2023,
Alg. 2 and Sec. 3.3).  Each step estimates x0|t from the noise prediction (Eq. 12), corrects its range space,
  x0_hat = x0|t - Sigma_t A^+ (A x0|t - y)                                              (Eq. 17),
so that for sigma_y = 0 (Sigma_t = I) x0_hat = A^+ y + (I - A^+ A) x0|t (Alg. 1, the range-null space
decomposition, computed with ``operator.pinv``), then samples x_t' with the noise budget that remains after the
measurement noise A^+ n the correction carries in (Eqs. 18-19): per singular direction i, with
a = sqrt(abar_t') and sigma = sqrt(1 - abar_t'),
  lambda_i = 1 where sigma >= a sigma_y / s_i, sigma s_i / (a sigma_y) elsewhere;
  gamma_i^2 = sigma^2 - (a lambda_i sigma_y / s_i)^2          (Phi_t = V diag(gamma^2) V^T; gamma = sigma for s_i = 0);
  x_t' = a x0_hat + V diag(gamma) V^T (eta z + sqrt(1 - eta^2) eps_theta)   (DDIM's step with DDNM's eta).
The release applies the same rule once with a scalar lambda_t ("simplified", Eq. 19 for A A^T = I) and per
singular value in its SVD variant (appendix); the per-direction form above is the one that keeps the total noise
of every coordinate at sigma for any singular values.  It needs the operator's SVD (``vt``, ``v``, ``ut``,
``singulars``); with sigma_y = 0 only ``forward`` and ``pinv`` are used.
* Defaults: eta = 0.85 and 100 steps (the release's README: "ETA is the DDIM hyperparameter (default: 0.85)",
  ``T_sampling: 100``); time travel (Sec. 3.3, RePaint's resampling) off, as in the release's configs
  (travel_length = travel_repeat = 1).  With ``travel_length`` L and ``travel_repeat`` r > 1, at every L-th grid
  step the state x_t is taken back L grid steps by the forward process q(x_{t+L} | x_t) and denoised again, r - 1
  times.

Both follow the protocol of ``diffusion.py``: ``sampler(prior, operator, y, *, steps, generator, ...)`` returns
x_0 samples of shape [B, *operator.input_shape] (B = y's batch), in y's dtype and device.  Hand-written from the
equations above: no dependency of osir has these samplers (diffusers has neither).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from osir.core.registry import ZERO_SHOT_SAMPLERS
from osir.methods.zeroshot.diffusion import standard_normal, timesteps, x0_from_eps

__all__ = ["ddrm", "ddnm"]


def _require_svd(operator, name: str) -> None:
    if not getattr(operator, "has_svd", False):
        raise ValueError(f"{name} needs a linear operator with an SVD (vt, v, ut, singulars); "
                         f"{type(operator).__name__} has none")
    if getattr(operator, "input_shape", None) is None:
        raise ValueError(f"{name} needs the operator's input shape: build {type(operator).__name__} with size=")


def _abar(prior, t: int) -> float:
    """abar_t, with abar = 1 for t = -1 (the clean end after the last network call)."""
    return 1.0 if t < 0 else float(prior.alphas_cumprod[t])


@ZERO_SHOT_SAMPLERS.register(name="ddrm")
def ddrm(prior, operator, y: torch.Tensor, *, steps: int = 20, generator: Optional[torch.Generator] = None,
         eta: float = 0.85, eta_b: float = 1.0) -> torch.Tensor:
    """DDRM (Kawar et al. 2022, Eqs. 7-8; module docstring): ``steps`` network calls on DDIM's evenly spaced
    grid, measurement noise ``operator.noise_sigma``."""
    _require_svd(operator, "DDRM")
    if not 0 <= eta <= 1 or not 0 <= eta_b <= 1:
        raise ValueError(f"DDRM needs 0 <= eta, eta_b <= 1, got eta={eta}, eta_b={eta_b}")
    grid = timesteps(len(prior.alphas_cumprod), steps)
    batch, n = y.shape[0], operator.input_dim
    s = operator.singulars(like=y)
    k = s.numel()
    sigma_y = operator.noise_sigma
    y_bar = operator.ut(y)[:, :k] / s                                       # ybar_i = (U^T y)_i / s_i
    y_noise = sigma_y / s                                                    # its noise std sigma_y / s_i

    def sigma(abar: float) -> float:
        return math.sqrt((1 - abar) / abar)

    # Eq. 7: the start, in the variance-exploding spectral coordinates
    sigma_start = sigma(_abar(prior, grid[0]))
    z = standard_normal((batch, n), y, generator)
    c = sigma_start * z
    observed = sigma_start > y_noise
    start = y_bar + (sigma_start ** 2 - y_noise ** 2).clamp_min(0).sqrt() * z[:, :k]
    c[:, :k] = torch.where(observed, start, c[:, :k])

    for index, t in enumerate(grid):
        abar = _abar(prior, t)
        sigma_t = sigma(abar)
        sigma_next = sigma(_abar(prior, grid[index + 1] if index + 1 < len(grid) else -1))
        x_t = math.sqrt(abar) * operator.v(c)
        x0 = x0_from_eps(x_t, prior.eps(x_t, t), abar)
        c0 = operator.vt(x0)
        z = standard_normal((batch, n), y, generator)
        # unobserved coordinates: DDIM's step, direction (xbar_t - xbar_theta) / sigma_t
        following = c0 + math.sqrt(1 - eta ** 2) * sigma_next * (c - c0) / sigma_t + eta * sigma_next * z
        c0_kept, z_kept = c0[:, :k], z[:, :k]
        less_noisy = sigma_next < y_noise
        towards_y = (c0_kept + math.sqrt(1 - eta ** 2) * sigma_next * (y_bar - c0_kept)
                     / torch.where(less_noisy, y_noise, torch.ones_like(y_noise)) + eta * sigma_next * z_kept)
        at_y = ((1 - eta_b) * c0_kept + eta_b * y_bar
                + (sigma_next ** 2 - eta_b ** 2 * y_noise ** 2).clamp_min(0).sqrt() * z_kept)
        following[:, :k] = torch.where(less_noisy, towards_y, at_y)
        c = following
    return operator.v(c).reshape(batch, *operator.input_shape)


def _travel_schedule(steps: int, length: int, repeat: int) -> list[tuple[int, int]]:
    """(from, to) grid indices: +1 is a denoising step (index ``steps`` = the clean end), -length a jump back.
    At every index that is a positive multiple of ``length`` (before the end) the chain jumps back ``repeat`` - 1
    times (DDNM Sec. 3.3; RePaint's schedule)."""
    if length < 1 or repeat < 1:
        raise ValueError(f"travel_length and travel_repeat must be >= 1, got {length}, {repeat}")
    jumps_left = {index: repeat - 1 for index in range(length, steps, length)}
    moves, index = [], 0
    while index < steps:
        moves.append((index, index + 1))
        index += 1
        if jumps_left.get(index, 0) > 0:
            jumps_left[index] -= 1
            moves.append((index, index - length))
            index -= length
    return moves


@ZERO_SHOT_SAMPLERS.register(name="ddnm")
def ddnm(prior, operator, y: torch.Tensor, *, steps: int = 100, generator: Optional[torch.Generator] = None,
         eta: float = 0.85, travel_length: int = 1, travel_repeat: int = 1) -> torch.Tensor:
    """DDNM+ (Wang et al. 2023, Alg. 2 with Eqs. 17-19; module docstring); DDNM (Alg. 1) when
    ``operator.noise_sigma`` is 0.  ``steps`` network calls (more with time travel)."""
    if not 0 <= eta <= 1:
        raise ValueError(f"DDNM needs 0 <= eta <= 1, got {eta}")
    sigma_y = operator.noise_sigma
    if sigma_y > 0:
        _require_svd(operator, "DDNM+ with sigma_y > 0")
    elif getattr(operator, "input_shape", None) is None:
        raise ValueError(f"DDNM needs the operator's input shape: build {type(operator).__name__} with size=")
    grid = timesteps(len(prior.alphas_cumprod), steps) + [-1]
    batch = y.shape[0]
    shape = (batch, *operator.input_shape)
    if sigma_y > 0:
        s = operator.singulars(like=y)
        k = s.numel()
        y_bar = operator.ut(y)[:, :k] / s
        y_noise = sigma_y / s

    x = standard_normal(shape, y, generator)                                           # x_T ~ N(0, I)
    for start, end in _travel_schedule(len(grid) - 1, travel_length, travel_repeat):
        abar, abar_next = _abar(prior, grid[start]), _abar(prior, grid[end])
        if end < start:                                                       # time travel: q(x_t' | x_t)
            ratio = abar_next / abar
            x = math.sqrt(ratio) * x + math.sqrt(1 - ratio) * standard_normal(shape, y, generator)
            continue
        eps = prior.eps(x, grid[start])
        x0 = x0_from_eps(x, eps, abar)
        a, noise_level = math.sqrt(abar_next), math.sqrt(1 - abar_next)
        z = standard_normal(shape, y, generator)
        direction = eta * z + math.sqrt(1 - eta ** 2) * eps
        if sigma_y == 0:                                                      # Alg. 1: A^+ y + (I - A^+ A) x0
            x0_hat = x0 - operator.pinv(operator.forward(x0) - y).reshape(shape)
            x = a * x0_hat + noise_level * direction
            continue
        # Alg. 2 / Eqs. 17-19, per singular direction
        if a > 0:
            absorbed = noise_level >= a * y_noise
            lam = torch.where(absorbed, torch.ones_like(s), noise_level / (a * y_noise))
        else:
            lam = torch.ones_like(s)
        gamma = (noise_level ** 2 - (a * lam * y_noise) ** 2).clamp_min(0).sqrt()
        c0 = operator.vt(x0)
        c0[:, :k] = c0[:, :k] - lam * (c0[:, :k] - y_bar)
        scale = torch.full((c0.shape[1],), noise_level, dtype=c0.dtype, device=c0.device)
        scale[:k] = gamma
        x = operator.v(a * c0 + scale * operator.vt(direction)).reshape(shape)
    return x
