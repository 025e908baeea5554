"""Diffusers priors for ``ZeroShot`` (issue 25, point 1b): a ``UNet2DModel`` with its noise schedule, from a
folder in the layout ``DDPMPipeline.save_pretrained`` writes and ``DDPMPipeline.from_pretrained`` reads (the
``google/ddpm-*`` pipelines on the Hugging Face hub: ``model_index.json``, ``unet/``, ``scheduler/``; that these
repositories use it is unverified here, no network).  diffusers builds and loads both parts (safetensors, or
its ``.bin`` files through ``torch.load(weights_only=True)``); written here only the adapter to the samplers'
prior protocol (``diffusion.py``): the schedule's abar_t in float64 from its betas, and the network's output
turned into the predicted noise for the scheduler's ``prediction_type`` (Salimans & Ho 2022 for v:
eps = sqrt(abar) v + sqrt(1 - abar) x_t; for x0: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from osir.core.registry import OptionsError

PREDICTIONS = ("epsilon", "v_prediction", "sample")


def pipeline_parts(folder: str | Path) -> tuple[Path, Path]:
    """(unet folder, scheduler folder) of a DDPM pipeline folder, or an ``OptionsError`` naming what is missing."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise OptionsError(f"method.prior_folder: '{folder}' is not a diffusers pipeline folder (no model_index.json; "
                           "the layout DDPMPipeline.save_pretrained writes: model_index.json, unet/, scheduler/)")
    parts = json.loads(index.read_text())
    for part in ("unet", "scheduler"):
        if part not in parts or not (folder / part).is_dir():
            raise OptionsError(f"method.prior_folder: '{folder}' has no {part}/ component (model_index.json lists "
                               f"{', '.join(k for k in parts if not k.startswith('_')) or 'none'})")
    return folder / "unet", folder / "scheduler"


def schedule_of(scheduler_folder: Path) -> tuple[torch.Tensor, str]:
    """(abar_t as float64 [T], prediction type) of the folder's scheduler config, through diffusers'
    ``DDPMScheduler`` (its betas for the config's ``beta_schedule`` / ``trained_betas``)."""
    from diffusers import DDPMScheduler
    config = DDPMScheduler.load_config(scheduler_folder)
    scheduler = DDPMScheduler.from_config(config)
    prediction = scheduler.config.prediction_type
    if prediction not in PREDICTIONS:
        raise OptionsError(f"method.prior_folder: the scheduler's prediction_type '{prediction}' is not one of "
                           f"{', '.join(PREDICTIONS)}")
    return torch.cumprod(1 - scheduler.betas.to(torch.float64), 0), prediction


class DiffusersUNetPrior(nn.Module):
    """A diffusers ``UNet2DModel`` answering as a noise network: ``forward(x_t, t) -> eps`` (the first three
    channels where the network also predicts a variance), whatever its scheduler's ``prediction_type``."""

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor, prediction: str):
        super().__init__()
        self.unet, self.prediction = unet, prediction
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.size_multiple = 2 ** (len(unet.config.block_out_channels) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.unet(x, t).sample[:, :x.shape[1]]
        if self.prediction == "epsilon":
            return out
        abar = self.alphas_cumprod.to(x.device)[t].to(x.dtype).view(-1, 1, 1, 1)
        if self.prediction == "v_prediction":
            return abar.sqrt() * out + (1 - abar).sqrt() * x
        return (x - abar.sqrt() * out) / (1 - abar).sqrt()


def load_diffusers_prior(folder: str | Path) -> tuple[DiffusersUNetPrior, torch.Tensor]:
    """(noise network, abar_t float64) of a DDPM pipeline folder (module docstring)."""
    from diffusers import UNet2DModel
    unet_folder, scheduler_folder = pipeline_parts(folder)
    alphas_cumprod, prediction = schedule_of(scheduler_folder)
    unet = UNet2DModel.from_pretrained(unet_folder)
    if unet.config.in_channels != 3:
        raise OptionsError(f"method.prior_folder: the UNet takes {unet.config.in_channels} channels; ZeroShot "
                           "restores RGB images (3)")
    return DiffusersUNetPrior(unet, alphas_cumprod, prediction), alphas_cumprod
