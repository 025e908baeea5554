"""The discrete variance-preserving diffusion the zero-shot samplers share (Ho et al. 2020, Eq. 4; DDIM, Song et
al. 2021, Eq. 12): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t = 0 .. T-1, with the priors' linear beta
schedule (1e-4 .. 0.02 over 1000 steps: both ADM releases), and the protocol a prior fulfils:

* ``prior.alphas_cumprod``: ``[T]`` float64 tensor of abar_t;
* ``prior.eps(x, t)``: the predicted noise of x_t at the integer step t (differentiable in x: DPS takes its
  gradient through the prior under ``torch.enable_grad``);
* optionally ``prior.data_range``: (lo, hi) of the data (the image priors' [-1, 1]), where a sampler clamps an
  x0 estimate (TDS's ``clip_twisted``); a prior without it is never clamped.

A zero-shot sampler is a function registered in ``ZERO_SHOT_SAMPLERS``::

    sampler(prior, operator, y, *, steps, generator=None, **its_paper_settings) -> x_0 samples

with ``operator`` an ``osir.methods.zeroshot.operators.Operator`` (A, A^T, A^+, SVD where it has them;
``operator.noise_sigma`` the measurement noise) and ``y`` its measurement.  Hand-written: a few lines of
closed forms that every sampler reads (diffusers' schedulers hold the same numbers but not as a prior-agnostic
interface).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from osir.core.registry import ZERO_SHOT_SAMPLERS  # noqa: F401  (where the samplers register)


def linear_alphas_cumprod(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """abar_t = prod_{s <= t} (1 - beta_s) with beta linear from ``beta_start`` to ``beta_end`` (float64)."""
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def timesteps(T: int, steps: int) -> list[int]:
    """``steps`` descending integer steps from T - 1 down to 0, evenly spaced (DDIM's "trailing" grid)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be 1 to T={T}, got {steps}")
    return sorted({round(T - 1 - i * (T - 1) / max(steps - 1, 1)) for i in range(steps)}, reverse=True)


def x0_from_eps(x: torch.Tensor, eps: torch.Tensor, abar: float | torch.Tensor) -> torch.Tensor:
    """Tweedie's estimate E[x_0 | x_t] from the predicted noise: (x_t - sqrt(1 - abar) eps) / sqrt(abar)."""
    abar = torch.as_tensor(abar, dtype=x.dtype, device=x.device)
    return (x - (1 - abar).sqrt() * eps) / abar.sqrt()


def eps_from_x0(x: torch.Tensor, x0: torch.Tensor, abar: float | torch.Tensor) -> torch.Tensor:
    """The noise that takes x_0 to x_t: (x_t - sqrt(abar) x_0) / sqrt(1 - abar)."""
    abar = torch.as_tensor(abar, dtype=x.dtype, device=x.device)
    return (x - abar.sqrt() * x0) / (1 - abar).sqrt()


def standard_normal(shape: Sequence[int], like: torch.Tensor, generator: Optional[torch.Generator] = None
                    ) -> torch.Tensor:
    """N(0, I) in ``like``'s dtype and device, drawn on the generator's own device (a CPU generator drives CUDA
    sampling reproducibly)."""
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, dtype=like.dtype, device=device).to(like.device)
