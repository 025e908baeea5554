"""Zero-shot restoration as an osir method (issue 25 point 5): an unconditional diffusion prior p(x), a known
degradation y = A x + sigma_y n, and a registered zero-shot sampler that draws x ~ p(x | y) proportional to
p(y | x) p(x) (DPS, Chung et al. 2023; PiGDM, Song et al. 2023; DDRM, Kawar et al. 2022; DDNM, Wang et al. 2023;
DiffPIR, Zhu et al. 2023; TDS, Wu et al. 2023: ``ZERO_SHOT_SAMPLERS``).  No pairs: the prior is an ADM U-Net
(``adm.py``: a released checkpoint, ``prior_path``, or one trained here), and the task only enters at sampling
time, so one prior restores every task of ``measurement.Task``.

Training (optional) fits the prior alone, to clean images (the data set's ``gt``), by DDPM's simplified
objective (Ho et al. 2020, Eq. 14): E ||eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t)||^2 with t
uniform over the T steps of the linear beta schedule (the releases': 1e-4 to 0.02 over 1000 steps); x_0 = 2 gt - 1.

Restoration reads the measurement from the batch's LQ (``measurement.measurement_from_image``: the image that
``ZeroShotMeasurement`` renders, e.g. the low-resolution image for super-resolution), builds the operator for the
output size, and runs the sampler in [-1, 1]; the result is mapped back to [0, 1].  The operator is the one the
batch's items carry (a test set made by ``ZeroShotMeasurement``: each set restores with the operator that made
it), else the configured ``task``.
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.nn.functional as F

from osir.core.method import Method
from osir.core.options import component
from osir.core.registry import ARCHS, METHODS, ZERO_SHOT_SAMPLERS, OptionsError
from osir.methods.zeroshot import files, guidance_samplers, smc, svd_samplers  # noqa: F401  (register them)
from osir.methods.zeroshot.adm import load_adm
from osir.methods.zeroshot.diffusion import linear_alphas_cumprod
from osir.methods.zeroshot.measurement import TASKS, Measurement, Task, measurement_from_image

#: the default prior: the released FFHQ 256 model's architecture (DPS's ``ffhq_10m.pt``)
FFHQ_ADM = {"type": "ADMUNet", "image_size": 256, "num_channels": 128, "num_res_blocks": 1, "learn_sigma": True,
            "attention_resolutions": 16, "num_heads": 4, "num_head_channels": 64, "use_scale_shift_norm": True,
            "resblock_updown": True}


#: per task, the settings of the authors' release configs where they differ from the sampler's own default (a
#: value in ``method.sampler_settings`` wins): DPS2022/diffusion-posterior-sampling ``configs/*_config.yaml``
#: (``scale`` 0.3 for x4 super-resolution and Gaussian / motion deblurring, 0.5 for inpainting; applied to the x2
#: tasks and both inpainting masks too), yuanzhi-zhu/DiffPIR ``configs/*.yaml`` (``lambda_`` 1, which is lam 0.25
#: for osir's [-1, 1] priors (``guidance_samplers``); ``zeta`` 0.25 for SR x4 (``sisr.yaml``; its
#: ``main_ddpir_sisr.py`` sets 0.1), 1.0 for inpainting, 0.1 for deblurring = the sampler's default)
_SR = ("sr2_bicubic", "sr2_pool", "sr4_bicubic", "sr4_pool")
_INPAINT = ("inpaint_box", "inpaint_random")
TASK_SETTINGS = {
    "dps": {**{t: {"zeta": 0.3} for t in (*_SR, "gaussian_blur", "motion_blur")},
            **{t: {"zeta": 0.5} for t in _INPAINT}},
    "diffpir": {**{t: {"lam": 0.25} for t in TASKS}, **{t: {"lam": 0.25, "zeta": 0.25} for t in _SR},
                **{t: {"lam": 0.25, "zeta": 1.0} for t in _INPAINT}},
}
#: per task, the release configs' step count where it differs from the sampler's default (``method.sample_steps``
#: or a call's ``steps`` win): DiffPIR's ``inpaint.yaml`` ``iter_num`` 20 (these tables and the samplers' own
#: release defaults are checked against the configs' values: tests/fixtures/release_configs/zeroshot_samplers.json)
TASK_STEPS = {"diffpir": {t: 20 for t in _INPAINT}}


class NetworkPrior:
    """The samplers' prior protocol (``diffusion.py``) over a noise network (an ADM U-Net, or a diffusers
    UNet2DModel through ``diffusers_prior.DiffusersUNetPrior``): ``alphas_cumprod`` and ``eps(x, t)``, the first
    three output channels (the releases' learned-variance channels are not used), and ``data_range``, the
    images' [-1, 1] (what a sampler's clamp of x0 estimates clamps to)."""

    data_range = (-1.0, 1.0)

    def __init__(self, network: torch.nn.Module, alphas_cumprod: torch.Tensor, autocast=None):
        self.network, self.alphas_cumprod = network, alphas_cumprod
        self.autocast = autocast

    def eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        with self.autocast() if self.autocast is not None else torch.autocast(x.device.type, enabled=False):
            out = self.network(x, torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long))
        return out[:, :3].to(x.dtype)


@METHODS.register(name="ZeroShot")
class ZeroShot(Method):
    """Args:
        prior: the ADM architecture (``ADMUNet``'s arguments; default the FFHQ 256 release's).
        prior_path: a released ADM checkpoint (``ffhq_10m.pt``, ``256x256_diffusion_uncond.pt``: plain state
            dicts, loaded strictly without running pickled code); null: the prior's own weights
            (``path.pretrained.prior``, or a training run).
        task: the degradation (``measurement.Task``): denoising, x2 / x4 super-resolution (bicubic as DPS and
            DDRM use it, or average pooling), Gaussian / motion blur, box / random inpainting, colourisation.
        sigma_y: the measurement noise in [-1, 1] units (DPS's experiments: 0.05).
        operator_seed: seeds the operator's random parts (an inpainting mask, a motion kernel), as the test set's
            ``ZeroShotMeasurement`` does.
        lq_upsampled: a super-resolution LQ comes repeated to the output size (nearest neighbour), so the method
            keeps the image size (scale 1), as ``ZeroShotMeasurement(upsampled=true)`` renders it.
        (Items made by ``ZeroShotMeasurement`` carry their task, sigma_y and seed: those are used for them.)
        sampler: a registered zero-shot sampler (``ddrm``, ``ddnm``, ``dps``, ``pigdm``, ``diffpir``, ``tds``).
        sample_steps: network calls per image (null: the sampler's paper default).
        sampler_settings: the sampler's own settings (e.g. ``{zeta: 0.4}`` for DPS, ``{particles: 8}`` for TDS);
            unknown ones are refused naming those it takes.  Unset, DPS's and DiffPIR's take their release
            configs' value for the task (``TASK_SETTINGS``, ``TASK_STEPS``), else the sampler's default.
        T, beta_start, beta_end: the prior's linear beta schedule (the releases': 1000, 1e-4, 0.02).
        prior_folder: instead of ``prior`` / ``prior_path`` and the schedule, a diffusers DDPM pipeline folder
            (``model_index.json``, ``unet/`` a UNet2DModel, ``scheduler/`` its noise schedule: the layout of the
            ``google/ddpm-*`` pipelines, ``diffusers_prior.py``); T is its scheduler's number of steps.
    """

    def __init__(self, prior: component(ARCHS) = FFHQ_ADM, prior_path: Optional[str] = None,  # noqa: B006
                 task: Task = "sr4_bicubic", sigma_y: float = 0.05, operator_seed: int = 0,
                 lq_upsampled: bool = False, sampler: str = "ddnm",
                 sample_steps: Optional[int] = None, sampler_settings: Optional[dict] = None, T: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02, prior_folder: Optional[str] = None):
        super().__init__()
        if sigma_y < 0:
            raise OptionsError(f"method.sigma_y: must be >= 0, got {sigma_y}")
        alphas_cumprod = linear_alphas_cumprod(T, beta_start, beta_end)
        spec = {k: v for k, v in prior.items() if k != "type"}
        if prior_folder is not None:
            if prior_path is not None:
                raise OptionsError("method.prior_folder and method.prior_path: give one prior")
            from osir.methods.zeroshot.diffusers_prior import load_diffusers_prior
            self.networks["prior"], alphas_cumprod = load_diffusers_prior(prior_folder)
            T = alphas_cumprod.numel()
        elif prior_path is not None:
            self.networks["prior"] = load_adm(prior_path, **spec)
            self.pretrained["prior"] = str(prior_path)
        else:
            self.networks["prior"] = ARCHS.build(prior, "method.prior")
        if sample_steps is not None and not 1 <= sample_steps <= T:
            raise OptionsError(f"method.sample_steps: 1 to T={T}, got {sample_steps}")
        self.measurement = Measurement(task, float(sigma_y), int(operator_seed), bool(lq_upsampled))
        self.sampler_name, self.sample_steps = sampler, sample_steps
        self.sampler_settings = dict(sampler_settings or {})
        self.sampler = self._sampler(sampler, self.sampler_settings, "method.sampler")
        self.T = self.max_steps = T
        self.alphas_cumprod = alphas_cumprod
        self.scale = self.measurement.scale
        multiple = self.networks["prior"].size_multiple
        self.size_multiple = max(1, multiple // self.scale) if multiple % self.scale == 0 else multiple

    @staticmethod
    def _sampler(name: str, settings: dict, key: str):
        fn = ZERO_SHOT_SAMPLERS.get(name, key)
        accepted = set(inspect.signature(fn).parameters) - {"prior", "operator", "y", "steps", "generator"}
        unknown = sorted(set(settings) - accepted)
        if unknown:
            raise OptionsError(f"method.sampler_settings: {', '.join(unknown)} not taken by the sampler '{name}' "
                               f"(it takes: {', '.join(sorted(accepted)) or 'nothing'})")
        return fn

    # -- training: the prior alone -------------------------------------------------------------------------
    def training_step(self, batch: dict) -> dict[str, float]:
        """DDPM's simplified loss (Ho et al. 2020, Eq. 14) on the clean images."""
        x0 = batch["gt"] * 2 - 1
        t = torch.randint(0, self.T, (x0.shape[0],), device=x0.device)
        abar = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, 1, 1, 1)
        eps = torch.randn_like(x0)
        with self.autocast():
            predicted = self.networks["prior"](abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t)[:, :3]
        loss = F.mse_loss(predicted.float(), eps)
        self.optimize("prior", loss)
        return {"l_eps": loss.detach().item()}

    # -- restoration ----------------------------------------------------------------------------------------
    def prior(self) -> NetworkPrior:
        """The prior protocol over the prior network (its EMA weights during validation)."""
        return NetworkPrior(self.net("prior"), self.alphas_cumprod, self.autocast)

    def restore(self, batch: dict, generator: torch.Generator | None = None, *, sampler: str | None = None,
                steps: int | None = None) -> torch.Tensor:
        """x ~ p(x | y) with y read from ``batch['lq']``, in [0, 1]; the configured sampler and steps, or this
        call's."""
        return ((self.sample(batch, generator, sampler=sampler, steps=steps) + 1) / 2).clamp(0, 1)

    def sample(self, batch: dict, generator: torch.Generator | None = None, *, sampler: str | None = None,
               steps: int | None = None) -> torch.Tensor:
        """The sampler's output x in the prior's units [-1, 1], not clipped (``restore`` maps it to [0, 1])."""
        lq = batch["lq"]
        measured = Measurement.of_batch(batch) or self.measurement
        if measured.scale != self.scale:
            raise OptionsError(f"the test set's LQ is measured for {measured.task} at scale {measured.scale}, the "
                               f"method restores at scale {self.scale} (method.task / method.lq_upsampled)")
        size = (lq.shape[-2] * self.scale, lq.shape[-1] * self.scale)
        operator = measured.operator(size)
        fn, settings, name = self.sampler, self.sampler_settings, self.sampler_name
        if sampler is not None and sampler != self.sampler_name:
            fn, name = ZERO_SHOT_SAMPLERS.get(sampler, "sampler"), sampler
            accepted = set(inspect.signature(fn).parameters)
            settings = {k: v for k, v in settings.items() if k in accepted}
        settings = {**TASK_SETTINGS.get(name, {}).get(measured.task, {}), **settings}
        steps = steps if steps is not None else self.sample_steps
        if steps is None:
            steps = TASK_STEPS.get(name, {}).get(measured.task)
        if steps is not None and not 1 <= int(steps) <= self.T:
            raise OptionsError(f"steps: this prior samples 1 to T={self.T} steps, got {steps}")
        y = measurement_from_image(operator, lq.float(), measured.factor if measured.upsampled else 1)
        kwargs = {"steps": int(steps)} if steps is not None else {}
        x = fn(self.prior(), operator, y, generator=generator, **kwargs, **settings)
        return x.reshape(lq.shape[0], 3, *size)
