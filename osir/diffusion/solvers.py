"""diffusers' VP solvers as samplers of the mean-reverting SDE, through the change of variables of
``osir.diffusion.vp`` (y = (x - mu) / lambda, alphabar_t = exp(-2 thetabar_t)).

Each is registered in ``SAMPLERS`` with the signature of ``osir.diffusion.samplers``

    sampler(model, x, mu, sde, timesteps, generator=None, callback=None, extra_args=None, **extras) -> x_0

so ``method.sampler`` / ``method.sample_steps`` (and ``restore(..., sampler=, steps=)``) pick them for IR-SDE,
Refusion and DA-CLIP's universal IR. ``timesteps`` = [T = t_0 > ... > t_N = 0] as ``sde.timesteps(N)`` gives:
the scheduler is built on that run's N-step chain (``vp.SubChain``) and runs ``set_timesteps(N)`` on it,
so it calls the network at osir's steps t_0 .. t_{N-1} and ends at t = 0 (alphabar = 1).

=============  =====================================================  =====  =============  ==========
name           diffusers scheduler (settings)                         order  NFE (N steps)  stochastic
=============  =====================================================  =====  =============  ==========
ddim           DDIMScheduler (eta: 0 default; 1 = DDPM posterior)     1.00   N              if eta > 0
dpmpp_2m       DPMSolverMultistepScheduler (dpmsolver++, order 2)     1.97   N              no
dpmpp_3m       ThirdOrderMultistepScheduler (dpmsolver++, order 3)    3.04*  N              no
dpmpp_2m_sde   DPMSolverMultistepScheduler (sde-dpmsolver++, order 2) -      N              yes
unipc          UniPCMultistepScheduler (bh2, order 2 + corrector)     2.89   N              no
deis           DEISMultistepScheduler (log-rho, order 2)              1.93   N              no
heun           HeunDiscreteScheduler (Karras et al. 2022, Alg. 1)     2.18   2N - 1         no
=============  =====================================================  =====  =============  ==========

order: the slope of log error against log step size measured on the exact flow of Gaussian data
(tests/test_vp_samplers.py; osir's Euler ``ode``: 0.86). *diffusers 0.42's third-order multistep update
weights x0'' by half its Taylor coefficient and measures 2.40 (second order asymptotically);
``ThirdOrderMultistepScheduler`` adds the missing half (below).
The order holds on [t_min, T]; osir's grid ``sde.timesteps(N)`` ends with the step t_{N-1} -> 0, which every
solver takes as "return the x_0 estimate" and whose error ~ 1 - alphabar(t_{N-1}) depends on the schedule
near 0 (cosine, the releases': ~ (T/N)^2-3, not limiting; constant theta: ~ T/N, every solver first order).

Common settings: ``prediction_type='epsilon'`` (the networks predict eps of x_t, which is eps of y_t),
``timestep_spacing='trailing'`` (index k of the chain is the k-th grid step), no ``clip_sample`` /
``thresholding`` (they would clamp y, not the image), diffusers' defaults otherwise (``lower_order_final``:
the multistep solvers drop to lower order over the last steps of runs shorter than 15 steps; DPM-Solver++
and UniPC step to ``final_sigmas_type='zero'``). DEIS in diffusers 0.42 ends at its chain's lowest noise
level (no ``final_sigmas_type``); its last step t_{N-1} -> 0 is therefore the DDIM step to alphabar = 1,
which returns the step's x_0 estimate, as DPM-Solver++'s and UniPC's last step do. Heun is a VE solver:
its state is y / sqrt(alphabar) (``scale_model_input`` gives y back), as diffusers' Heun expects.

Extras: ``clip_denoised=(lo, hi)`` clamps each step's x_0 estimate in image units (``vp.clamped_noise``);
``ddim`` takes ``eta`` (DDIM's; noise drawn from ``generator``), ``dpmpp_2m_sde`` draws its noise from
``generator``; no sampler draws noise on its last step (its coefficient is 0 there).

Hand-written: the loop that feeds a diffusers scheduler (the state conversion, the osir step of each network
call, the noise draws) and the one term ``ThirdOrderMultistepScheduler`` adds to diffusers' 3M update; the
solver steps are diffusers'.
"""
from __future__ import annotations

import torch
from diffusers import (DDIMScheduler, DEISMultistepScheduler, DPMSolverMultistepScheduler, HeunDiscreteScheduler,
                       UniPCMultistepScheduler)

from osir.core.registry import SAMPLERS
from osir.diffusion.sde import MeanRevertingSDE, randn_like
from osir.diffusion.vp import SubChain, clamped_noise, from_vp, to_vp

