"""Samplers for the mean-reverting SDE, in the style of k-diffusion's ``sampling.py``: each is a
standalone function with the same signature

    sampler(model, x, mu, sde, timesteps, generator=None, callback=None, **extras) -> x_0 estimate

``model(x_t, mu, t)`` predicts the noise of x_t (t a python int); ``x`` is the start state
(x_T, e.g. ``sde.prior_sample(mu)``); ``timesteps`` is a decreasing list T = t_0 > ... > t_N = 0
(``sde.timesteps(N)``), so every sampler runs with fewer steps than T.  Per-step coefficients are
python floats computed from the SDE, so a step costs a few element-wise ops beyond the network.
"""
from __future__ import annotations

from typing import Callable

import torch

from osir.diffusion.sde import MeanRevertingSDE, randn_like
from osir.registry import SAMPLERS

NoiseModel = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _check(timesteps):
    if len(timesteps) < 2 or any(a <= b for a, b in zip(timesteps, timesteps[1:])) or timesteps[-1] != 0:
        raise ValueError(f"timesteps must decrease strictly to 0, got {list(timesteps)}")


@SAMPLERS.register(name="sde")
@torch.no_grad()
def sample_reverse_sde(model: NoiseModel, x: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE,
                       timesteps: list[int], generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Reverse-time SDE (Anderson 1982; IR-SDE Eq. 3) by Euler-Maruyama; no noise on the last step."""
    _check(timesteps)
    for i, (t, s) in enumerate(zip(timesteps, timesteps[1:])):
        score = sde.score_from_noise(model(x, mu, t), t)
        x = sde.reverse_sde_step(x, mu, score, t, s, randn_like(x, generator) if s > 0 else None)
        if callback is not None:
            callback(i, t, x)
    return x


@SAMPLERS.register(name="ode")
@torch.no_grad()
def sample_reverse_ode(model: NoiseModel, x: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE,
                       timesteps: list[int], generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Probability-flow ODE of the reverse SDE (Song et al. 2021, Eq. 13), Euler steps; deterministic."""
    _check(timesteps)
    for i, (t, s) in enumerate(zip(timesteps, timesteps[1:])):
        score = sde.score_from_noise(model(x, mu, t), t)
        x = sde.reverse_ode_step(x, mu, score, t, s)
        if callback is not None:
            callback(i, t, x)
    return x


@SAMPLERS.register(name="posterior")
@torch.no_grad()
def sample_posterior(model: NoiseModel, x: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE,
                     timesteps: list[int], generator: torch.Generator | None = None, callback=None, *,
                     eta: float = 1.0, clip_denoised: tuple[float, float] | None = None) -> torch.Tensor:
    """Optimal posterior sampling (IR-SDE, Eq. 8-10, 'posterior_sample' in the paper's appendix):
    estimate x_0 from the predicted noise, then draw x_s ~ p(x_s | x_t, x_0_hat).

    Extras (not in the IR-SDE paper): ``eta`` scales the posterior noise (1: the paper's sampler;
    0: follow the posterior mean, as DDIM's eta = 0 does for DDPM, Song et al. 2021), and
    ``clip_denoised=(lo, hi)`` clamps x_0_hat to the data range before the step (the
    ``clip_denoised`` of Ho et al.'s DDPM sampler).  Both help weakly trained networks, whose
    x_0_hat at large t is amplified by exp(thetabar_t)."""
    _check(timesteps)
    for i, (t, s) in enumerate(zip(timesteps, timesteps[1:])):
        x0_hat = sde.x0_from_noise(x, mu, model(x, mu, t), t)
        if clip_denoised is not None:
            x0_hat = x0_hat.clamp(*clip_denoised)
        x_next = sde.posterior_mean(x, x0_hat, mu, t, s)
        if s > 0 and eta > 0:
            x_next = x_next + eta * sde.posterior_std(t, s) * randn_like(x, generator)
        x = x_next
        if callback is not None:
            callback(i, t, x)
    return x
