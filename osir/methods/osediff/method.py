"""OSEDiff (Wu et al., "One-Step Effective Diffusion Network for Real-World Image Super-Resolution",
NeurIPS 2024): the LQ, bicubic-upsampled (PIL's kernel, 8-bit, as released; the prompt extractor reads
this image) and scaled to [-1, 1], is encoded by SD 2.1-base's VAE encoder
(with LoRA); the UNet (with LoRA) predicts the noise once at t = 999 under a text prompt; the clean
latent follows in closed form (``one_step_latent``) and the frozen VAE decoder decodes it.

Training (Sec. 3.3): lambda_l2 MSE + lambda_lpips LPIPS + lambda_vsd VSD in latent space.  VSD
(Wang et al. 2023): noise the generator's latent at t ~ U[20, 980); x0 from the regulariser (a LoRA
score on the same UNet, positive prompt) and from the frozen UNet with classifier-free guidance over a
negative prompt; weight by w = mean |z - x0_real|; loss MSE(z, stopgrad(z - (x0_fake - x0_real) / w)).
The regulariser learns the generator's latents with the epsilon-prediction MSE at t ~ U[0, 1000).

Memory: one UNet holds the frozen SD weights, the generator's LoRA (three adapters, as released) and
the regulariser's LoRA (adapter ``reg``); each pass activates its adapters (the frozen score runs
with adapters off).  The generator's ``conv_in`` is a separate trained copy (``gen_conv_in``) swapped
in for its pass only, so the frozen score never moves.
"""
from __future__ import annotations

import copy
import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from osir.engine.method import Method
from osir.methods.osediff.color import correct_colour
from osir.methods.osediff.components import ONE_STEP_T, alpha_bar, load_sd, one_step_latent, upsample_like_pil
from osir.inference.tiling import restore_tiled
from osir.methods.osediff.lora import (UNET_ADAPTERS, VAE_ADAPTER, add_lora, merge_and_unload, unet_targets,
                                       vae_targets)
from osir.options import component
from osir.registry import METHODS, PROMPTS, OptionsError

REG_ADAPTER = "reg"
#: the paper code's negative prompt for the classifier-free-guided frozen score
NEGATIVE_PROMPT = ("painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, 3D render, "
                   "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, signature, "
                   "jpeg artifacts, deformed, lowres, over-smooth")
log = logging.getLogger("osir")


