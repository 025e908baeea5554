"""The mean-reverting SDE of IR-SDE (Luo et al., "Image Restoration with Mean-Reverting
Stochastic Differential Equations", ICML 2023), written from the paper's equations.

    dx = theta_t (mu - x) dt + sigma_t dw,   sigma_t^2 = 2 lambda^2 theta_t          (Eq. 1, 4)

With thetabar_t = int_0^t theta_z dz the marginal is Gaussian (Eq. 5-6):

    m_t = mu + (x_0 - mu) exp(-thetabar_t),   v_t = lambda^2 (1 - exp(-2 thetabar_t)).

Time is discrete, t = 0..T; ``theta_bar[t]`` is the integrated theta (dt included) and dt is
chosen so that exp(-theta_bar[T]) = eps.  The object is stateless: mu is an argument of every
call.  Every ``t`` may be a python int (sampling) or a LongTensor of per-sample steps (training).
"""
from __future__ import annotations

import math
from typing import Literal

import torch


def theta_schedule(kind: str, T: int, s: float = 0.008) -> torch.Tensor:
    """theta_0..theta_T (float64, up to a common factor fixed later by dt)."""
    if kind == "cosine":   # 1 - alphabar of the cosine schedule (Nichol & Dhariwal 2021) on T+2 points
        steps = torch.arange(T + 3, dtype=torch.float64) / (T + 2)
        alphabar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return 1 - alphabar[1:-1] / alphabar[0]
    if kind == "linear":
        scale = 1000 / T
        return torch.linspace(scale * 1e-4, scale * 0.02, T + 1, dtype=torch.float64)
    if kind == "constant":
        return torch.ones(T + 1, dtype=torch.float64)
    raise ValueError(f"unknown theta schedule '{kind}'; allowed: cosine, linear, constant")


def _exp(v):
    """exp of a python float in float64 (``math.exp``), of a tensor elementwise."""
    return math.exp(v) if isinstance(v, float) else torch.exp(v)


