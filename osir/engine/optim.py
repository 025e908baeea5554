"""Optimisers and LR schedulers available to ``train.optimizers`` / ``train.scheduler``:
torch's Adam, AdamW, MultiStepLR and CosineAnnealingLR, and Lion (Chen et al. 2023) from the
lion-pytorch package."""
from __future__ import annotations

import torch
from lion_pytorch import Lion

from osir.registry import OPTIMIZERS, SCHEDULERS


def _register_optimizer(cls, name):
    def build(params, lr: float = 1e-4, betas: list[float] = (0.9, 0.999), weight_decay: float = 0.0, **kwargs):
        return cls(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **kwargs)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{cls.__module__}.{cls.__name__}"
    OPTIMIZERS.register(build, name=name)


_register_optimizer(torch.optim.Adam, "Adam")
_register_optimizer(torch.optim.AdamW, "AdamW")
_register_optimizer(Lion, "Lion")


@SCHEDULERS.register(name="MultiStepLR")
def multistep(optimizer, milestones: list[int], gamma: float = 0.5):
    """Multiply the LR by ``gamma`` at each milestone iteration."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


@SCHEDULERS.register(name="CosineAnnealingLR")
def cosine(optimizer, T_max: int, eta_min: float = 1e-7):
    """Cosine decay from the initial LR to ``eta_min`` over ``T_max`` iterations."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=T_max, eta_min=eta_min)