class ThirdOrderMultistepScheduler(DPMSolverMultistepScheduler):
    """DPM-Solver++(3M) with the second-derivative term at its full weight.

    The exact step of the data-prediction ODE is x_t = (sigma_t / sigma_s) x_s + alpha_t sum_k psi_k(h)
    x0^(k)(lambda_s) with psi_k(h) = int_0^h e^-(h-u) u^k / k! du (Lu et al. 2022b, Eq. 9 expanded in lambda).
    diffusers 0.42's ``multistep_dpm_solver_third_order_update`` (the original DPM-Solver++ code's formula)
    multiplies its D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 x0'' / 2 by psi_2 / h^2, so x0'' enters with psi_2 / 2
    instead of psi_2 and the update is second order (tests/test_vp_samplers.py measures 2.40).  This subclass
    keeps diffusers' update and adds the missing alpha_t psi_2 x0'' / 2, x0'' the second divided difference of
    the three stored x0 estimates over lambda.  Hand-written: the one term no installed library has."""

    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, noise=None, **kwargs):
        x_t = super().multistep_dpm_solver_third_order_update(model_output_list, *args, sample=sample, noise=noise,
                                                               **kwargs)
        if self.config.algorithm_type != "dpmsolver++":     # osir's dpmpp_3m uses dpmsolver++ only; the other
            return x_t                                      # third-order variants keep diffusers' update
        lam = []
        for k in (1, 0, -1, -2):                    # t, s0, s1, s2
            alpha, sigma = self._sigma_to_alpha_sigma_t(self.sigmas[self.step_index + k])
            lam.append(torch.log(alpha) - torch.log(sigma))
        h, h0, h1 = lam[0] - lam[1], lam[1] - lam[2], lam[2] - lam[3]
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        second = 2 * ((m0 - m1) / h0 - (m1 - m2) / h1) / (h0 + h1)          # x0'' at lambda_s0
        psi2 = h * h / 2 - h - torch.expm1(-h)                               # int_0^h e^-(h-u) u^2 / 2 du
        alpha_t, _ = self._sigma_to_alpha_sigma_t(self.sigmas[self.step_index + 1])
        return x_t + (alpha_t * psi2 / 2) * second


SCHEDULERS = {
    "ddim": (DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": True}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                               "final_sigmas_type": "zero"}),
    "dpmpp_3m": (ThirdOrderMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 3,
                                                "final_sigmas_type": "zero"}),
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2,
                                                   "final_sigmas_type": "zero"}),
    "unipc": (UniPCMultistepScheduler, {"solver_order": 2, "solver_type": "bh2", "final_sigmas_type": "zero"}),
    "deis": (DEISMultistepScheduler, {"solver_order": 2}),
    "heun": (HeunDiscreteScheduler, {}),
}
STOCHASTIC = {"dpmpp_2m_sde"}


def build_scheduler(name: str, chain: SubChain):
    """The diffusers scheduler ``name`` on ``chain`` with ``set_timesteps(len(chain))`` done."""
    cls, settings = SCHEDULERS[name]
    scheduler = cls(num_train_timesteps=len(chain), trained_betas=chain.betas.numpy(), prediction_type="epsilon",
                    timestep_spacing="trailing", **settings)
    # diffusers holds trained_betas in float32 and multiplies 1 - beta up; a chain of few steps has betas
    # near 1, where 1 - beta keeps few digits (one step: alphabar off by 1e-3 relative). The exact alphabar
    # (float32, as diffusers holds it) replaces the product before set_timesteps, the one reader of it
    # besides DDIM's step.
    scheduler.alphas_cumprod = chain.alphas_cumprod.to(torch.float32)
    scheduler.set_timesteps(len(chain))
    return scheduler


def _state_scale(scheduler) -> float:
    """sample = y * scale at the scheduler's current step: 1 for the VP schedulers, sqrt(1 + sigma^2) =
    1 / sqrt(alphabar) for Heun, whose state is the VE variable y / sqrt(alphabar)."""
    if isinstance(scheduler, HeunDiscreteScheduler):
        return float((1 + scheduler.sigmas[scheduler.step_index or 0] ** 2) ** 0.5)
    return 1.0


def solve(name: str, model, x: torch.Tensor, mu: torch.Tensor, sde: MeanRevertingSDE, timesteps: list[int],
          generator: torch.Generator | None = None, callback=None, extra_args: dict | None = None, *,
          clip_denoised: tuple[float, float] | None = None, eta: float = 0.0) -> torch.Tensor:
    """Run diffusers' scheduler ``name`` (a key of ``SCHEDULERS``) from x = x_{t_0} down to x_0."""
    chain = SubChain(sde, timesteps)
    scheduler = build_scheduler(name, chain)
    extra_args = extra_args or {}
    ends_noisy = isinstance(scheduler, DEISMultistepScheduler)    # its last step: the DDIM step to alphabar = 1
    sample = to_vp(x, mu, sde) * _state_scale(scheduler)
    last = len(scheduler.timesteps) - 1
    for i, index in enumerate(scheduler.timesteps):
        t = chain.step(index)
        xt = from_vp(scheduler.scale_model_input(sample, index), mu, sde)
        noise = model(xt, mu, t, **extra_args)
        x0 = None
        if clip_denoised is not None:
            noise, x0 = clamped_noise(noise, xt, mu, sde, t, clip_denoised)
        elif callback is not None or (ends_noisy and i == last):
            x0 = sde.x0_from_noise(xt, mu, noise, t)
        if ends_noisy and i == last:
            sample = to_vp(x0, mu, sde)
        else:
            kwargs = {}
            if name in STOCHASTIC or (name == "ddim" and eta > 0):
                kwargs["variance_noise"] = randn_like(x, generator) if i < last else torch.zeros_like(x)
            if name == "ddim":
                kwargs["eta"] = eta
            sample = scheduler.step(noise, index, sample, **kwargs).prev_sample
        if callback is not None:
            callback({"i": i, "t": t, "x": from_vp(sample / _state_scale(scheduler), mu, sde), "x0": x0})
    return from_vp(sample, mu, sde)


