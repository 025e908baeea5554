"""Zero-shot samplers that steer an unconditional diffusion prior with the gradient of a measurement fit
(DPS, PiGDM) or with a proximal data step (DiffPIR), for y = A(x) + sigma_y n.  All three share the VP notation of
``diffusion.py``: abar_t = ``prior.alphas_cumprod[t]``, x0_hat(x_t) = (x_t - sqrt(1 - abar_t) eps(x_t, t)) /
sqrt(abar_t) (Tweedie), and a step from grid time t to the next grid time s (abar_s = 1 after the last one).

* ``dps``: Chung et al., "Diffusion Posterior Sampling for General Noisy Inverse Problems", ICLR 2023, Alg. 1
  (Gaussian noise).  An ancestral DDPM step from x_t (Ho et al. 2020, Eq. 6-7, the posterior q(x_s | x_t, x0_hat)
  with variance beta~ = (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s), Alg. 1's sigma~), then
  x_s <- x_s - zeta grad_{x_t} ||y - A(x0_hat(x_t))||, the gradient taken through the prior by autograd.  This is
  the paper's normalised step zeta_i grad ||y - A(x0_hat)||^2, zeta_i = zeta' / ||y - A(x0_hat)|| (App. C), as the
  release (DPS2022/diffusion-posterior-sampling, ``condition_methods.py``) computes it: the gradient of the norm
  times ``zeta`` (zeta grad ||r|| = (zeta / 2) grad ||r||^2 / ||r||, so zeta' = zeta / 2 if Alg. 1's squared norm
  is read literally); its per-task values were tuned in this form.
  Default zeta = 1.0 (the release's phase-retrieval value; its configs use 0.3 for SR x4 and Gaussian / motion /
  non-linear deblurring, 0.5 for inpainting: ``ZeroShot`` passes those per task, ``zeta=`` otherwise; checked
  against the configs' values by tests/test_zeroshot_method.py).  One norm per batch element (the release takes
  one norm over the whole batch, which couples the samples of a batch).  Only ``A(x)`` is needed, so
  ``operators.NonLinear`` works.  The step moves x_t by about zeta per step whatever the residual, so small
  problems (where ||y - A x|| is far below zeta) need a smaller zeta.  Default 1000 steps (the full DDPM grid).
* ``pigdm``: Song, Vahdat, Mardani, Kautz, "Pseudoinverse-Guided Diffusion Models for Inverse Problems", ICLR
  2023, Eq. 7-8: p(x0 | x_t) ~ N(x0_hat, r_t^2 I) gives p(y | x_t) ~ N(A x0_hat, r_t^2 A A^T + sigma_y^2 I) and
  the guidance grad_{x_t} log p(y | x_t) ~ ((y - A x0_hat)^T (r_t^2 A A^T + sigma_y^2 I)^-1 A d x0_hat/d x_t)^T,
  a vector-Jacobian product through the prior; without noise it is (A^+ y - A^+ A x0_hat)^T d x0_hat/d x_t / r_t^2
  (Eq. 8).  r_t^2 = sigma_t^2 / (1 + sigma_t^2) with the VE noise sigma_t^2 = (1 - abar_t) / abar_t, i.e.
  r_t^2 = 1 - abar_t: the variance of x0 given x_t for data ~ N(0, I) (``data_variance`` tau^2 gives
  tau^2 sigma_t^2 / (tau^2 + sigma_t^2)).  (r_t^2 A A^T + sigma_y^2 I)^-1 is applied in the operator's SVD basis
  (A^T U = V Sigma^T: A^T (r^2 A A^T + s_y^2)^-1 r = V [s_i / (r^2 s_i^2 + s_y^2)] (U^T r)_i); an operator
  without a usable SVD gets A^+ r / r_t^2 when sigma_y = 0.  The guidance enters the DDIM step (Song et al. 2021,
  Eq. 12) as the conditional score: eps <- eps - sqrt(1 - abar_t) g, x0_hat <- x0_hat + (1 - abar_t) /
  sqrt(abar_t) g (``guidance="score"``: the same substitution; for unit-variance Gaussian data the guidance is then
  exact and the sampler draws the exact posterior up to the step discretisation, which the tests check).  For
  sigma_y = 0 this step adds [sqrt(abar_s / abar_t) - c2 / sqrt(1 - abar_t)] v to the unguided DDIM step, v =
  ((A^+ y - A^+ A x0_hat)^T d x0_hat / d x_t)^T = r_t^2 g.  ``guidance="algorithm"`` (default) adds
  sqrt(abar_s abar_t) v instead, eps left as predicted: the paper's Alg. 1 as NVlabs/RED-diff ``algos/pgdm.py``
  (by the paper's authors' group; its ``awd`` branch, ``grad_term_weight`` 1) implements it, i.e. x0_hat <- x0_hat
  + sqrt(abar_t) r_t^2 g (for sigma_y > 0 the same weight on Eq. 7's g).  The weights of g differ by the factor
  abar_t (data_variance 1): "score" trusts d x0_hat / d x_t, whose 1 / sqrt(abar_t) factor must cancel inside a trained
  network at large t; a network that does not cancel it (the zero-shot demo's small prior) sends "score" to
  1e13 within 10 steps, while "algorithm" restores (README table).  Defaults: eta = 0 (RED-diff's
  ``_configs/algo/pgdm.yaml``: awd True, grad_term_weight 1, eta 0), 100 steps (unverified).
* ``diffpir``: Zhu et al., "Denoising Diffusion Models for Plug-and-Play Image Restoration", CVPR-W 2023, Alg. 1:
  x0 = x0_hat(x_t); x0 <- argmin_x ||y - A x||^2 + rho_t ||x - x0||^2 with rho_t = lambda sigma_y^2 / sigma_t^2,
  sigma_t^2 = (1 - abar_t) / abar_t (``operator.prox``); eps_hat = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t);
  x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) (sqrt(1 - zeta) eps_hat + sqrt(zeta) n).  As the release
  (yuanzhi-zhu/DiffPIR, ``main_ddpir_*.py``, ``configs/*.yaml``): sigma_y is floored at 1e-3 (noiseless
  problems), the time grid is "quad" (t = T - 1 - floor(T sqrt(i / (N - 1))), the last one 0: dense near t = 0),
  and the last step returns x0_hat without a data step.  Defaults lambda = 1, zeta = 0.1, 100 steps: the release's
  Gaussian-deblurring config (its SR x4 config: lambda 1, zeta 0.25; inpainting: lambda 1, zeta 1.0, 20 steps).
  Units: here sigma_y, sigma_t and the 1e-3 floor are in the prior's units; the release measures sigma_y (and its
  floor) on [0, 1] images against sigma_t of the [-1, 1] model, so its lambda is lambda / 4 here for [-1, 1]
  priors (``lam=0.25`` reproduces the release's rho_t with its lambda = 1).

``clip_denoised`` clamps x0_hat to the prior's ``data_range`` ([-1, 1] for the image priors; a prior without one,
the Gaussian mixtures, is never clamped): on for DPS, as its release (``configs/diffusion_config.yaml``:
``clip_denoised: True``), off for PiGDM and DiffPIR (their papers' algorithms).
``shape`` is one sample's shape; by default the operator's ``input_shape``, else y's.  Hand-written: the
samplers are a few lines each on top of the prior protocol, and no installed library has them.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from osir.methods.zeroshot.diffusion import ZERO_SHOT_SAMPLERS, eps_from_x0, standard_normal, timesteps, x0_from_eps

__all__ = ["dps", "pigdm", "diffpir", "quad_timesteps", "likelihood_guidance", "sample_shape", "standard_normal",
           "step_pairs", "denoise", "ddpm_posterior"]


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces (also used by smc.py)
# ---------------------------------------------------------------------------------------------------------------

def sample_shape(operator, y: torch.Tensor, shape: Optional[Sequence[int]] = None) -> tuple[int, ...]:
    """[B, *one sample] of x: ``shape`` if given, else the operator's ``input_shape``, else y's sample shape."""
    if shape is None:
        shape = getattr(operator, "input_shape", None) or tuple(y.shape[1:])
    return (y.shape[0], *(int(s) for s in shape))


def uniform(shape: Sequence[int], like: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """U[0, 1) like ``standard_normal``."""
    device = generator.device if generator is not None else like.device
    return torch.rand(tuple(shape), generator=generator, dtype=like.dtype, device=device).to(like.device)


def step_pairs(alphas_cumprod: torch.Tensor, grid: Sequence[int]) -> list[tuple[int, float, float]]:
    """(t, abar_t, abar_s) along a descending grid, s the next grid time (abar_s = 1 after the last)."""
    abar = [float(alphas_cumprod[t]) for t in grid]
    return [(t, abar[i], abar[i + 1] if i + 1 < len(grid) else 1.0) for i, t in enumerate(grid)]


def denoise(prior, x: torch.Tensor, t: int, abar_t: float, clip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0_hat) at x_t; with ``clip`` x0_hat is clamped to the prior's ``data_range`` (where it has one) and
    eps recomputed to match it."""
    eps = prior.eps(x, t)
    x0 = x0_from_eps(x, eps, abar_t)
    data_range = getattr(prior, "data_range", None)
    if clip and data_range is not None:
        x0 = x0.clamp(*data_range)
        eps = eps_from_x0(x, x0, abar_t)
    return eps, x0


