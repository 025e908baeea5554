"""A zero-shot task's measurement y = A x + sigma_y n as an image, and back (issue 25 point 5).

A test set holds images, a zero-shot sampler needs y in the operator's space, in the priors' units [-1, 1]
(DPS, DDRM and DDNM measure there: sigma_y 0.05 on [-1, 1]).  ``measurement_image`` renders y as the LQ image of
a test set: the low-resolution image for super-resolution (or, ``upsampled``, that image repeated to the output
size, nearest neighbour, so that every task's LQ has the GT's size), the noisy or blurred image for denoising and
deblurring, the masked image (holes at the value 0, mid-grey) for inpainting, the grey image (three equal
channels) for colourisation, all (y + 1) / 2 and never clipped (clipping would change the noise the sampler's
likelihood assumes).  ``measurement_from_image`` reads it back exactly (an upsampled image by block averaging).

The registered degradation ``ZeroShotMeasurement`` makes such test sets from clean images, and hands its
``Measurement`` (task, sigma_y, operator seed, upsampled) to the method with every item, so the ``ZeroShot``
method builds the very operator that made the LQ.  Hand-written: the operators and this rendering are osir's own
(``operators.py``).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

from osir.core.registry import DEGRADATIONS
from osir.methods.zeroshot.operators import OPERATORS, Colorization, Operator

#: the tasks a ZeroShot method restores: operator names of ``operators.OPERATORS``
Task = Literal["denoise", "sr2_bicubic", "sr2_pool", "sr4_bicubic", "sr4_pool", "gaussian_blur", "motion_blur",
               "inpaint_box", "inpaint_random", "colorize"]
#: the tasks in a fixed order: a test set's items carry their task as an index into it
TASKS: tuple[str, ...] = typing.get_args(Task)
#: super-resolution tasks and their factor (the LQ is that many times smaller)
SCALES = {"sr2_bicubic": 2, "sr2_pool": 2, "sr4_bicubic": 4, "sr4_pool": 4}


@dataclass(frozen=True)
class Measurement:
    """How a LQ image was measured: the task's operator (with ``sigma_y`` in [-1, 1] units and the seed of its
    random parts) and whether a super-resolution LQ is ``upsampled`` to the output size."""
    task: str
    sigma_y: float = 0.05
    operator_seed: int = 0
    upsampled: bool = False

    @property
    def factor(self) -> int:
        """The super-resolution factor of the task (1 for the others)."""
        return SCALES.get(self.task, 1)

    @property
    def scale(self) -> int:
        """Output size / LQ size."""
        return 1 if self.upsampled else self.factor

    def operator(self, output_size: tuple[int, int]) -> Operator:
        return build_operator(self.task, output_size, self.sigma_y, self.operator_seed)

    def as_numbers(self) -> dict[str, float]:
        """The item's ``degradation`` entry (numbers: data loaders stack them into tensors)."""
        return {"zeroshot_task": float(TASKS.index(self.task)), "sigma_y": self.sigma_y,
                "operator_seed": float(self.operator_seed), "upsampled": float(self.upsampled)}

    @classmethod
    def of_batch(cls, batch: dict) -> Optional["Measurement"]:
        """The measurement a batch's items carry (``as_numbers``), None when they carry none; an error when its
        items were measured differently (one operator per batch)."""
        numbers = batch.get("degradation") or {}
        if "zeroshot_task" not in numbers:
            return None
        found = {cls(TASKS[int(numbers["zeroshot_task"][i])], float(numbers["sigma_y"][i]),
                     int(numbers["operator_seed"][i]), bool(numbers["upsampled"][i]))
                 for i in range(len(numbers["zeroshot_task"]))}
        if len(found) > 1:
            raise ValueError(f"a batch holds images of {len(found)} different measurements; restore them one "
                             "measurement per batch")
        return found.pop()


def build_operator(task: str, size: tuple[int, int], sigma_y: float, operator_seed: int) -> Operator:
    """The operator of ``task`` for images of ``size`` (H, W) with noise ``sigma_y`` (units of [-1, 1]); its random
    parts (an inpainting mask, a motion kernel) drawn from a CPU generator seeded with ``operator_seed``, so the
    degradation and the method build the same one."""
    if task not in OPERATORS:
        raise ValueError(f"unknown task '{task}'; tasks: {', '.join(OPERATORS)}")
    return OPERATORS[task](tuple(int(s) for s in size), torch.Generator().manual_seed(int(operator_seed)),
                           float(sigma_y))


def measurement_image(operator: Operator, y: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """y [B, C', H', W'] in [-1, 1] units as the LQ image [B, 3, H' repeat, W' repeat] in [0, 1] units (not
    clipped); ``repeat``: each pixel repeated that many times along both sides (an upsampled SR measurement)."""
    if isinstance(operator, Colorization):
        y = y.expand(-1, 3, -1, -1)
    if repeat > 1:
        y = y.repeat_interleave(repeat, dim=-2).repeat_interleave(repeat, dim=-1)
    return (y + 1) / 2


def measurement_from_image(operator: Operator, lq: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """The inverse of ``measurement_image``: the LQ image [B, 3, H, W] in [0, 1] as y in [-1, 1] units (an image
    of ``repeat``-times repeated pixels averaged back over its blocks)."""
    y = 2 * lq - 1
    if repeat > 1:
        y = F.avg_pool2d(y, repeat)
    return y[:, :1] if isinstance(operator, Colorization) else y


@DEGRADATIONS.register()
class ZeroShotMeasurement:
    """A clean image x (H x W x 3 in [0, 1]) -> the LQ image of y = A(2x - 1) + sigma_y n (``measurement_image``),
    with the ``ZeroShot`` method's operator (``task``, ``sigma_y`` in [-1, 1] units, ``operator_seed``) and n drawn
    from the sample's own random stream (replayable from its seed)."""

    def __init__(self, task: Task = "sr4_bicubic", sigma_y: float = 0.05, operator_seed: int = 0,
                 upsampled: bool = False):
        if sigma_y < 0:
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
        self.measurement = Measurement(task, float(sigma_y), int(operator_seed), bool(upsampled))

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        m = self.measurement
        operator = m.operator(gt.shape[:2])
        x = torch.from_numpy(np.ascontiguousarray(gt.transpose(2, 0, 1), dtype=np.float64))[None] * 2 - 1
        y = operator(x)
        noise = torch.from_numpy(rng.standard_normal(tuple(y.shape)))
        lq = measurement_image(operator, y + m.sigma_y * noise, m.factor if m.upsampled else 1)
        return lq[0].numpy().transpose(1, 2, 0).astype(np.float32), m.as_numbers()
