"""Optimisers and LR schedulers for ``train.optimizers`` / ``train.scheduler``.

Optimisers are the library classes themselves (torch's Adam and AdamW, Lion from lion-pytorch,
Chen et al. 2023), so their options are validated against the real constructor signatures and
keep each optimiser's own defaults (Lion's betas are (0.9, 0.99)).  Schedulers are torch's
MultiStepLR and CosineAnnealingLR, and linear warmup followed by a constant or a cosine-decayed LR
(open_clip's ``cosine_lr`` schedule, used by DA-CLIP and OSEDiff) as closed-form factors on torch's
LambdaLR (torch's CosineAnnealingLR restarts after ``T_max`` rather than staying at the floor).
"""
from __future__ import annotations

import math

import torch
from lion_pytorch import Lion

from osir.core.registry import OPTIMIZERS, SCHEDULERS

OPTIMIZERS.register(torch.optim.Adam, name="Adam")
OPTIMIZERS.register(torch.optim.AdamW, name="AdamW")
OPTIMIZERS.register(Lion, name="Lion")


@SCHEDULERS.register(name="MultiStepLR")
def multistep(optimizer, milestones: list[int], gamma: float = 0.5):
    """Multiply the LR by ``gamma`` at each milestone iteration."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


@SCHEDULERS.register(name="CosineAnnealingLR")
def cosine(optimizer, T_max: int, eta_min: float = 1e-7):
    """Cosine decay from the initial LR to ``eta_min`` over ``T_max`` iterations."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=T_max, eta_min=eta_min)


def warmup_factor(step: int, warmup_iters: int) -> float:
    """Linear warmup: (step + 1) / warmup_iters for the first ``warmup_iters`` steps, then 1."""
    return min(1.0, (step + 1) / warmup_iters) if warmup_iters > 0 else 1.0


def warmup_cosine_factor(step: int, warmup_iters: int, total_iters: int, min_lr_ratio: float = 0.0) -> float:
    """Linear warmup, then lr = min + (1 - min) * (1 + cos(pi * e / E)) / 2 with e the steps after
    warmup and E = total_iters - warmup_iters; stays at the floor after ``total_iters``."""
    if step < warmup_iters:
        return warmup_factor(step, warmup_iters)
    progress = min(1.0, (step - warmup_iters) / max(1, total_iters - warmup_iters))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULERS.register(name="WarmupConstant")
def warmup_constant(optimizer, warmup_iters: int):
    """Linear warmup over ``warmup_iters`` iterations, then the optimiser's LR."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_factor(step, warmup_iters))


@SCHEDULERS.register(name="WarmupCosine")
def warmup_cosine(optimizer, warmup_iters: int, total_iters: int, min_lr_ratio: float = 0.0):
    """Linear warmup, then cosine decay to ``min_lr_ratio`` x LR at ``total_iters``."""
    if total_iters <= warmup_iters:
        raise ValueError(f"total_iters ({total_iters}) must exceed warmup_iters ({warmup_iters})")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_iters, total_iters, min_lr_ratio))