def ddpm_posterior(x0: torch.Tensor, x: torch.Tensor, abar_t: float, abar_s: float) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_s | x_t, x0) for the (respaced) chain: alpha = abar_t / abar_s, beta = 1 - alpha,
    mean = sqrt(abar_s) beta / (1 - abar_t) x0 + sqrt(alpha) (1 - abar_s) / (1 - abar_t) x_t,
    variance = (1 - abar_s) / (1 - abar_t) beta (Ho et al. 2020, Eq. 7)."""
    alpha = abar_t / abar_s
    beta = 1 - alpha
    mean = (math.sqrt(abar_s) * beta / (1 - abar_t)) * x0 + (math.sqrt(alpha) * (1 - abar_s) / (1 - abar_t)) * x
    return mean, (1 - abar_s) / (1 - abar_t) * beta


def x0_variance(abar_t: float, data_variance: float = 1.0) -> float:
    """r_t^2 = Var[x0 | x_t] for data ~ N(., tau^2 I): tau^2 sigma_t^2 / (tau^2 + sigma_t^2), sigma_t^2 =
    (1 - abar_t) / abar_t; 1 - abar_t for tau^2 = 1 (PiGDM), sigma_t^2 for tau^2 = inf."""
    sigma2 = (1 - abar_t) / abar_t
    if math.isinf(data_variance):
        return sigma2
    return data_variance * sigma2 / (data_variance + sigma2)


def likelihood_guidance(operator, residual: torch.Tensor, r2: float, sigma_y: float) -> torch.Tensor:
    """A^T (r2 A A^T + sigma_y^2 I)^-1 residual, image-shaped (PiGDM's vector before the Jacobian of x0_hat).

    In the SVD basis: V [s_i (U^T residual)_i / (r2 s_i^2 + sigma_y^2)] over the kept singular values s_i, 0 where
    the denominator is 0 (the part of the residual outside A's range is annihilated by A^T).  Operators without a
    usable SVD: A^+ residual / r2 when sigma_y = 0."""
    if not getattr(operator, "is_linear", False):
        raise ValueError("PiGDM's guidance needs a linear operator (A^T, SVD or A^+); use DPS for non-linear A")
    try:
        s = operator.singulars(like=residual) if getattr(operator, "has_svd", False) else None
    except (ValueError, NotImplementedError):
        s = None
    if s is None:
        if sigma_y > 0:
            raise ValueError(f"PiGDM with sigma_y > 0 needs the operator's SVD; {type(operator).__name__} has none")
        return operator.pinv(residual) / r2
    denominator = r2 * s * s + sigma_y ** 2
    weight = torch.where(denominator > 0, s / torch.where(denominator > 0, denominator, torch.ones_like(s)),
                         torch.zeros_like(s))
    coefficients = operator.ut(residual)[:, :s.numel()] * weight
    return operator.v(F.pad(coefficients, (0, operator.input_dim - s.numel())))


def quad_timesteps(T: int, steps: int) -> list[int]:
    """DiffPIR's "quad" grid: t_i = T - 1 - floor(T sqrt(i / (N - 1))), i = 0 .. N - 1, the last set to 0
    (the release's seq = int(sqrt(linspace(0, T^2, N))), seq[-1] -= 1, t = T - 1 - seq); repeats dropped."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be 1 to T={T}, got {steps}")
    if steps == 1:
        return [T - 1]
    offsets = [int(math.sqrt(i / (steps - 1)) * T) for i in range(steps)]
    offsets[-1] = T - 1
    grid = [T - 1 - min(o, T - 1) for o in offsets]
    return sorted(set(grid), reverse=True)


def check_steps(steps) -> int:
    """``steps`` as a positive int, or ValueError."""
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return int(steps)


# ---------------------------------------------------------------------------------------------------------------
# DPS
# ---------------------------------------------------------------------------------------------------------------

@ZERO_SHOT_SAMPLERS.register(name="dps")
def dps(prior, operator, y: torch.Tensor, *, steps: int = 1000, generator: Optional[torch.Generator] = None,
        zeta: float = 1.0, clip_denoised: bool = True, shape: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Diffusion Posterior Sampling (Chung et al. 2023, Alg. 1): DDPM steps, each followed by
    x_s <- x_s - zeta grad_{x_t} ||y - A(x0_hat(x_t))|| (module docstring); returns x after the last step."""
    steps = check_steps(steps)
    if zeta < 0:
        raise ValueError(f"zeta must be >= 0, got {zeta}")
    alphas_cumprod = prior.alphas_cumprod
    x = standard_normal(sample_shape(operator, y, shape), y, generator)
    for t, abar_t, abar_s in step_pairs(alphas_cumprod, timesteps(alphas_cumprod.numel(), steps)):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            _, x0 = denoise(prior, x, t, abar_t, clip_denoised)
            residual = (y - operator(x0)).reshape(x.shape[0], -1)
            norms = residual.pow(2).sum(1).clamp_min(torch.finfo(x.dtype).tiny).sqrt()
            gradient, = torch.autograd.grad(norms.sum(), x)
        mean, variance = ddpm_posterior(x0.detach(), x.detach(), abar_t, abar_s)
        if variance > 0:
            mean = mean + math.sqrt(variance) * standard_normal(x.shape, x, generator)
        x = mean - zeta * gradient
    return x.detach()


# ---------------------------------------------------------------------------------------------------------------
# PiGDM
# ---------------------------------------------------------------------------------------------------------------

@ZERO_SHOT_SAMPLERS.register(name="pigdm")
def pigdm(prior, operator, y: torch.Tensor, *, steps: int = 100, generator: Optional[torch.Generator] = None,
          eta: float = 0.0, data_variance: float = 1.0, guidance: str = "algorithm", clip_denoised: bool = False,
          shape: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Pseudoinverse-guided diffusion (Song et al. 2023, Eq. 7-8) in DDIM steps; ``guidance``: "algorithm" (the
    weight of the paper's Alg. 1 as its authors' code applies it) or "score" (the conditional score's own
    weight, exact for Gaussian data) (module docstring)."""
    steps = check_steps(steps)
    if guidance not in ("algorithm", "score"):
        raise ValueError(f"guidance must be 'algorithm' or 'score', got {guidance!r}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if not data_variance > 0:
        raise ValueError(f"data_variance must be > 0, got {data_variance}")
    if not getattr(operator, "is_linear", False):
        raise ValueError("PiGDM needs a linear operator (A^T, SVD or A^+); use DPS for non-linear A")
    sigma_y = float(operator.noise_sigma)
    alphas_cumprod = prior.alphas_cumprod
    x = standard_normal(sample_shape(operator, y, shape), y, generator)
    for t, abar_t, abar_s in step_pairs(alphas_cumprod, timesteps(alphas_cumprod.numel(), steps)):
        r2 = x0_variance(abar_t, data_variance)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            eps, x0 = denoise(prior, x, t, abar_t, clip_denoised)
            vector = likelihood_guidance(operator, (y - operator(x0.detach())).detach(), r2, sigma_y)
            score, = torch.autograd.grad(x0, x, grad_outputs=vector)
        if guidance == "score":
            eps = eps.detach() - math.sqrt(1 - abar_t) * score
            x0 = x0.detach() + (1 - abar_t) / math.sqrt(abar_t) * score
        else:
            eps, x0 = eps.detach(), x0.detach() + math.sqrt(abar_t) * r2 * score
        c1 = eta * math.sqrt(max((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s), 0.0))
        c2 = math.sqrt(max(1 - abar_s - c1 ** 2, 0.0))
        x = math.sqrt(abar_s) * x0 + c2 * eps
        if c1 > 0:
            x = x + c1 * standard_normal(x.shape, x, generator)
    return x.detach()


# ---------------------------------------------------------------------------------------------------------------
# DiffPIR
# ---------------------------------------------------------------------------------------------------------------

@ZERO_SHOT_SAMPLERS.register(name="diffpir")
def diffpir(prior, operator, y: torch.Tensor, *, steps: int = 100, generator: Optional[torch.Generator] = None,
            lam: float = 1.0, zeta: float = 0.1, skip_type: str = "quad", sigma_floor: float = 1e-3,
            clip_denoised: bool = False, shape: Optional[Sequence[int]] = None) -> torch.Tensor:
    """DiffPIR (Zhu et al. 2023, Alg. 1): denoise, proximal data step with rho_t = lam sigma_y^2 / sigma_t^2,
    re-noise with a fraction ``zeta`` of fresh noise (module docstring)."""
    steps = check_steps(steps)
    if not 0 <= zeta <= 1:
        raise ValueError(f"zeta must be in [0, 1], got {zeta}")
    if not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    if not callable(getattr(operator, "prox", None)):
        raise ValueError(f"DiffPIR's data step needs operator.prox (a linear operator); "
                         f"{type(operator).__name__} has none")
    grids = {"quad": quad_timesteps, "uniform": timesteps}
    if skip_type not in grids:
        raise ValueError(f"skip_type must be one of {sorted(grids)}, got {skip_type!r}")
    sigma_y = max(float(operator.noise_sigma), float(sigma_floor))
    if sigma_y <= 0:
        raise ValueError("DiffPIR needs sigma_y > 0 or sigma_floor > 0 (rho_t = lam sigma_y^2 / sigma_t^2)")
    alphas_cumprod = prior.alphas_cumprod
    x = standard_normal(sample_shape(operator, y, shape), y, generator)
    pairs = step_pairs(alphas_cumprod, grids[skip_type](alphas_cumprod.numel(), steps))
    with torch.no_grad():
        for i, (t, abar_t, abar_s) in enumerate(pairs):
            _, x0 = denoise(prior, x, t, abar_t, clip_denoised)
            if i == len(pairs) - 1:
                return x0
            rho = lam * sigma_y ** 2 * abar_t / (1 - abar_t)
            x0 = operator.prox(x0, y, rho)
            eps = eps_from_x0(x, x0, abar_t)
            noise = standard_normal(x.shape, x, generator)
            x = math.sqrt(abar_s) * x0 + math.sqrt(1 - abar_s) * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * noise)
    return x