@SAMPLERS.register(name="ddim")
@torch.no_grad()
def sample_ddim(model, x, mu, sde, timesteps, generator=None, callback=None, extra_args=None, *,
                clip_denoised=None, eta: float = 0.0):
    """DDIM (Song et al. 2021, Eq. 12) by diffusers' ``DDIMScheduler``: eta 0 deterministic; eta 1 is the DDPM
    posterior of the mapped chain, i.e. IR-SDE's posterior sampler (Eq. 8-10) step for step on equal draws."""
    return solve("ddim", model, x, mu, sde, timesteps, generator, callback, extra_args, clip_denoised=clip_denoised,
                 eta=eta)


@SAMPLERS.register(name="dpmpp_2m")
@torch.no_grad()
def sample_dpmpp_2m(model, x, mu, sde, timesteps, generator=None, callback=None, extra_args=None, *,
                    clip_denoised=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) by diffusers' ``DPMSolverMultistepScheduler``."""
    return solve("dpmpp_2m", model, x, mu, sde, timesteps, generator, callback, extra_args, clip_denoised=clip_denoised)


@SAMPLERS.register(name="dpmpp_3m")
@torch.no_grad()
def sample_dpmpp_3m(model, x, mu, sde, timesteps, generator=None, callback=None, extra_args=None, *,
                    clip_denoised=None):
    """DPM-Solver++ third-order multistep: diffusers' ``DPMSolverMultistepScheduler`` (``solver_order=3``) with
    its x0'' term at full weight (``ThirdOrderMultistepScheduler``); order 3.04 on the Gaussian oracle
    (tests/test_vp_samplers.py, which also checks that diffusers' own update still has the half weight the
    subclass completes: a diffusers that fixed it would fail there, not silently)."""
    return solve("dpmpp_3m", model, x, mu, sde, timesteps, generator, callback, extra_args, clip_denoised=clip_denoised)


@SAMPLERS.register(name="dpmpp_2m_sde")
@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, mu, sde, timesteps, generator=None, callback=None, extra_args=None, *,
                        clip_denoised=None):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022) by diffusers' ``DPMSolverMultistepScheduler``
    (``algorithm_type='sde-dpmsolver++'``); its noise is drawn from ``generator``."""
    return solve("dpmpp_2m_sde", model, x, mu, sde, timesteps, generator, callback, extra_args,
                 clip_denoised=clip_denoised)


@SAMPLERS.register(name="unipc")
@torch.no_grad()
def sample_unipc(model, x, mu, sde, timesteps, generator=None, callback=None, extra_args=None, *,
                 clip_denoised=None):
    """UniPC (Zhao et al. 2023; UniP-2 predictor with the UniC corrector, B(h) = bh2) by diffusers'
    ``UniPCMultistepScheduler``."""
    return solve("unipc", model, x, mu, sde, timesteps, generator, callback, extra_args, clip_denoised=clip_denoised)


@SAMPLERS.register(name="deis")
@torch.no_grad()
def sample_deis(model, x, mu, sde, timesteps, generator=None, callback=None, extra_args=None, *,
                clip_denoised=None):
    """DEIS (Zhang & Chen 2023, log-rho multistep, order 2) by diffusers' ``DEISMultistepScheduler``."""
    return solve("deis", model, x, mu, sde, timesteps, generator, callback, extra_args, clip_denoised=clip_denoised)


@SAMPLERS.register(name="heun")
@torch.no_grad()
def sample_heun(model, x, mu, sde, timesteps, generator=None, callback=None, extra_args=None, *,
                clip_denoised=None):
    """Heun's method on the probability-flow ODE (Karras et al. 2022, Alg. 1) by diffusers'
    ``HeunDiscreteScheduler``: 2N - 1 network calls for N steps (the last step is an Euler step to sigma 0)."""
    return solve("heun", model, x, mu, sde, timesteps, generator, callback, extra_args, clip_denoised=clip_denoised)
