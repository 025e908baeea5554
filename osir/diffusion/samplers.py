"""Samplers for the mean-reverting SDE, in the style of k-diffusion's ``sampling.py``: each is a
standalone function with the same signature

    sampler(model, x, mu, sde, timesteps, generator=None, callback=None, extra_args=None, **extras) -> x_0

``model(x_t, mu, t, **extra_args)`` predicts the noise of x_t (t a python int); ``extra_args``
carries the network's other inputs (as k-diffusion's samplers do), e.g. DA-CLIP's embeddings;
``x`` is the start state (x_T, e.g. ``sde.prior_sample(mu)``); ``timesteps`` is a decreasing list
T = t_0 > ... > t_N = 0 (``sde.timesteps(N)``), so every sampler runs with fewer steps than T.
``callback({'i', 't', 'x', 'x0'})`` is called after each step with the new state and the step's
x_0 estimate.  Per-step coefficients are python floats computed from the SDE, so a step costs a
few element-wise ops beyond the network.

The last step (t_{N-1} -> 0), compared with the IR-SDE / DA-CLIP release's ``reverse_sde``,
``reverse_ode`` and ``reverse_posterior`` (codes/utils/sde_utils.py), checked by running them on the
same draws: the reverse SDE adds its noise on every step, the last one included (``last_step_noise``,
default true, as the release; false keeps that step noiseless); the ODE adds none; the posterior's
variance at s = 0 is zero in closed form, so its last step returns the posterior mean (the release
clamps that variance to 1e-20 dt and draws a noise of std ~1e-10 lambda sqrt(dt), below float32
resolution).  Hand-written: the samplers are a few lines of the paper's equations around the network.
"""
from __future__ import annotations

from typing import Callable

import torch

from osir.diffusion.sde import MeanRevertingSDE, randn_like
from osir.core.registry import SAMPLERS

NoiseModel = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _report(callback, i, t, x, x0):
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "x0": x0})


def _check(timesteps):
    if len(timesteps) < 2 or any(a <= b for a, b in zip(timesteps, timesteps[1:])) or timesteps[-1] != 0:
        raise ValueError(f"timesteps must decrease strictly to 0, got {list(timesteps)}")


@SAMPLERS.register(name="sde")
@torch.no_grad()
def sample_reverse_sde(model: NoiseModel, x: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE,
                       timesteps: list[int], generator: torch.Generator | None = None, callback=None,
                       extra_args: dict | None = None, *, last_step_noise: bool = True) -> torch.Tensor:
    """Reverse-time SDE (Anderson 1982; IR-SDE Eq. 3) by Euler-Maruyama, one draw z per step after the
    network call: x_s = x_t - [theta (mu - x) - sigma^2 score] dt - sigma sqrt(dt) z.

    ``last_step_noise``: add the noise on the last step t -> 0 too (default, the release's
    ``reverse_sde``: sigma_1 sqrt(dt) z there, e.g. ~0.94/255 std for lambda = 50/255, T = 100);
    false: that step is the drift alone (the state's mean), the choice of DDPM-style samplers."""
    _check(timesteps)
    extra_args = extra_args or {}
    for i, (t, s) in enumerate(zip(timesteps, timesteps[1:])):
        noise = model(x, mu, t, **extra_args)
        x0 = sde.x0_from_noise(x, mu, noise, t) if callback is not None else None
        x = sde.reverse_sde_step(x, mu, sde.score_from_noise(noise, t), t, s,
                                 randn_like(x, generator) if s > 0 or last_step_noise else None)
        _report(callback, i, t, x, x0)
    return x


@SAMPLERS.register(name="ode")
@torch.no_grad()
def sample_reverse_ode(model: NoiseModel, x: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE,
                       timesteps: list[int], generator: torch.Generator | None = None, callback=None,
                       extra_args: dict | None = None) -> torch.Tensor:
    """Probability-flow ODE of the reverse SDE (Song et al. 2021, Eq. 13), Euler steps; deterministic."""
    _check(timesteps)
    extra_args = extra_args or {}
    for i, (t, s) in enumerate(zip(timesteps, timesteps[1:])):
        noise = model(x, mu, t, **extra_args)
        x0 = sde.x0_from_noise(x, mu, noise, t) if callback is not None else None
        x = sde.reverse_ode_step(x, mu, sde.score_from_noise(noise, t), t, s)
        _report(callback, i, t, x, x0)
    return x


@SAMPLERS.register(name="posterior")
@torch.no_grad()
def sample_posterior(model: NoiseModel, x: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE,
                     timesteps: list[int], generator: torch.Generator | None = None, callback=None,
                     extra_args: dict | None = None, *, eta: float = 1.0, clip_denoised: tuple[float, float] | None = None) -> torch.Tensor:
    """Optimal posterior sampling (IR-SDE, Eq. 8-10, 'posterior_sample' in the paper's appendix):
    estimate x_0 from the predicted noise, then draw x_s ~ p(x_s | x_t, x_0_hat).

    Extras (not in the IR-SDE paper): ``eta`` scales the posterior noise (1: the paper's sampler;
    0: follow the posterior mean, as DDIM's eta = 0 does for DDPM, Song et al. 2021), and
    ``clip_denoised=(lo, hi)`` clamps x_0_hat to the data range before the step (the
    ``clip_denoised`` of Ho et al.'s DDPM sampler).  Both help weakly trained networks, whose
    x_0_hat at large t is amplified by exp(thetabar_t)."""
    _check(timesteps)
    extra_args = extra_args or {}
    for i, (t, s) in enumerate(zip(timesteps, timesteps[1:])):
        x0_hat = sde.x0_from_noise(x, mu, model(x, mu, t, **extra_args), t)
        if clip_denoised is not None:
            x0_hat = x0_hat.clamp(*clip_denoised)
        x_next = sde.posterior_mean(x, x0_hat, mu, t, s)
        if s > 0 and eta > 0:
            x_next = x_next + eta * sde.posterior_std(t, s) * randn_like(x, generator)
        x = x_next
        _report(callback, i, t, x, x0_hat)
    return x