@METHODS.register()
class OSEDiff(Method):
    """Args:
        sd_path: a local diffusers Stable Diffusion 2.1-base folder (SD 2.1 v-prediction is refused).
        build_tiny: write tiny random SD-architecture components to ``sd_path`` when it does not exist
            (``options/osediff_tiny.yml``; shows the mechanics only).
        scale: output / LQ size; lora_rank, lora_alpha: LoRA of the VAE encoder and the UNet (4, 8).
        l2_weight, lpips_weight, vsd_weight: the loss weights (1, 2, 1 in the paper).
        lpips_weights_path, lpips_vgg_path: pyiqa's LPIPS-VGG file and torchvision's VGG16 file; without
            them the LPIPS weight is set to 0 and the log says so.
        cfg_scale, vsd_t_range: guidance of the frozen score (7.5) and VSD's timesteps [20, 980).
        prompt: a registered prompt extractor (EmptyPrompt, FixedPrompt, TextFilePrompt).
        negative_prompt: for the guided frozen score.
        color_correction: 'adain' (the paper code's default), 'wavelet' or 'none'.
        gradient_checkpointing: on the UNet during training.
        tiling: inference on large images: the VAE encodes and decodes tiles of ``vae`` pixels
            (diffusers' VAE tiling, 1/4 overlap, blended) and the UNet runs on latent tiles of ``latent``
            with ``latent_overlap`` (blended by osir's tiling); ``null``: whole images.  Training never tiles.
        merge_lora: at inference (test.py), merge the generator's LoRA into the base weights and drop
            the regulariser: the same output, without LoRA's extra matmuls.
        release_path: the official ``osediff.pkl`` (or one ``python -m osir.methods.osediff.export`` wrote)
            to load into the generator.
    """

    def __init__(self, sd_path: str, build_tiny: bool = False, scale: int = 4, lora_rank: int = 4,
                 lora_alpha: float = 8.0, l2_weight: float = 1.0, lpips_weight: float = 2.0, vsd_weight: float = 1.0,
                 lpips_weights_path: Optional[str] = None, lpips_vgg_path: Optional[str] = None,
                 cfg_scale: float = 7.5, vsd_t_range: list[int] = (20, 980),
                 prompt: component(PROMPTS) = {"type": "EmptyPrompt"},  # noqa: B006
                 negative_prompt: str = NEGATIVE_PROMPT,
                 color_correction: Literal["adain", "wavelet", "none"] = "adain",
                 gradient_checkpointing: bool = False, release_path: Optional[str] = None,
                 tiling: Optional[dict] = {"vae": 512, "latent": 96, "latent_overlap": 32},  # noqa: B006
                 merge_lora: bool = False):
        super().__init__()
        if build_tiny and not Path(sd_path).exists():
            from osir.methods.osediff.tiny import build_tiny_sd
            build_tiny_sd(sd_path)
        parts = load_sd(sd_path)
        self.pretrained["sd"] = sd_path
        self.tokenizer, self.scheduler = parts["tokenizer"], parts["scheduler"]
        unet, vae, text_encoder = parts["unet"], parts["vae"], parts["text_encoder"]
        for net in (unet, vae, text_encoder):
            net.requires_grad_(False)
        # the generator's own conv_in (trained base + LoRA), a separate copy inside the UNet module
        targets = unet_targets(unet)
        gen_conv_in = nn.Module()
        gen_conv_in.conv_in = copy.deepcopy(unet.conv_in)           # SD's conv_in, before any LoRA
        add_lora(gen_conv_in, {"default_encoder": ["conv_in"]}, lora_rank, lora_alpha)
        generator = {a: [m for m in targets[a] if m != "conv_in"] for a in UNET_ADAPTERS}
        regulariser = {REG_ADAPTER: [m for a in UNET_ADAPTERS for m in targets[a]]}
        add_lora(unet, {**generator, **regulariser}, lora_rank, lora_alpha)
        unet.gen_conv_in = gen_conv_in                               # attached after: no regulariser LoRA on it
        gen_conv_in.conv_in.base_layer.requires_grad_(True)
        add_lora(vae, {VAE_ADAPTER: vae_targets(vae)}, lora_rank, lora_alpha)
        self.networks.update(unet=unet, vae=LatentCodec(vae), text_encoder=text_encoder)
        self.scale = scale
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.unet_factor = 2 ** (len(unet.config.block_out_channels) - 1)
        self.size_multiple = max(1, math.ceil(self.vae_factor * self.unet_factor / scale))
        self.alpha_bar_999 = alpha_bar(self.scheduler, ONE_STEP_T)
        self.lpips, self._lpips_paths = None, (lpips_weights_path, lpips_vgg_path)
        self.weights = {"l2": l2_weight, "lpips": lpips_weight, "vsd": vsd_weight}
        if vsd_weight == 0:
            log.warning("OSEDiff: VSD off (method.vsd_weight 0): the generator trains without score distillation")
        if len(vsd_t_range) != 2 or not 0 <= vsd_t_range[0] < vsd_t_range[1] <= 1000:
            raise OptionsError(f"method.vsd_t_range: expected [low, high] within [0, 1000], got {list(vsd_t_range)}")
        self.cfg_scale, self.vsd_t_range = cfg_scale, tuple(vsd_t_range)
        self.prompt = PROMPTS.build(prompt, "method.prompt")
        self.negative_prompt, self.color_correction = negative_prompt, color_correction
        self.gradient_checkpointing = gradient_checkpointing
        self.tiling = _check_tiling(tiling, self.vae_factor, self.unet_factor)
        self.tiles_internally = self.tiling is not None
        self.merge_lora, self.merged = merge_lora, False
        self.lora_rank = lora_rank
        if release_path is not None:
            self.load_release(release_path)
            self.pretrained["release"] = release_path

    # -- declarations ---------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        unet, vae = self.networks["unet"], self.networks["vae"]
        named = dict(unet.named_parameters())
        return {"unet_lora": [p for n, p in named.items() if "lora_" in n and REG_ADAPTER not in n.split(".")
                              and not n.startswith("gen_conv_in.")],
                "conv_in": [p for n, p in named.items() if n.startswith("gen_conv_in.")],
                "vae_lora": [p for n, p in vae.named_parameters() if "lora_" in n],
                "reg_lora": [p for n, p in named.items() if "lora_" in n and REG_ADAPTER in n.split(".")]}

    def setup(self, device, mixed_precision: str = "no") -> None:
        """Frozen tensors (SD's weights) in the training precision; trained ones stay float32."""
        super().setup(device, mixed_precision)
        for net in self.networks.values():
            for p in net.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(self.weight_dtype)
        if self.gradient_checkpointing:
            self.networks["unet"].enable_gradient_checkpointing()

    def prepare_training(self) -> None:
        """The LPIPS loss network from its local files (training only: test.py never needs them)."""
        if self.weights["lpips"] == 0 or self.lpips is not None:
            return
        if None in self._lpips_paths:
            log.warning("OSEDiff: LPIPS loss off (weight 0): method.lpips_weights_path and method.lpips_vgg_path "
                        "name no local files; a random VGG is never used in its place")
            self.weights["lpips"] = 0.0
            return
        for p in self._lpips_paths:
            if not Path(p).is_file():
                raise OptionsError(f"method.lpips_weights_path / lpips_vgg_path: file not found: '{p}'")
        import pyiqa
        from osir.engine.weights import local_torchvision_weights
        with local_torchvision_weights("VGG16_Weights.IMAGENET1K_V1", self._lpips_paths[1]):
            self.lpips = pyiqa.create_metric("lpips-vgg", as_loss=True, device=self.device,
                                             pretrained_model_path=self._lpips_paths[0])

    def attach(self, accelerator, optimizers: dict, grad_clip=None) -> None:
        if "g" not in optimizers:
            raise OptionsError("train.optimizers: OSEDiff steps an optimiser named g (the generator: unet_lora, "
                               "conv_in, vae_lora) and, for VSD, one named reg (reg_lora)")
        super().attach(accelerator, optimizers, grad_clip)

    # -- the release's osediff.pkl ---------------------------------------------------------------
    def release_modules(self) -> tuple[nn.Module, nn.Module]:
        """(UNet, VAE) as the release lays them out: the generator's conv_in in place, no regulariser."""
        return _ReleaseView(self.net("unet")), self.net("vae").vae

    def export_release(self, path: str | Path) -> None:
        from osir.methods.osediff.components import export_osediff_pkl
        export_osediff_pkl(*self.release_modules(), path, rank=self.lora_rank)

    def load_release(self, path: str | Path) -> None:
        from osir.methods.osediff.components import load_osediff_pkl
        load_osediff_pkl(*self.release_modules(), path)

    # -- the passes -----------------------------------------------------------------------------
    @contextmanager
    def unet_as(self, role: Literal["generator", "regulariser", "frozen"]):
        """The shared UNet as the generator (its LoRA + its conv_in), the regulariser (LoRA ``reg``)
        or the frozen SD score (no adapter)."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        unet = self.net("unet")
        if self.merged:                    # prepare_inference merged the generator: nothing to switch
            if role != "generator":
                raise RuntimeError(f"OSEDiff: the {role} score is gone once merge_lora merged the generator")
            yield unet
            return
        layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer) and m is not unet.gen_conv_in.conv_in]
        try:
            if role == "generator":
                unet.conv_in, unet.gen_conv_in.conv_in = unet.gen_conv_in.conv_in, unet.conv_in
            own = () if role == "frozen" else UNET_ADAPTERS if role == "generator" else (REG_ADAPTER,)
            for m in layers:
                wanted = [a for a in own if a in m.lora_A]
                m.enable_adapters(bool(wanted))     # a layer with none of this pass's adapters runs its base only
                if wanted:
                    m.set_adapter(wanted)
            # with gradients: the (DDP-wrapped) network, so gradients synchronise; without: the module itself
            yield self.networks["unet"] if torch.is_grad_enabled() else unet
        finally:
            if role == "generator":
                unet.conv_in, unet.gen_conv_in.conv_in = unet.gen_conv_in.conv_in, unet.conv_in
            for m in layers:
                m.enable_adapters(True)
                m.set_adapter([a for a in (*UNET_ADAPTERS, REG_ADAPTER) if a in m.lora_A])
            for n, p in unet.named_parameters():   # peft's set_adapter toggles requires_grad: restore the policy
                p.requires_grad_("lora_" in n or n.startswith("gen_conv_in."))

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        with torch.no_grad():
            return self.networks["text_encoder"](ids)[0]

    def upscale(self, lq: torch.Tensor, size=None) -> torch.Tensor:
        """The LQ bicubic-upsampled to ``size`` (default: ``scale`` x) as the release's test script does
        it with PIL (``upsample_like_pil``)."""
        return upsample_like_pil(lq, size or (lq.shape[-2] * self.scale, lq.shape[-1] * self.scale))

    def prompts_for(self, batch: dict, up: torch.Tensor) -> list[str]:
        """The prompt extractor's prompts; it reads the upsampled LQ ``up`` (the release tags the x4
        image), upsampled from the LQ without the inference layer's padding when there is one."""
        lq = batch["lq"]
        h, w = batch.get("lq_size", lq.shape[-2:])
        if (h, w) != tuple(lq.shape[-2:]):
            up = self.upscale(lq[..., :h, :w], (h * up.shape[-2] // lq.shape[-2], w * up.shape[-1] // lq.shape[-1]))
        return self.prompt({**batch, "lq": up})

    def generate(self, up: torch.Tensor, text: torch.Tensor, generator=None):
        """(image in [-1, 1], its latent z_H): the one-step restoration of the upsampled LQ ``up``;
        tiled (VAE and latent UNet) without gradients when the image exceeds the tiles."""
        z_lq = self.encode(up, generator)
        z = self.one_step(z_lq, text)
        return self.decode(z), z

    def _tiled(self) -> bool:
        return self.tiling is not None and not torch.is_grad_enabled()

    def encode(self, up: torch.Tensor, generator=None) -> torch.Tensor:
        """z_L: the (LoRA) VAE encoder's scaled latent of the upsampled LQ in [0, 1]."""
        codec = self.networks["vae"] if torch.is_grad_enabled() else self.net("vae")   # DDP-wrapped when training
        with self.autocast(), self._vae_tiling(self._tiled()):
            return codec(up.clamp(0, 1) * 2 - 1, generator)

    def one_step(self, z_lq: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """z_H from the generator UNet's noise prediction at t = 999 (on blended latent tiles when tiled)."""
        with self.autocast(), self.unet_as("generator") as unet:
            t = torch.full((z_lq.shape[0],), ONE_STEP_T, device=z_lq.device, dtype=torch.long)

            def predict_noise(latent: torch.Tensor) -> torch.Tensor:
                return unet(latent, t, encoder_hidden_states=text).sample
            if self._tiled():
                noise = restore_tiled(predict_noise, z_lq, self.tiling["latent"], self.tiling["latent_overlap"],
                                      multiple=self.unet_factor)
            else:
                noise = predict_noise(z_lq)
        return one_step_latent(z_lq.float(), noise.float(), self.alpha_bar_999)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The frozen VAE decoder's image in [-1, 1]."""
        vae = self.net("vae").vae
        with self.autocast(), self._vae_tiling(self._tiled()):
            return vae.decode((z / vae.config.scaling_factor).to(self.weight_dtype)).sample.float().clamp(-1, 1)

    @contextmanager
    def _vae_tiling(self, on: bool):
        """diffusers' VAE tiling with tiles of ``tiling.vae`` pixels while ``on``."""
        vae = self.net("vae").vae
        if not on:
            yield
            return
        vae.enable_tiling()
        vae.tile_sample_min_size = self.tiling["vae"]
        vae.tile_latent_min_size = self.tiling["vae"] // self.vae_factor
        try:
            yield
        finally:
            vae.disable_tiling()

    def _x0(self, z_t, eps, t):
        ab = self.scheduler.alphas_cumprod.to(z_t.device)[t].view(-1, 1, 1, 1).float()
        return (z_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def vsd_loss(self, z: torch.Tensor, text: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Variational score distillation on the generator's latent ``z`` (the paper's Eq. 6-7)."""
        b = z.shape[0]
        t = torch.randint(self.vsd_t_range[0], self.vsd_t_range[1], (b,), device=z.device)
        noise = torch.randn_like(z)
        z_t = self.scheduler.add_noise(z.detach(), noise, t)
        with torch.no_grad(), self.autocast():
            with self.unet_as("regulariser") as unet:
                x0_fake = self._x0(z_t, unet(z_t, t, encoder_hidden_states=text).sample.float(), t)
            with self.unet_as("frozen") as unet:
                both = unet(torch.cat([z_t, z_t]), torch.cat([t, t]),
                            encoder_hidden_states=torch.cat([negative, text])).sample.float()
                eps_neg, eps_pos = both.chunk(2)
                x0_real = self._x0(z_t, eps_neg + self.cfg_scale * (eps_pos - eps_neg), t)
        return vsd_from_estimates(z, x0_fake, x0_real)

    def training_step(self, batch: dict) -> dict[str, float]:
        gt = batch["gt"]
        up = self.upscale(batch["lq"], gt.shape[-2:])
        prompts = self.prompts_for(batch, up)
        text = self.encode_prompts(prompts)
        negative = self.encode_prompts([self.negative_prompt] * len(prompts))
        image, z = self.generate(up, text)
        target = gt * 2 - 1
        logs = {}
        loss = self.weights["l2"] * F.mse_loss(image, target)
        logs["l_l2"] = loss.item()
        if self.lpips is not None:
            l_lpips = self.lpips(image * 0.5 + 0.5, gt).mean()
            loss = loss + self.weights["lpips"] * l_lpips
            logs["l_lpips"] = l_lpips.item()
        if self.weights["vsd"] > 0:
            l_vsd = self.vsd_loss(z, text, negative)
            loss = loss + self.weights["vsd"] * l_vsd
            logs["l_vsd"] = l_vsd.item()
        # backward in the pass's own adapter state: gradient checkpointing recomputes the UNet's blocks
        with self.unet_as("generator"):
            self.optimize("g", loss)
        if "reg" in self.optimizers:
            z_d = z.detach()
            t = torch.randint(0, self.scheduler.config.num_train_timesteps, (z_d.shape[0],), device=z_d.device)
            noise = torch.randn_like(z_d)
            with self.autocast(), self.unet_as("regulariser") as unet:
                pred = unet(self.scheduler.add_noise(z_d, noise, t), t, encoder_hidden_states=text).sample
                l_reg = F.mse_loss(pred.float(), noise)
                self.optimize("reg", l_reg)
            logs["l_reg"] = l_reg.item()
        return logs

    def restore(self, batch: dict, generator=None) -> torch.Tensor:
        up = self.upscale(batch["lq"])
        prompts = self.prompts_for(batch, up)
        self.output_notes = {"prompt": prompts}
        image, _ = self.generate(up, self.encode_prompts(prompts), generator=generator)
        return correct_colour(image * 0.5 + 0.5, up, self.color_correction).clamp(0, 1)

    def prepare_inference(self) -> None:
        """With ``merge_lora``: fold the generator's LoRA (and its conv_in) into the UNet's and the
        VAE encoder's base weights and drop the regulariser; the UNet and VAE become plain diffusers
        modules again."""
        if not self.merge_lora:
            return
        unet, vae = self.net("unet"), self.net("vae").vae
        unet.conv_in = unet.gen_conv_in.conv_in
        del unet.gen_conv_in
        merge_and_unload(unet, UNET_ADAPTERS)
        merge_and_unload(vae, (VAE_ADAPTER,))
        self.merged = True

def _check_tiling(tiling: Optional[dict], vae_factor: int, unet_factor: int) -> Optional[dict]:
    if tiling is None:
        return None
    allowed = {"vae", "latent", "latent_overlap"}
    unknown = set(tiling) - allowed
    if unknown:
        raise OptionsError(f"method.tiling: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    out = {"vae": 512, "latent": 96, "latent_overlap": 32, **tiling}
    if out["vae"] % (vae_factor * 8) or out["vae"] <= 0:
        raise OptionsError(f"method.tiling.vae: {out['vae']} pixels is not a positive multiple of "
                           f"{vae_factor * 8} (8 x the VAE's downsampling factor {vae_factor})")
    if out["latent"] % unet_factor or out["latent"] <= 0 or not 0 <= out["latent_overlap"] < out["latent"]:
        raise OptionsError(f"method.tiling: latent {out['latent']} must be a positive multiple of the UNet's "
                           f"factor {unet_factor} and latent_overlap {out['latent_overlap']} in [0, latent)")
    return out


def vsd_from_estimates(z: torch.Tensor, x0_fake: torch.Tensor, x0_real: torch.Tensor) -> torch.Tensor:
    """MSE(z, stopgrad(z - (x0_fake - x0_real) / w)) with w = mean |z - x0_real| per sample; its gradient
    in z is 2 (x0_fake - x0_real) / (w N)."""
    w = (z.detach() - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
    grad = (x0_fake - x0_real) / w
    return F.mse_loss(z, (z - grad).detach())


class LatentCodec(nn.Module):
    """SD's VAE with ``forward`` = encode to scaled latents, so the encoder's LoRA trains through the
    (DDP-wrapped) network's forward; ``.vae.decode`` decodes (frozen)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.sample(generator) * self.vae.config.scaling_factor


class _ReleaseView(nn.Module):
    """The shared UNet seen as the release's generator UNet: ``conv_in`` is the generator's copy and the
    regulariser's LoRA is hidden (state_dict / named_modules / load_state_dict only)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        object.__setattr__(self, "unet", unet)

    def _rename(self, key: str) -> str | None:
        if key.startswith("gen_conv_in."):
            return key[len("gen_conv_in."):]
        if key.startswith("conv_in.") or f".{REG_ADAPTER}." in f".{key}.":
            return None                    # SD's own conv_in (regulariser) and the regulariser's LoRA
        return key

    def state_dict(self, *args, **kwargs):
        out = {}
        for key, value in self.unet.state_dict().items():
            name = self._rename(key)
            if name is not None:
                out[name] = value
        return out

    def named_modules(self, *args, **kwargs):
        for name, module in self.unet.named_modules():
            new = self._rename(name + ".") if name else ""
            if new is not None:
                yield new.rstrip("."), module

    def load_state_dict(self, state, strict: bool = True):
        mapped = {("gen_conv_in." + k if k.startswith("conv_in.") else k): v for k, v in state.items()}
        return self.unet.load_state_dict(mapped, strict=False)
