"""What ``osir export onnx`` exports of a network: one ``GraphSpec`` per ONNX graph, and the helpers the
method folders' graph builders (``osir/methods/<name>/onnx.py``, named in their card's ``exports``) share.

A builder takes the built network and returns its ``GraphSpec`` list: the module to trace (the network, or
a small wrapper that fixes its call signature or pads its input), inputs of any batch / height / width for
the onnxruntime checks, input / output names, ``torch.export`` dynamic shapes, the size contract and the
shape descriptions written into the model card.  Hand-written because ``torch.onnx.export`` takes one module
and one example; what varies per network (names, extra inputs, padded sizes) has to be said somewhere, and
this keeps it beside the network's method.  This module names no method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GraphSpec", "image_input", "dynamic_dims", "pad_to", "round_up", "time_steps"]


@dataclass
class GraphSpec:
    """One ONNX graph: the module to export, its inputs for an image of b x h x w, names, shapes."""

    suffix: str                                   # "" or ".encoder" / ".decoder" (added to the output's stem)
    module: nn.Module
    inputs: Callable[[int, int, int, torch.Generator], tuple]   # (batch, height, width, generator) -> tensors
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: Callable[[], tuple]
    multiple: int = 1                             # image height / width must be a multiple of this
    min_size: int = 1                             # ... and at least this
    role: str = ""
    io: dict = field(default_factory=dict)        # name -> shape description, for the card
    #: ``--int8``: the factor the calibration photos are downscaled by (a super-resolution network's scale:
    #: its inputs are small images); None where the graph is exported in fp32 only
    calibration_scale: Optional[int] = None

    def reference(self, inputs: tuple) -> list[np.ndarray]:
        with torch.no_grad():
            out = self.module(*inputs)
        return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def round_up(n, m: int):
    """``n`` rounded up to a multiple of ``m``, written so that ``torch.export`` knows the result is one."""
    return (n + m - 1) // m * m


def pad_to(x: torch.Tensor, m: int) -> torch.Tensor:
    """Reflect-pad bottom / right to a multiple of ``m``, written so that the padded size is provably a
    multiple (a network's own ``if any(pad)`` then folds away at export instead of fixing a branch)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, round_up(w, m) - w, 0, round_up(h, m) - h), mode="reflect")


def image_input(b: int, c: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A b x c x h x w input in [0, 1)."""
    return torch.rand(b, c, h, w, generator=gen)


def time_steps(b: int, gen: torch.Generator) -> torch.Tensor:
    """One float time step per batch element (1..99), as a sampler passes ``t`` to a noise network."""
    return torch.randint(1, 100, (b,), generator=gen).float()


def dynamic_dims():
    """``torch.export`` dimensions (batch, height, width)."""
    from torch.export import Dim
    return Dim("batch"), Dim("height"), Dim("width")
