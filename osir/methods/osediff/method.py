"""OSEDiff (Wu et al., "One-Step Effective Diffusion Network for Real-World Image Super-Resolution",
NeurIPS 2024): at inference the release's SR input of the 8-bit LQ (``release_sr_input``: small LQs
enlarged with PIL bicubic, PIL bicubic x scale, LANCZOS to multiples of 8; the prompt extractor reads
this image; training batches use the tensor path ``upsample_like_pil``), scaled to [-1, 1], is encoded
by SD 2.1-base's VAE encoder
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

from osir.core.method import Method
from osir.methods.osediff.color import correct_colour
from osir.methods.osediff import tiled_vae
from osir.methods.osediff.components import (ONE_STEP_T, alpha_bar, load_sd, one_step_latent, pil_resize,
                                             release_sr_input, resize_like_release_training, to_uint8,
                                             truncate_uint8, upsample_like_pil)
from osir.methods.osediff.latent_tiles import predict_tiled
from osir.methods.osediff.lora import (UNET_ADAPTERS, VAE_ADAPTER, add_lora, merge_and_unload, unet_targets,
                                       vae_targets)
from osir.core.options import component
from osir.core.registry import METHODS, PROMPTS, OptionsError
import osir.methods.osediff.files  # noqa: F401  (its file declarations, also where the entry points are stale)
# its files (the SD folder, osediff.pkl, LPIPS's two) are declared in files.py, checked before anything is built

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
        tiling: inference on large images, with the release's thresholds as defaults: the VAE encoder
            runs whole up to ``vae_encoder`` pixels a side (1088: the release's 1024-pixel tiles + 2 x 32
            padding), the decoder up to ``vae_decoder`` latents (246 = 224 + 2 x 11); larger maps run in
            tiles of about that side whose GroupNorms share the whole image's statistics (``tiled_vae``:
            the whole-image result, exactly).  The UNet runs whole up to ``latent``^2 latents (96^2),
            else on square tiles of ``latent`` overlapping by ``latent_overlap`` (32) with the release's
            Gaussian weights (``latent_tiles``).  ``null``: always whole.  Training never tiles.
        process_size: the release test script's ``--process_size`` (512): at inference an LQ whose
            short side is under ``process_size // scale`` is enlarged to it first (``restore``).
        merge_lora: at inference (test.py), merge the generator's LoRA into the base weights and drop
            the regulariser: the same output, without LoRA's extra matmuls.
        release_path: the official ``osediff.pkl`` (or one ``python -m osir.methods.osediff.export`` wrote)
            to load into the generator.
        train_prompt: the prompt extractor of training batches (built when training starts; it sees
            the batch with ``lq`` upsampled to the GT's size).  The default ``{type: ram}`` with
            ``ram_path: ram_swin_large_14m.pth`` gives RAM's tags of each GT image, as the release
            trains (no DAPE); without ``ram_path`` training stops with an options error naming the
            key.  ``null``: ``prompt`` on the upsampled LQ, as at inference.
        train_lq_resize: how a training LQ smaller than its GT is brought to the GT's size: 'release'
            (``F.interpolate`` in a mode drawn per image from area / bilinear / bicubic, then rounded to
            8 bits: the release's data code) or 'pil_bicubic' (PIL's bicubic, the test script's
            resize).  The osediff degradation preset hands over LQ already resized back by the
            release's rule.
        reg_adapters: the regulariser's LoRA: 'all' (the UNet's every target, the paper's intent) or
            'release' (the mid-block targets only: in the release, diffusers' ``add_adapter`` leaves
            only the adapter added last, ``default_others``, active in the regulariser UNet and its
            training never activates the others, so only the mid-block LoRA acts and trains).
    """

    def __init__(self, sd_path: str, build_tiny: bool = False, scale: int = 4, lora_rank: int = 4,
                 lora_alpha: float = 8.0, l2_weight: float = 1.0, lpips_weight: float = 2.0, vsd_weight: float = 1.0,
                 lpips_weights_path: Optional[str] = None,
                 lpips_vgg_path: Optional[str] = None,
                 cfg_scale: float = 7.5, vsd_t_range: list[int] = (20, 980),
                 prompt: component(PROMPTS) = {"type": "EmptyPrompt"},  # noqa: B006
                 negative_prompt: str = NEGATIVE_PROMPT,
                 color_correction: Literal["adain", "wavelet", "none"] = "adain",
                 gradient_checkpointing: bool = False, release_path: Optional[str] = None,
                 tiling: Optional[dict] = {"vae_encoder": 1088, "vae_decoder": 246, "latent": 96,  # noqa: B006
                                           "latent_overlap": 32},
                 process_size: int = 512,
                 merge_lora: bool = False,
                 train_prompt: Optional[component(PROMPTS, training=True)] = {"type": "ram"},  # noqa: B006
                 train_lq_resize: Literal["release", "pil_bicubic"] = "release",
                 reg_adapters: Literal["all", "release"] = "all"):
        super().__init__()
        if build_tiny and not Path(sd_path).exists():
            from osir.methods.osediff.tiny import build_tiny_sd
            build_tiny_sd(sd_path)
        parts = load_sd(sd_path)
        self.pretrained["sd"] = sd_path
        # SD's text encoder is used as it is; its UNet and VAE are only the base of the generator, whose
        # trained LoRA and conv_in come from release_path or path.pretrained (else test.py warns)
        self.pretrained_networks["sd"] = ("text_encoder",)
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
        regulariser = {REG_ADAPTER: targets["default_others"] if reg_adapters == "release"
                       else [m for a in UNET_ADAPTERS for m in targets[a]]}
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
        self._train_prompt_spec, self.train_prompt, self.train_lq_resize = train_prompt, None, train_lq_resize
        self.negative_prompt, self.color_correction = negative_prompt, color_correction
        self.gradient_checkpointing = gradient_checkpointing
        self.tiling = _check_tiling(tiling)
        if isinstance(process_size, bool) or not isinstance(process_size, int) or process_size < scale:
            raise OptionsError(f"method.process_size: expected an integer of at least scale ({scale}), got "
                               f"{process_size!r}")
        self.process_size = process_size
        self.tiles_internally = self.tiling is not None
        self.merge_lora, self.merged = merge_lora, False
        self.lora_rank = lora_rank
        if release_path is not None:
            self.load_release(release_path)
            self.pretrained["release"] = release_path
            self.pretrained_networks["release"] = ("unet", "vae")

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
        """The training prompts' extractor and the LPIPS loss network from their local files (training
        only: test.py never needs them)."""
        spec = self._train_prompt_spec
        if spec is not None and self.train_prompt is None:
            if spec.get("type") == "ram" and not spec.get("ram_path"):
                raise OptionsError("method.train_prompt.ram_path: the training prompts are RAM's tags of the GT "
                                   "images (as the release trains) and need RAM's ram_swin_large_14m.pth; give its "
                                   "path, or set method.train_prompt: null to train with method.prompt")
            self.train_prompt = PROMPTS.build(spec, "method.train_prompt")
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
        from osir.core.weights import local_torchvision_weights
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
        """The LQ of a training batch bicubic-upsampled to ``size`` (default: ``scale`` x) in torch, within
        one grey level of PIL's (``upsample_like_pil``).  ``restore`` uses PIL itself
        (``release_sr_input``)."""
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
        tiled (VAE and latent UNet, ``tiling``) without gradients when the image exceeds the thresholds."""
        z_lq = self.encode(up, generator)
        z = self.one_step(z_lq, text)
        return self.decode(z), z

    def _tiled(self) -> bool:
        """Tiling applies: set, and no gradients (inference)."""
        return self.tiling is not None and not torch.is_grad_enabled()

    def encode(self, up: torch.Tensor, generator=None) -> torch.Tensor:
        """z_L: the (LoRA) VAE encoder's scaled latent of the upsampled LQ in [0, 1]; at inference in
        shared-statistics tiles above ``tiling.vae_encoder`` pixels a side."""
        x = up.clamp(0, 1) * 2 - 1
        with self.autocast():
            if self._tiled():
                vae = self.net("vae").vae
                posterior = tiled_vae.encode(vae, x, self.tiling["vae_encoder"])
                return posterior.sample(generator) * vae.config.scaling_factor
            codec = self.networks["vae"] if torch.is_grad_enabled() else self.net("vae")   # DDP-wrapped when training
            return codec(x, generator)

    def one_step(self, z_lq: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """z_H from the generator UNet's noise prediction at t = 999 (on blended latent tiles when tiled)."""
        with self.autocast(), self.unet_as("generator") as unet:
            t = torch.full((z_lq.shape[0],), ONE_STEP_T, device=z_lq.device, dtype=torch.long)

            def predict_noise(latent: torch.Tensor) -> torch.Tensor:
                return unet(latent, t, encoder_hidden_states=text).sample
            if self._tiled():
                noise = predict_tiled(predict_noise, z_lq, self.tiling["latent"], self.tiling["latent_overlap"])
            else:
                noise = predict_noise(z_lq)
        return one_step_latent(z_lq.float(), noise.float(), self.alpha_bar_999)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The frozen VAE decoder's image in [-1, 1]; at inference in shared-statistics tiles above
        ``tiling.vae_decoder`` latents a side."""
        vae = self.net("vae").vae
        z = (z / vae.config.scaling_factor).to(self.weight_dtype)
        with self.autocast():
            if self._tiled():
                image = tiled_vae.decode(vae, z, self.tiling["vae_decoder"])
            else:
                image = vae.decode(z).sample
        return image.float().clamp(-1, 1)

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
        if self.train_lq_resize == "release":
            up = resize_like_release_training(batch["lq"], gt.shape[-2:])
        else:
            up = upsample_like_pil(batch["lq"], gt.shape[-2:])
        if self.train_prompt is not None:
            prompts = self.train_prompt({**batch, "lq": up})
        else:
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
        """The release's test script on the 8-bit LQ: its SR input (``release_sr_input``: PIL, an LQ
        with a side under ``process_size // scale`` enlarged first, sides cut down to multiples of 8 by
        LANCZOS), which the prompt extractor reads too; the one step; the output truncated to 8 bits
        as ``ToPILImage`` does, colour-corrected against the SR input and truncated again.  Where the
        release's size is not ``scale`` x the LQ (an enlarged LQ; x4 of an odd side), PIL's bicubic
        resizes the output to ``scale`` x the LQ (the release's script keeps its own size: its resize
        back is never assigned).  Returns the 8-bit values / 255, so osir's rounding writers save
        exactly these bytes.  An LQ the inference layer padded is cut back to ``lq_size`` first."""
        h, w = batch.get("lq_size", batch["lq"].shape[-2:])
        lq = batch["lq"][..., :h, :w]
        batch = {**{k: v for k, v in batch.items() if k != "lq_size"}, "lq": lq}
        up = release_sr_input(to_uint8(lq), self.scale, self.process_size).float().div(255).to(lq.device)
        prompts = self.prompts_for(batch, up)
        self.output_notes = {"prompt": prompts}
        image, _ = self.generate(up, self.encode_prompts(prompts), generator=generator)
        out = truncate_uint8(image * 0.5 + 0.5)
        if self.color_correction != "none":
            out = truncate_uint8(correct_colour(out.float().div(255), up, self.color_correction))
        if tuple(out.shape[-2:]) != (h * self.scale, w * self.scale):
            out = pil_resize(out, (h * self.scale, w * self.scale), "bicubic")
        return out.float().div(255)

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

#: the release test script's tiling: VAE tiles of 1024 pixels (encoder) and 224 latents (decoder) plus
#: 32 / 11 of padding on each side (the image runs whole up to tile + 2 x padding), latent UNet tiles of 96
#: overlapping by 32
RELEASE_TILING = {"vae_encoder": 1024 + 2 * 32, "vae_decoder": 224 + 2 * 11, "latent": 96, "latent_overlap": 32}


def _check_tiling(tiling: Optional[dict]) -> Optional[dict]:
    if tiling is None:
        return None
    unknown = set(tiling) - set(RELEASE_TILING)
    if unknown:
        raise OptionsError(f"method.tiling: unknown key(s) {sorted(unknown)}; allowed: {sorted(RELEASE_TILING)}")
    out = {**RELEASE_TILING, **tiling}
    for key in ("vae_encoder", "vae_decoder", "latent"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] <= 0:
            raise OptionsError(f"method.tiling.{key}: expected a positive integer, got {out[key]!r}")
    if isinstance(out["latent_overlap"], bool) or not isinstance(out["latent_overlap"], int) \
            or not 0 <= out["latent_overlap"] < out["latent"]:
        raise OptionsError(f"method.tiling.latent_overlap: {out['latent_overlap']!r} must be an integer in "
                           f"[0, latent = {out['latent']})")
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
    """The shared UNet seen as the release's generator UNet: ``conv_in`` is the generator's copy, in
    SD's ``conv_in`` place (so names and their order are the release's), and the regulariser's LoRA is
    hidden (state_dict / named_modules / load_state_dict only)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        object.__setattr__(self, "unet", unet)

    @staticmethod
    def _hidden(key: str) -> bool:
        """The generator's conv_in under its own name (shown in conv_in's place) and the regulariser's LoRA."""
        return key.startswith("gen_conv_in.") or f".{REG_ADAPTER}." in f".{key}."

    def state_dict(self, *args, **kwargs):
        out, gen_conv_in = {}, self.unet.gen_conv_in.state_dict()
        for key, value in self.unet.state_dict().items():
            if key.startswith("conv_in."):          # SD's own conv_in (the regulariser's): the generator's instead
                out.update(gen_conv_in)
            elif not self._hidden(key):
                out[key] = value
        return out

    def named_modules(self, *args, **kwargs):
        for name, module in self.unet.named_modules():
            if name == "conv_in":
                yield from ((n, m) for n, m in self.unet.gen_conv_in.named_modules() if n.startswith("conv_in")
                            and not self._hidden(n + "."))
            elif not name.startswith("conv_in.") and not self._hidden(name + "."):
                yield name, module

    def load_state_dict(self, state, strict: bool = True):
        mapped = {("gen_conv_in." + k if k.startswith("conv_in.") else k): v for k, v in state.items()}
        return self.unet.load_state_dict(mapped, strict=False)
