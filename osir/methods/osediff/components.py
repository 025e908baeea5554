"""OSEDiff's parts (Wu et al., NeurIPS 2024): Stable Diffusion 2.1-base components from a local
diffusers folder, the one-step restoration formula, and the release's ``osediff.pkl`` LoRA file.

One step (the paper's Eq. 3 at t = 999): with SD's scaled-linear schedule and alpha_bar_999 =
0.0046601, the clean latent is z_H = (z_L - sqrt(1 - alpha_bar) * eps_hat) / sqrt(alpha_bar), the
epsilon-prediction x_0 estimate of DDPM (Ho et al. 2020, Eq. 15).

The release's test script resizes the LQ with PIL on 8-bit images (``pil_resize``; training batches use
the torch approximation ``upsample_like_pil``) and turns the output into 8 bits by truncation
(``truncate_uint8``).  Its training data code brings the LQ to the GT's size with torch in a randomly
drawn mode and rounds (``resize_like_release_training``).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from osir.core.checkpoint import CheckpointError, describe_mismatch, load_torch_file
from osir.methods.osediff.lora import UNET_ADAPTERS, VAE_ADAPTER, release_vae_list
from osir.core.registry import OptionsError

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
ONE_STEP_T = 999
#: the modes the release's training data code draws from to resize the LQ to the GT's size
RELEASE_TRAIN_MODES = ("area", "bilinear", "bicubic")


def upsample_like_pil(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a [0, 1] image batch like PIL's ``Image.resize(BICUBIC)`` on 8-bit data, in
    torch (for training batches, on any device): PIL's kernel (a = -0.5: torch's antialiased bicubic),
    clipped to [0, 1] and rounded to 8 bits; within one grey level of PIL, whose arithmetic is
    fixed-point (tested against it).  Inference calls PIL itself (``pil_resize``)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    up = F.interpolate(image.float(), size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return (up.clamp(0, 1) * 255).round().div(255).to(image.dtype)


def resize_like_release_training(lq: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The release's training LQ brought to the GT's ``size``: ``F.interpolate`` (no antialiasing) in a
    mode drawn per image from area / bilinear / bicubic, then clamped and rounded to 8 bits.  The
    release draws with Python's ``random``; here torch's generator draws (the engine seeds it)."""
    if tuple(lq.shape[-2:]) == tuple(size):
        return lq
    modes = torch.randint(0, len(RELEASE_TRAIN_MODES), (lq.shape[0],)).tolist()
    up = torch.cat([F.interpolate(lq[i:i + 1].float(), size=tuple(size), mode=RELEASE_TRAIN_MODES[m])
                    for i, m in enumerate(modes)])
    return (up * 255).round().clamp(0, 255).div(255).to(lq.dtype)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A [0, 1] image as 8-bit values, rounded (exact for an image read from an 8-bit file)."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def truncate_uint8(image: torch.Tensor) -> torch.Tensor:
    """A [0, 1] float image as 8-bit values the way torchvision's ``ToPILImage`` makes them
    (``mul(255).byte()``: truncated, not rounded), after clamping to [0, 1]."""
    return image.detach().float().clamp(0, 1).mul(255).to(torch.uint8)


def pil_resize(image: torch.Tensor, size: tuple[int, int], resample: str = "bicubic") -> torch.Tensor:
    """PIL's ``Image.resize`` of each 8-bit RGB image of a B x 3 x H x W uint8 batch to ``size``
    (height, width) with the filter ``resample`` ('bicubic', 'lanczos'); uint8 on the input's device.
    PIL returns a copy when the size is already ``size``."""
    import numpy as np
    from PIL import Image
    if image.dtype != torch.uint8:
        raise TypeError(f"pil_resize expects uint8 images, got {image.dtype}")
    h, w = size
    if tuple(image.shape[-2:]) == (h, w):
        return image.clone()
    filt = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}[resample]
    out = [torch.from_numpy(np.asarray(Image.fromarray(img.permute(1, 2, 0).cpu().numpy(), "RGB")
                                       .resize((w, h), filt)).copy()).permute(2, 0, 1) for img in image]
    return torch.stack(out).to(image.device)


#: the release test script's ``--process_size``: LQs whose short side is under process_size / scale are
#: first enlarged to it
PROCESS_SIZE = 512


def release_sr_input(lq: torch.Tensor, scale: int, process_size: int = PROCESS_SIZE) -> torch.Tensor:
    """The SR input the release's test script makes of an 8-bit LQ batch (B x 3 x h x w, uint8), with
    PIL: an LQ whose short side is under ``process_size // scale`` is first resized (bicubic, PIL's
    default filter) by ``(process_size // scale) / short side`` to ``int(factor * side)`` (truncated, as
    the script computes it); then bicubic x ``scale``; then LANCZOS to sides rounded down to multiples
    of 8 (the same image when they already are)."""
    h, w = lq.shape[-2:]
    least = process_size // scale
    if w < least or h < least:
        factor = least / min(w, h)
        lq = pil_resize(lq, (int(factor * h), int(factor * w)), "bicubic")
        h, w = lq.shape[-2:]
    up = pil_resize(lq, (h * scale, w * scale), "bicubic")
    return pil_resize(up, (h * scale - h * scale % 8, w * scale - w * scale % 8), "lanczos")


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
    """Write osir's trained tensors in the release's layout (a torch dict, CPU tensors); the module
    lists in module order, ``vae_lora_encoder_modules`` with the release's repeats (``release_vae_list``)."""
    from osir.core.checkpoint import atomic_write
    unet_state, vae_state = trained_state(unet, vae)
    groups = unet_targets_from_adapters(unet)
    payload = {"vae_lora_encoder_modules": release_vae_list(vae_targets_from_adapter(vae)),
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
    what differs.  The lists are compared as sets of names: the release's ``vae_lora_encoder_modules``
    repeats most names (``release_vae_list``), which peft reads as one target each."""
    payload = load_torch_file(path, "OSEDiff weights")
    needed = [*_LISTS, "state_dict_unet", "state_dict_vae"]
    if not isinstance(payload, dict) or any(k not in payload for k in needed):
        raise CheckpointError(f"'{path}' is not an osediff.pkl: it needs the entries {', '.join(needed)}")
    carried = unet_targets_from_adapters(unet)
    ours = {"vae_lora_encoder_modules": vae_targets_from_adapter(vae), **{k: carried[a] for k, a in _LISTS.items() if a}}
    for key, names in ours.items():
        given = payload[key]
        if not isinstance(given, (list, tuple)) or not all(isinstance(n, str) for n in given):
            raise CheckpointError(f"'{path}': {key} is not a list of module names")
        if set(given) != set(names):
            extra, missing = sorted(set(given) - set(names))[:3], sorted(set(names) - set(given))[:3]
            raise CheckpointError(f"'{path}': {key} differ from osir's LoRA targets "
                                  f"(not targets: {extra or 'none'}; not listed: {missing or 'none'})")
    unet_expected, vae_expected = trained_state(unet, vae)
    for part, expected, given, module in (("state_dict_unet", unet_expected, payload["state_dict_unet"], unet),
                                          ("state_dict_vae", vae_expected, payload["state_dict_vae"], vae)):
        diff = describe_mismatch(expected, given)
        if diff:
            raise CheckpointError(f"'{path}': {part} does not fit: {diff}")
        module.load_state_dict(given, strict=False)
