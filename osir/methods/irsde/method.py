"""IR-SDE training and restoration (Luo et al., "Image Restoration with Mean-Reverting
Stochastic Differential Equations", ICML 2023).

Training uses the paper's maximum-likelihood objective (Eq. 11-12): the network's expected
reverse step x_t - dx_theta (Euler-Maruyama drift with the predicted score) should land on the
optimal reverse state x*_{t-1}, the mean of p(x_{t-1} | x_t, x_0).  Restoration starts from
x_T = mu + lambda * n (the stationary state, as the release's ``noise_state``) with mu the
(upsampled) LQ and runs one of the registered samplers.
"""
from __future__ import annotations

import inspect
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from osir.diffusion import MeanRevertingSDE
from osir.diffusion.sde import randn_like
from osir.core.method import Method
from osir.core.options import component
from osir.core.registry import ARCHS, METHODS, SAMPLERS, OptionsError


@METHODS.register()
class IRSDE(Method):
    """Args:
        network: the noise network (``ConditionalUNet``), registered arch spec.
        max_sigma: lambda in 8-bit units (the paper: 10 for deraining/deblurring/SR, 30 for
            inpainting/denoising-like tasks); images are in [0, 1], so lambda = max_sigma / 255.
        T, schedule, eps: the SDE's discretisation (see ``MeanRevertingSDE``).
        loss: 'l1' or 'l2' distance in the maximum-likelihood objective.
        sampler: a registered sampler: osir's 'posterior', 'sde', 'ode', or a diffusers solver on the VP
            change of variables ('ddim', 'dpmpp_2m', 'dpmpp_3m', 'dpmpp_2m_sde', 'unipc', 'deis', 'heun').
        sample_steps: number of reverse steps at restoration (default T).
        eta: the re-injected noise scale of the samplers that take one (``posterior``: 1 by default, the
            paper's sampler; ``ddim``: 0 by default); null: the sampler's own default.
        clip_denoised: clamp each step's x_0 estimate to [0, 1] in image units (every sampler that takes
            ``clip_denoised``: ``posterior`` and diffusers' solvers of ``osir.diffusion.solvers``).
        upscale: LQ -> GT scale; mu is the bicubic-upsampled LQ (IR-SDE's SR setting).
        last_step_noise: the 'sde' sampler adds its noise sigma_1 sqrt(dt) z on the last step
            t -> 0 too, as the release's reverse SDE does (default); false: a noiseless last step.
            The 'posterior' and 'ode' samplers add no noise on their last step either way.
    """

    def __init__(self, network: component(ARCHS), max_sigma: float = 10.0, T: int = 100,
                 schedule: Literal["cosine", "linear", "constant"] = "cosine", eps: float = 0.005,
                 loss: Literal["l1", "l2"] = "l1", sampler: str = "posterior", sample_steps: Optional[int] = None,
                 eta: Optional[float] = None, clip_denoised: bool = False, upscale: int = 1,
                 last_step_noise: bool = True):
        super().__init__()
        self.sde = MeanRevertingSDE(max_sigma / 255.0, T, schedule, eps)
        self.sampler_name = sampler
        self.sampler = SAMPLERS.get(sampler, "method.sampler")
        # the settings a sampler takes when its signature has them (None / the default: the sampler's own)
        self.sampler_settings = {"eta": eta, "clip_denoised": (0.0, 1.0) if clip_denoised else None,
                                 "last_step_noise": None if last_step_noise else False}
        self.sampler_extras = self.extras_for(self.sampler, sampler, strict=True)
        self.timesteps = self.sde.timesteps(sample_steps)
        self.max_steps, self.sample_steps = self.sde.T, len(self.timesteps) - 1
        self.loss, self.scale = loss, upscale
        self.networks["g"] = ARCHS.build(network, "method.network")
        # no padding by the inference layer: the network reflect-pads the state at every call, as the
        # released code does (padding the LQ once would let the padded border evolve on its own)
        self.size_multiple = 1

    def condition(self, lq: torch.Tensor, size=None) -> torch.Tensor:
        """mu: the LQ, bicubic-upsampled to the output size when upscale > 1."""
        if self.scale == 1 and size is None:
            return lq
        size = size or (lq.shape[-2] * self.scale, lq.shape[-1] * self.scale)
        return F.interpolate(lq, size=size, mode="bicubic", align_corners=False)

    def matching_loss(self, net, gt: torch.Tensor, mu: torch.Tensor, inputs: dict | None = None) -> torch.Tensor:
        """The maximum-likelihood objective at random t ~ U{1..T} (IR-SDE Eq. 12)."""
        predicted, optimal = self.matching_states(net, gt, mu, inputs)
        return F.l1_loss(predicted, optimal) if self.loss == "l1" else F.mse_loss(predicted, optimal)

    def matching_states(self, net, gt: torch.Tensor, mu: torch.Tensor, inputs: dict | None = None):
        """(the network's expected reverse state x_t - dx_theta, the optimal x*_{t-1}) at random
        t ~ U{1..T}: the two sides of IR-SDE's Eq. 12."""
        sde = self.sde
        t = torch.randint(1, sde.T + 1, (gt.shape[0],), device=gt.device)
        xt = sde.q_sample(gt, mu, t, randn_like(gt))
        with self.autocast():
            noise = net(xt, mu, t, **(inputs or {}))
        score = sde.score_from_noise(noise.float(), t)
        predicted = xt - sde.reverse_sde_drift(xt, mu, score, t, t - 1)
        optimal = sde.posterior_mean(xt, gt, mu, t, t - 1)
        return predicted, optimal

    def training_step(self, batch: dict) -> dict[str, float]:
        gt = batch["gt"]
        mu = self.condition(batch["lq"], gt.shape[-2:])
        loss = self.matching_loss(self.networks["g"], gt, mu, self.network_inputs(batch))
        self.optimize("g", loss)
        return {"l_ml": loss.detach().item()}

    def extras_for(self, fn, name: str, strict: bool = False) -> dict:
        """The method's sampler settings (``eta``, ``clip_denoised``, ``last_step_noise``) that the sampler
        ``fn`` takes; ``strict``: a setting given that it does not take is an ``OptionsError`` (the configured
        sampler), else it is left out (a sampler asked for by one call)."""
        accepted = inspect.signature(fn).parameters
        extras = {}
        for key, value in self.sampler_settings.items():
            if value is None:
                continue
            if key in accepted:
                extras[key] = value
            elif strict:
                raise OptionsError(f"method.{key} does not apply to the sampler '{name}' (samplers that take it: "
                                   f"{', '.join(n for n in SAMPLERS.names() if key in _parameters(n))}); "
                                   f"--set method.{key}=null to sample with '{name}'")
        return extras

    def sampling(self, sampler: str | None = None, steps: int | None = None) -> tuple:
        """(sampler function, timesteps, sampler extras) of one restoration: the configured ones, or the
        ``sampler`` / ``steps`` of this call (settings per call, as k-diffusion's samplers take theirs; the
        method is not changed, so one method object serves several threads).  A sampler other than the
        configured one gets the method's settings it takes (``clip_denoised`` clamps x_0 in image units
        for every sampler that takes it; ``eta`` where the sampler has one)."""
        fn, extras = self.sampler, self.sampler_extras
        if sampler is not None and sampler != self.sampler_name:
            fn = SAMPLERS.get(sampler, "sampler")
            extras = self.extras_for(fn, sampler)
        timesteps = self.timesteps
        if steps is not None:
            if not 1 <= int(steps) <= self.sde.T:
                raise OptionsError(f"steps: this model samples 1 to T={self.sde.T} steps, got {steps}")
            timesteps = self.sde.timesteps(int(steps))
        return fn, timesteps, extras

    def sample(self, model, mu: torch.Tensor, batch: dict, generator: torch.Generator | None,
               sampler: str | None = None, steps: int | None = None) -> torch.Tensor:
        """Run the reverse process from x_T = mu + lambda * n (``sde.prior_sample``) down to x_0."""
        fn, timesteps, extras = self.sampling(sampler, steps)
        return fn(model, self.sde.prior_sample(mu, generator), mu, self.sde, timesteps, generator,
                  extra_args=self.network_inputs(batch), **extras)

    def restore(self, batch: dict, generator: torch.Generator | None = None, *, sampler: str | None = None,
                steps: int | None = None) -> torch.Tensor:
        """Sample from x_T = mu + lambda * n down to x_0 with the configured sampler and steps, or this
        call's (the engine runs this in eval / no_grad)."""
        net = self.net("g")
        mu = self.condition(batch["lq"])

        def model(x, mu_, t, **inputs):
            with self.autocast():
                return net(x, mu_, t, **inputs).float()

        return self.sample(model, mu, batch, generator, sampler, steps)

    def network_inputs(self, batch: dict) -> dict:
        """The noise network's inputs beyond (x_t, mu, t), from the batch (none for IR-SDE; a
        subclass returns e.g. DA-CLIP's embeddings); passed to the samplers as ``extra_args``."""
        return {}


def _parameters(sampler: str) -> set[str]:
    """The keyword arguments of the registered sampler ``sampler``."""
    return set(inspect.signature(SAMPLERS.get(sampler)).parameters)
