"""The mean-reverting SDE as a variance-preserving (VP) diffusion: the change of variables that lets
diffusers' VP solvers (``osir.diffusion.solvers``) sample IR-SDE, Refusion and DA-CLIP's universal IR.

With the SDE of ``osir.diffusion.sde`` (IR-SDE, Luo et al. ICML 2023, Eq. 5-6; lambda = ``sde.lam``,
the stationary std, thetabar_t = ``sde.theta_bar[t]``) the forward marginal is

    x_t = mu + (x_0 - mu) e^{-thetabar_t} + lambda sqrt(1 - e^{-2 thetabar_t}) eps,   eps ~ N(0, I).

Put y = (x - mu) / lambda (mu fixed: it is the condition, not a variable of the process). Then

    y_t = sqrt(alphabar_t) y_0 + sqrt(1 - alphabar_t) eps,     alphabar_t = e^{-2 thetabar_t},

which is DDPM's forward marginal (Ho et al. 2020, Eq. 4) with the *same* eps. The noise networks of
IR-SDE / Refusion / DA-CLIP predict that eps from (x_t, mu, t), so they are eps-models of y_t as they
are: no rescaling of their output is needed, only of the state (x = mu + lambda y). alphabar_0 = 1
(thetabar_0 = 0) and alphabar_T = eps_sde^2 (2.5e-5 for the default eps 0.005): y_T is not exactly pure
noise, but every solver starts from the state it is given, here y_T = (x_T - mu) / lambda with
x_T = mu + lambda z, the SDE's stationary start (``sde.prior_sample``), so y_T = z.

diffusers describes a discrete VP chain by ``trained_betas``: alphas_cumprod[k] = prod_{j<=k} (1 - beta_j).
Two chains are built here:

* ``trained_betas(sde)``, the SDE's full chain: diffusers index k = 0..T-1 is osir step t = k + 1,
  beta_k = 1 - alphabar_{k+1} / alphabar_k, so alphas_cumprod[t - 1] = e^{-2 thetabar_t}; osir's step 0
  (alphabar = 1, the data) is diffusers' "final" state (``set_alpha_to_one`` / ``final_sigmas_type='zero'``).
* ``SubChain(sde, timesteps)``, the N-step chain of one sampling run T = t_0 > ... > t_N = 0: index
  k = 0..N-1 is osir step t_{N-1-k}, beta_k = 1 - alphabar(t_{N-1-k}) / alphabar(t_{N-k}). With it every
  scheduler's ``set_timesteps(N)`` (``timestep_spacing='trailing'``) runs exactly osir's grid: diffusers
  0.42's DDIM / UniPC / DEIS take only a step count (DDIM steps back by T // N, exact only when N divides
  T), while DPM-Solver++ and Heun also take custom timesteps on the full chain; the two give the same
  solver (tests/test_vp_samplers.py checks it for DPM-Solver++ and Heun).

Hand-written, because no library has it: the change of variables, the two chains and the x_0 clamp in
image units (``clamped_noise``); the solvers themselves are diffusers'.
"""
from __future__ import annotations

import torch

from osir.diffusion.sde import MeanRevertingSDE


def alphas_cumprod(sde: MeanRevertingSDE) -> torch.Tensor:
    """alphabar_t = exp(-2 thetabar_t) for t = 0..T (float64; alphabar_0 = 1)."""
    return torch.exp(-2 * sde.theta_bar)


def trained_betas(sde: MeanRevertingSDE) -> torch.Tensor:
    """The SDE's full chain for diffusers (float64, length T): beta_k = 1 - alphabar_{k+1} / alphabar_k, so that
    diffusers' alphas_cumprod[t - 1] is osir's alphabar_t."""
    ab = alphas_cumprod(sde)
    return 1 - ab[1:] / ab[:-1]


def to_vp(x: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE) -> torch.Tensor:
    """y = (x - mu) / lambda."""
    return (x - mu) / sde.lam


def from_vp(y: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE) -> torch.Tensor:
    """x = mu + lambda y."""
    return mu + sde.lam * y


def clamped_noise(noise: torch.Tensor, xt: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE, t: int,
                  bounds: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps', x0'): the x_0 estimate clamped to ``bounds`` in image units and the noise that implies it.

    x0 = mu + (x_t - mu - sqrt(v_t) eps) e^{thetabar_t} (``sde.x0_from_noise``) is clamped to x0', and
    eps' = (x_t - m_t(x0')) / sqrt(v_t) with m_t(x0') = mu + (x0' - mu) e^{-thetabar_t} (Eq. 5). In y this is
    eps' = (y_t - sqrt(alphabar_t) y0') / sqrt(1 - alphabar_t), so an eps-solver that converts eps' back,
    y0 = (y_t - sqrt(1 - alphabar_t) eps') / sqrt(alphabar_t), sees x0' itself: the clamp acts on x in [0, 1],
    not on y (diffusers' own ``clip_sample`` / ``thresholding`` would clamp y0 to [-1, 1])."""
    x0 = sde.x0_from_noise(xt, mu, noise, t).clamp(*bounds)
    return (xt - sde.mean(x0, mu, t)) / sde.std(t), x0


class SubChain:
    """The N-step VP chain of one sampling run ``timesteps`` = [T = t_0 > t_1 > ... > t_N = 0].

    ``steps[k]`` is the osir step of diffusers index k (k = 0..N-1: t_{N-1}, ..., t_0, increasing noise);
    ``alphas_cumprod[k]`` = alphabar(steps[k]); ``betas`` are diffusers' ``trained_betas`` for it (float64)."""

    def __init__(self, sde: MeanRevertingSDE, timesteps: list[int]):
        ts = [int(t) for t in timesteps]
        if len(ts) < 2 or any(a <= b for a, b in zip(ts, ts[1:])) or ts[-1] != 0:
            raise ValueError(f"timesteps must decrease strictly to 0, got {list(timesteps)}")
        self.steps = ts[-2::-1]
        full = alphas_cumprod(sde)
        self.alphas_cumprod = full[self.steps]
        previous = torch.cat([full[:1], self.alphas_cumprod[:-1]])   # alphabar of the next lower step (t_N = 0: 1)
        self.betas = 1 - self.alphas_cumprod / previous

    def __len__(self) -> int:
        return len(self.steps)

    def step(self, index) -> int:
        """The osir step (the network's t) of a diffusers timestep index of this chain."""
        k = float(index)
        if k != int(k) or not 0 <= k < len(self.steps):
            raise ValueError(f"timestep {index} is not an index of this {len(self.steps)}-step chain")
        return self.steps[int(k)]
