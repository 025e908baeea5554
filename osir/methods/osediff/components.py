"""OSEDiff's parts (Wu et al., NeurIPS 2024): Stable Diffusion 2.1-base components from a local
diffusers folder, the one-step restoration formula, and the release's ``osediff.pkl`` LoRA file.

One step (the paper's Eq. 3 at t = 999): with SD's scaled-linear schedule and alpha_bar_999 =
0.0046601, the clean latent is z_H = (z_L - sqrt(1 - alpha_bar) * eps_hat) / sqrt(alpha_bar), the
epsilon-prediction x_0 estimate of DDPM (Ho et al. 2020, Eq. 15).

The release's test script upsamples the LQ with PIL's bicubic (``upsample_like_pil``).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from osir.engine.checkpoint import CheckpointError, describe_mismatch, load_torch_file
from osir.methods.osediff.lora import UNET_ADAPTERS, VAE_ADAPTER
from osir.registry import OptionsError

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
ONE_STEP_T = 999


def upsample_like_pil(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a [0, 1] image as PIL's ``Image.resize(BICUBIC)`` on 8-bit data: PIL's kernel
    (a = -0.5: torch's antialiased bicubic), clipped to [0, 1] and rounded to 8 bits (within one grey
    level of PIL, whose arithmetic is fixed-point; tested against it)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    up = F.interpolate(image.float(), size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return (up.clamp(0, 1) * 255).round().div(255).to(image.dtype)


def alpha_bar(scheduler, t: int = ONE_STEP_T) -> float:
    """alpha_bar_t of a diffusers scheduler's training schedule."""
    return float(scheduler.alphas_cumprod[t])


def one_step_latent(z_lq: torch.Tensor, noise_pred: torch.Tensor, alpha_bar_t: float) -> torch.Tensor:
    """z_H = (z_L - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar)."""
    return (z_lq - math.sqrt(1.0 - alpha_bar_t) * noise_pred) / math.sqrt(alpha_bar_t)


def check_sd_folder(folder: str, key: str = "method.sd_path") -> Path:
    """A diffusers-format SD 2.1-base folder (unet/ vae/ text_encoder/ tokenizer/ scheduler/); SD 2.1
    (768, v-prediction) is refused: OSEDiff's one-step formula and VSD assume epsilon prediction."""
    root = Path(folder)
    if not root.is_dir():
        raise OptionsError(f"{key}: folder not found: '{root}' (a diffusers Stable Diffusion 2.1-base folder with "
                           f"{', '.join(s + '/' for s in SUBFOLDERS)})")
    missing = [s for s in SUBFOLDERS if not (root / s).is_dir()]
    if missing:
        raise OptionsError(f"{key}: '{root}' has no {', '.join(s + '/' for s in missing)}; expected a diffusers "
                           f"Stable Diffusion 2.1-base folder with {', '.join(s + '/' for s in SUBFOLDERS)}")
    from diffusers import DDPMScheduler
    scheduler = DDPMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
    if scheduler.config.prediction_type != "epsilon":
        raise OptionsError(f"{key}: '{root}' predicts '{scheduler.config.prediction_type}' (Stable Diffusion 2.1, "
                           "768 px); OSEDiff needs Stable Diffusion 2.1-base (epsilon prediction), whose one-step "
                           "formula and score distillation assume predicted noise")
    return root


def load_sd(folder: str, key: str = "method.sd_path") -> dict:
    """unet, vae, text_encoder, tokenizer, scheduler from a local SD 2.1-base folder (nothing downloaded)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    root = check_sd_folder(folder, key)
    return {"unet": UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True),
            "vae": AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True),
            "text_encoder": CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True),
            "tokenizer": CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True),
            "scheduler": DDPMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)}


# -- the release's osediff.pkl ---------------------------------------------------------------------
_LISTS = {"vae_lora_encoder_modules": None, "unet_lora_encoder_modules": "default_encoder",
          "unet_lora_decoder_modules": "default_decoder", "unet_lora_others_modules": "default_others"}


def trained_state(unet: nn.Module, vae: nn.Module) -> tuple[dict, dict]:
    """The tensors osediff.pkl holds: UNet LoRA + conv_in (base weight and bias), VAE-encoder LoRA."""
    unet_state = {k: v for k, v in unet.state_dict().items() if "lora_" in k or k.startswith("conv_in.base_layer.")}
    vae_state = {k: v for k, v in vae.state_dict().items() if "lora_" in k}
    return unet_state, vae_state


def export_osediff_pkl(unet: nn.Module, vae: nn.Module, path: str | Path, rank: int = 4) -> None:
    """Write osir's trained tensors in the release's layout (a torch dict, CPU tensors)."""
    from osir.engine.checkpoint import atomic_write
    unet_state, vae_state = trained_state(unet, vae)
    groups = unet_targets_from_adapters(unet)
    payload = {"vae_lora_encoder_modules": vae_targets_from_adapter(vae),
               **{k: groups[a] for k, a in _LISTS.items() if a is not None},
               "rank_unet": rank, "rank_vae": rank,
               "state_dict_unet": {k: v.detach().cpu().contiguous() for k, v in unet_state.items()},
               "state_dict_vae": {k: v.detach().cpu().contiguous() for k, v in vae_state.items()}}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def unet_targets_from_adapters(unet: nn.Module) -> dict[str, list[str]]:
    """Module names carrying each UNet adapter."""
    out = {a: [] for a in UNET_ADAPTERS}
    for name, module in unet.named_modules():
        for adapter in getattr(module, "lora_A", {}) or {}:
            if adapter in out:
                out[adapter].append(name)
    return out


def vae_targets_from_adapter(vae: nn.Module) -> list[str]:
    return [name for name, module in vae.named_modules() if VAE_ADAPTER in (getattr(module, "lora_A", {}) or {})]


def load_osediff_pkl(unet: nn.Module, vae: nn.Module, path: str | Path) -> None:
    """Load the release's osediff.pkl (read with ``weights_only=True``, CUDA tensors mapped to the CPU)
    into a UNet and VAE that carry osir's LoRA; other module lists, keys or shapes are refused, naming
    what differs."""
    payload = load_torch_file(path, "OSEDiff weights")
    needed = [*_LISTS, "state_dict_unet", "state_dict_vae"]
    if not isinstance(payload, dict) or any(k not in payload for k in needed):
        raise CheckpointError(f"'{path}' is not an osediff.pkl: it needs the entries {', '.join(needed)}")
    carried = unet_targets_from_adapters(unet)
    ours = {"vae_lora_encoder_modules": vae_targets_from_adapter(vae), **{k: carried[a] for k, a in _LISTS.items() if a}}
    for key, names in ours.items():
        if sorted(payload[key]) != sorted(names):
            extra = sorted(set(payload[key]) - set(names))[:3]
            raise CheckpointError(f"'{path}': {key} differ from osir's LoRA targets (e.g. {extra or 'missing ones'})")
    unet_expected, vae_expected = trained_state(unet, vae)
    for part, expected, given, module in (("state_dict_unet", unet_expected, payload["state_dict_unet"], unet),
                                          ("state_dict_vae", vae_expected, payload["state_dict_vae"], vae)):
        diff = describe_mismatch(expected, given)
        if diff:
            raise CheckpointError(f"'{path}': {part} does not fit: {diff}")
        module.load_state_dict(given, strict=False)
