"""The interface between the engine and a method.

A method owns its networks (``self.networks``: name -> module; frozen pretrained parts are
simply networks without trainable parameters or left out of ``train.optimizers``), its losses
and its optimisation step, and restores images with ``restore(lq, **conditions)``.  The engine
builds the optimisers named in ``train.optimizers``, wraps everything with accelerate, keeps EMA
copies, and calls ``training_step`` once per micro-batch.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn


class Method:
    """Base class. Subclasses fill ``self.networks`` in ``__init__`` and implement
    ``training_step`` and ``restore``; they call ``self.optimize(name, loss)`` for each
    optimiser they step (several networks and optimisers are fine)."""

    #: spatial multiple the LQ must have for ``restore`` (tiling and padding use it)
    size_multiple: int = 1
    #: output size / input size
    scale: int = 1

    def __init__(self):
        self.networks: dict[str, nn.Module] = {}
        self.eval_networks: dict[str, nn.Module] | None = None   # EMA copies during validation
        self.accelerator = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.grad_clip: float | None = None

    # -- engine hooks -----------------------------------------------------------------------
    def attach(self, accelerator, optimizers: dict, grad_clip: float | None = None) -> None:
        self.accelerator, self.optimizers, self.grad_clip = accelerator, optimizers, grad_clip

    @property
    def device(self) -> torch.device:
        if self.accelerator is not None:
            return self.accelerator.device
        return next(p.device for net in self.networks.values() for p in net.parameters())

    def net(self, name: str) -> nn.Module:
        """The network to use for inference: its EMA copy during validation, else the network."""
        nets = self.eval_networks if self.eval_networks is not None else self.networks
        net = nets[name]
        return self.accelerator.unwrap_model(net) if self.accelerator is not None else net

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """Backward ``loss`` and, on the last micro-batch of an accumulation, clip and step
        optimiser ``name``."""
        acc = self.accelerator
        acc.backward(loss)
        opt = self.optimizers[name]
        if acc.sync_gradients and self.grad_clip:
            params = [p for group in opt.param_groups for p in group["params"]]
            acc.clip_grad_norm_(params, self.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def autocast(self):
        return self.accelerator.autocast() if self.accelerator is not None else nullcontext()

    # -- to implement -----------------------------------------------------------------------
    def training_step(self, batch: dict) -> dict[str, float]:
        """One micro-batch: compute losses, call ``optimize``; return scalars to log."""
        raise NotImplementedError

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, **conditions) -> torch.Tensor:
        """Restore a batch of LQ images (B x 3 x H x W in [0, 1]); returns B x 3 x sH x sW."""
        raise NotImplementedError

    def load_pretrained(self, name: str, path: str, strict: bool = True) -> None:
        """Load weights for network ``name``: osir's safetensors, or an official release file
        (methods override this to convert official layouts)."""
        from osir.engine.checkpoint import load_network
        load_network(self.networks[name], path, strict=strict)