def _at(values: torch.Tensor, t, like: torch.Tensor):
    """values[t] as a float (int t) or as a (B, 1, 1, 1) tensor matching ``like``."""
    if isinstance(t, int):
        return float(values[t])
    return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class MeanRevertingSDE:
    """IR-SDE's forward process with closed-form marginals and posterior.

    Args:
        max_sigma: lambda, the stationary std, in the image's units (e.g. 10/255 for images in [0, 1]).
        T: number of discrete steps.
        schedule: theta schedule ('cosine', 'linear', 'constant').
        eps: exp(-thetabar_T); how close x_T's mean is to mu.
    """

    def __init__(self, max_sigma: float, T: int = 100, schedule: Literal["cosine", "linear", "constant"] = "cosine",
                 eps: float = 0.005):
        if T < 1 or not 0 < eps < 1 or max_sigma <= 0:
            raise ValueError(f"need T >= 1, 0 < eps < 1, max_sigma > 0; got T={T}, eps={eps}, max_sigma={max_sigma}")
        self.lam, self.T, self.eps, self.schedule = float(max_sigma), int(T), float(eps), schedule
        thetas = theta_schedule(schedule, self.T)
        cumsum = torch.cumsum(thetas, 0) - thetas[0]        # sum_{i=1..t} theta_i, zero at t = 0
        self.dt = -math.log(eps) / float(cumsum[-1])
        self.thetas = thetas                                  # theta_t (per unit time)
        self.theta_bar = cumsum * self.dt                     # integrated theta, thetabar_0 = 0
        self.sigma_bar = self.lam * torch.sqrt(1 - torch.exp(-2 * self.theta_bar))  # sqrt(v_t)

    # -- marginals ---------------------------------------------------------------------------
    def mean(self, x0: torch.Tensor, mu: torch.Tensor, t) -> torch.Tensor:
        """m_t = mu + (x0 - mu) exp(-thetabar_t)  (Eq. 5)."""
        return mu + (x0 - mu) * _exp(-_at(self.theta_bar, t, x0))

    def std(self, t, like: torch.Tensor | None = None):
        """sqrt(v_t) = lambda sqrt(1 - exp(-2 thetabar_t))  (Eq. 6)."""
        return _at(self.sigma_bar, t, like if like is not None else self.sigma_bar)

    def q_sample(self, x0: torch.Tensor, mu: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """x_t = m_t + sqrt(v_t) * noise."""
        return self.mean(x0, mu, t) + self.std(t, x0) * noise

    def score_from_noise(self, noise: torch.Tensor, t) -> torch.Tensor:
        """grad log p_t(x) = -(x_t - m_t) / v_t = -noise / sqrt(v_t)  (Eq. 7)."""
        return -noise / self.std(t, noise)

    def x0_from_noise(self, xt: torch.Tensor, mu: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """Invert Eq. 5: x0 = mu + (x_t - mu - sqrt(v_t) noise) exp(thetabar_t)."""
        decay = _exp(_at(self.theta_bar, t, xt))
        return mu + (xt - mu - self.std(t, xt) * noise) * decay

    # -- reverse-time steps from t to s < t ---------------------------------------------------
    def _delta(self, t, s, like):
        return _at(self.theta_bar, t, like) - _at(self.theta_bar, s, like)

    def reverse_sde_drift(self, xt: torch.Tensor, mu: torch.Tensor, score: torch.Tensor, t, s) -> torch.Tensor:
        """dx over [s, t] of the reverse SDE without its noise (Eq. 3, Euler-Maruyama):
        [theta (mu - x) - sigma^2 score] dt, with theta dt integrated to thetabar_t - thetabar_s."""
        delta = self._delta(t, s, xt)
        return delta * (mu - xt) - 2 * self.lam ** 2 * delta * score

    def reverse_sde_step(self, xt, mu, score, t, s, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_s = x_t - drift - sqrt(2 lambda^2 (thetabar_t - thetabar_s)) z, the Euler-Maruyama step of
        Eq. 3 (for s = t - 1 the noise is sigma_t sqrt(dt) z).  z and -z are equally likely; the minus is
        the release's sign (its step subtracts its dispersion term), so equal draws give equal states."""
        out = xt - self.reverse_sde_drift(xt, mu, score, t, s)
        if noise is not None:
            out = out - (2 * self.lam ** 2 * self._delta(t, s, xt)) ** 0.5 * noise
        return out

    def reverse_ode_step(self, xt, mu, score, t, s) -> torch.Tensor:
        """Probability-flow ODE step: x_s = x_t - [theta (mu - x) - sigma^2 score / 2] dt."""
        delta = self._delta(t, s, xt)
        return xt - (delta * (mu - xt) - self.lam ** 2 * delta * score)

    def posterior_mean(self, xt, x0, mu, t, s) -> torch.Tensor:
        """Mean of p(x_s | x_t, x_0), the optimal reverse state (Eq. 8-10, for any s < t):
        mu + [(1 - e^{-2 tb_s}) e^{-(tb_t - tb_s)} (x_t - mu) + (1 - e^{-2 (tb_t - tb_s)}) e^{-tb_s} (x_0 - mu)]
             / (1 - e^{-2 tb_t})."""
        tb_t, tb_s = _at(self.theta_bar, t, xt), _at(self.theta_bar, s, xt)
        exp = _exp
        delta = tb_t - tb_s
        denom = 1 - exp(-2 * tb_t)
        a = (1 - exp(-2 * tb_s)) * exp(-delta) / denom
        b = (1 - exp(-2 * delta)) * exp(-tb_s) / denom
        return mu + a * (xt - mu) + b * (x0 - mu)

    def posterior_std(self, t: int, s: int) -> float:
        """Std of p(x_s | x_t, x_0): lambda^2 (1 - e^{-2 tb_s})(1 - e^{-2 (tb_t - tb_s)}) / (1 - e^{-2 tb_t})."""
        tb_t, tb_s = float(self.theta_bar[t]), float(self.theta_bar[s])
        var = self.lam ** 2 * (1 - math.exp(-2 * tb_s)) * (1 - math.exp(-2 * (tb_t - tb_s))) / (1 - math.exp(-2 * tb_t))
        return math.sqrt(max(var, 0.0))

    def timesteps(self, steps: int | None = None) -> list[int]:
        """Evenly spaced integer steps T = t_0 > t_1 > ... > t_N = 0 for an N-step sampler."""
        steps = self.T if steps is None else int(steps)
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must be in [1, T={self.T}], got {steps}")
        points = torch.linspace(self.T, 0, steps + 1).round().long().tolist()
        return points

    def prior_sample(self, mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The sampling start x_T = mu + lambda z, z ~ N(0, I): the SDE's stationary distribution
        N(mu, lambda^2 I), as the release's ``noise_state`` draws it.  (The marginal at T is
        N(mu + eps (x_0 - mu), lambda^2 (1 - eps^2) I): its std is 1.25e-5 relative smaller for eps = 0.005.)"""
        return mu + self.lam * randn_like(mu, generator)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
