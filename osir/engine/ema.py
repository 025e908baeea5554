"""Exponential moving average of a network's trained tensors.

Written here because torch's ``AveragedModel`` deep-copies the whole module (3.4 GB for an SD UNet
that trains only LoRA) and diffusers' ``EMAModel`` would make every method import diffusers.  The
shadow holds the trained parameters only, updated with torch's multi-tensor EMA update
(``get_ema_multi_avg_fn``); for evaluation the shadow and the live tensors swap storage, which
copies nothing.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


class ParameterEMA:
    """EMA of the parameters ``named`` ({name: parameter}), ema = decay * ema + (1 - decay) * p,
    updated every ``update_every`` iterations."""

    def __init__(self, named: dict[str, nn.Parameter], decay: float, update_every: int = 1):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if update_every < 1:
            raise ValueError(f"update_every must be at least 1, got {update_every}")
        self.names = list(named)
        self.params = list(named.values())
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.update_every = decay, update_every
        self.num_updates = 0
        self._update = get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(self, iteration: int) -> None:
        """Called after every optimiser iteration; averages on multiples of ``update_every``."""
        if iteration % self.update_every == 0:
            self._update(self.shadow, [p.detach() for p in self.params], self.num_updates)
            self.num_updates += 1

    @contextmanager
    def swapped(self):
        """Inside the block the parameters hold the EMA values (storage swap, no copy)."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def _swap(self) -> None:
        for i, p in enumerate(self.params):
            p.data, self.shadow[i] = self.shadow[i], p.data
