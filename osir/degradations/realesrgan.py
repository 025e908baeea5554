"""Real-ESRGAN's high-order degradation model (Wang et al., "Real-ESRGAN: Training Real-World Blind
Super-Resolution with Pure Synthetic Data", ICCVW 2021, Sec. 3), split in two halves:

* ``draw(seed)`` runs in the dataset workers (cheap, CPU): the blur kernels (basicsr's
  ``random_mixed_kernels`` / ``circular_lowpass_kernel``) and every random choice of the pipeline,
  as tensors, so a sample's degradation is a function of its seed and can be recorded;
* ``__call__(gt, params)`` runs on whole batches on the training device (image by image with
  ``per_image``, the osediff preset): two rounds of
  [blur -> resize -> noise -> JPEG], then [resize back + sinc] and JPEG in random order, then 8-bit
  quantisation, with basicsr's ``filter2D``, ``add_gaussian_noise_pt``, ``add_poisson_noise_pt``
  and ``DiffJPEG``.  The resize choices (one output size per batch) and the Gaussian-or-Poisson choice
  apply to a whole batch, taken from its first sample, as Real-ESRGAN draws them per batch; blur
  kernels, noise strength, grey noise and JPEG quality are per sample.  The noise fields come from torch's generator,
  which the engine seeds per micro-batch (and ``osir.degrade`` per image).

Every probability and range is an option; ``preset`` picks Real-ESRGAN's ``x4plus`` defaults or
OSEDiff's (the same probabilities, no USM sharpening, every choice per image, the LQ resized back
to the GT size with a drawn mode and then rounded to 8 bits, as the release's data code does).  The extra
probabilities ``blur_prob``, ``noise_prob``/``noise_prob2`` and ``jpeg_prob``/``jpeg_prob2``
(1 in both presets, so always applied as in the paper) let a stage be switched off.
"""
from __future__ import annotations

import math
import random
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveInt

from osir.core.lazy import basicsr_module     # basicsr imported when first used: option checks stay light
from osir.data.io import DataError, quantise
from osir.data.sampler import BATCH_DEGRADATION, sample_rng
from osir.degradations.usm import SeparableUSMSharp
from osir.core.options import validate
from osir.core.registry import BATCH_DEGRADATIONS, OptionsError, nearest

basicsr_kernels = basicsr_module("data.degradations")
basicsr_jpeg = basicsr_module("utils.diffjpeg")
basicsr_filter = basicsr_module("utils.img_process_util")

KERNELS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
MODES = ["area", "bilinear", "bicubic"]
KERNEL_SIZE = 21

_X4PLUS = dict(
    scale=4, use_usm=True, resize_lq_to_gt=False, round_before_resize_back=False,
    kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc_prob=0.1, blur_sigma=[0.2, 3.0],
    betag_range=[0.5, 4.0], betap_range=[1.0, 2.0],
    kernel_prob2=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc_prob2=0.1, blur_sigma2=[0.2, 1.5],
    betag_range2=[0.5, 4.0], betap_range2=[1.0, 2.0], final_sinc_prob=0.8,
    blur_prob=1.0, resize_prob=[0.2, 0.7, 0.1], resize_range=[0.15, 1.5], noise_prob=1.0,
    gaussian_noise_prob=0.5, noise_range=[1.0, 30.0], poisson_scale_range=[0.05, 3.0], gray_noise_prob=0.4,
    jpeg_prob=1.0, jpeg_range=[30.0, 95.0],
    second_blur_prob=0.8, resize_prob2=[0.3, 0.4, 0.3], resize_range2=[0.3, 1.2], noise_prob2=1.0,
    gaussian_noise_prob2=0.5, noise_range2=[1.0, 25.0], poisson_scale_range2=[0.05, 2.5], gray_noise_prob2=0.4,
    jpeg_prob2=1.0, jpeg_range2=[30.0, 95.0], resize_mode_prob=[1 / 3, 1 / 3, 1 / 3],
)
_X4PLUS["per_image"] = False
# OSEDiff's data code: the same probabilities, no USM, every choice per image, the LQ resized back to the
# GT size with a mode drawn from area / bilinear / bicubic and rounded to 8 bits once, after that resize
# (round_before_resize_back: true also rounds it before, as osir did earlier)
PRESETS = {"realesrgan_x4": _X4PLUS,
           "osediff": {**_X4PLUS, "use_usm": False, "resize_lq_to_gt": True, "per_image": True}}


#: the choices each probability list of the presets distributes over
CHOICES = {"kernel_prob": KERNELS, "resize_prob": ["up", "down", "keep"], "resize_mode_prob": MODES}


def check_settings(opt: dict) -> None:
    """Probabilities in [0, 1], choice distributions of the right length summing to 1, ranges
    [low, high]; an error names the key."""
    for key, value in opt.items():
        where = f"degradation.{key}"
        if key.endswith("_prob") or key.endswith("_prob2"):
            values = value if isinstance(value, list) else [value]
            if any(not 0.0 <= v <= 1.0 for v in values):
                raise OptionsError(f"{where}: probabilities must lie in [0, 1], got {value}")
            if isinstance(value, list):
                choices = CHOICES[key.rstrip("2")]
                if len(value) != len(choices):
                    raise OptionsError(f"{where}: expected {len(choices)} probabilities ({', '.join(choices)}), "
                                       f"got {len(value)}")
                if abs(sum(value) - 1.0) > 1e-6:
                    raise OptionsError(f"{where}: probabilities must sum to 1, got {sum(value):.6g} ({value})")
        elif isinstance(value, list):
            if len(value) != 2 or value[0] > value[1]:
                raise OptionsError(f"{where}: expected a range [low, high], got {value}")
            if value[0] < 0:
                raise OptionsError(f"{where}: must not be negative, got {value}")


@BATCH_DEGRADATIONS.register()
class RealESRGANDegradation:
    """Args: ``preset`` ('realesrgan_x4' or 'osediff') and any of its keys to override
    (see ``PRESETS``; probabilities in [0, 1], ranges [low, high], sigmas in 8-bit units);
    ``pool_size``: Real-ESRGAN's training-pair pool; ``gt_size``: after degrading the loader's
    (larger) patches, crop a random ``gt_size`` GT patch and its LQ, one position per batch, and
    sharpen the cropped (pooled) GT again for the target, as Real-ESRGAN degrades 400x400 crops and
    then trains on 256x256 patches.

    The stage returns ``{'lq', 'gt', 'gt_unsharpened'}``: ``gt`` is the USM-sharpened target when the
    preset sharpens (Real-ESRGAN's pixel and perceptual losses use it), ``gt_unsharpened`` the GT
    itself (its discriminator's real samples, ``gan_gt_usm: false``)."""

    def __init__(self, preset: str = "realesrgan_x4", pool_size: NonNegativeInt = 0, gt_size: Optional[PositiveInt] = None,
                 **overrides):
        if preset not in PRESETS:
            raise OptionsError(f"degradation.preset: unknown preset '{preset}'{nearest(preset, PRESETS)}; "
                               f"allowed: {', '.join(PRESETS)}")
        for key, value in overrides.items():
            if key not in PRESETS[preset]:
                raise OptionsError(f"degradation.{key}: unknown key{nearest(key, PRESETS[preset])}; "
                                   f"allowed: preset, pool_size, {', '.join(PRESETS[preset])}")
            overrides[key] = validate(value, list[float] if isinstance(PRESETS[preset][key], list)
                                      else type(PRESETS[preset][key]), f"degradation.{key}")
        self.opt = {**PRESETS[preset], **overrides}
        check_settings(self.opt)
        if gt_size is not None and gt_size % self.opt["scale"]:
            raise OptionsError(f"degradation.gt_size: {gt_size} is not a multiple of the scale {self.opt['scale']}")
        self.gt_size = gt_size
        self.preset, self.pool = preset, PairPool(pool_size) if pool_size else None
        self.usm = SeparableUSMSharp() if self.opt["use_usm"] else None
        self.jpeg = basicsr_jpeg.DiffJPEG(differentiable=False)

    # -- per sample, in the workers ----------------------------------------------------------
    def _kernel(self, rng: np.random.Generator, suffix: str) -> np.ndarray:
        o = self.opt
        size = int(rng.choice(np.arange(7, KERNEL_SIZE + 1, 2)))
        if rng.random() < o["sinc_prob" + suffix]:
            cutoff = rng.uniform(np.pi / 3, np.pi) if size < 13 else rng.uniform(np.pi / 5, np.pi)
            kernel = basicsr_kernels.circular_lowpass_kernel(cutoff, size, pad_to=False)
        else:
            kernel = basicsr_kernels.random_mixed_kernels(
                KERNELS, o["kernel_prob" + suffix], size, o["blur_sigma" + suffix], o["blur_sigma" + suffix],
                [-math.pi, math.pi], o["betag_range" + suffix], o["betap_range" + suffix], noise_range=None)
        pad = (KERNEL_SIZE - size) // 2
        return np.pad(kernel, ((pad, pad), (pad, pad)))

    def draw(self, seed: int) -> dict[str, torch.Tensor]:
        """All random choices of one sample's degradation, from its seed."""
        o = self.opt
        rng = sample_rng(seed, BATCH_DEGRADATION)
        # basicsr's kernel generators draw from the global np.random and random modules
        np.random.seed(int(rng.integers(2 ** 31)))
        random.seed(int(rng.integers(2 ** 31)))
        p = {"kernel1": self._kernel(rng, ""), "kernel2": self._kernel(rng, "2")}
        if rng.random() < o["final_sinc_prob"]:
            size = int(rng.choice(np.arange(7, KERNEL_SIZE + 1, 2)))
            p["sinc_kernel"] = basicsr_kernels.circular_lowpass_kernel(rng.uniform(np.pi / 3, np.pi), size,
                                                                       pad_to=KERNEL_SIZE)
        else:
            p["sinc_kernel"] = np.pad(np.ones((1, 1)), KERNEL_SIZE // 2)      # identity pulse
        p["blur1"] = rng.random() < o["blur_prob"]
        p["blur2"] = rng.random() < o["second_blur_prob"]
        for r, suffix in ((1, ""), (2, "2")):
            updown = rng.choice(3, p=o["resize_prob" + suffix])                # up, down, keep
            low, high = o["resize_range" + suffix]
            p[f"scale{r}"] = [rng.uniform(1, high), rng.uniform(low, 1), 1.0][updown]
            p[f"mode{r}"] = rng.choice(3, p=o["resize_mode_prob"])
            p[f"noise{r}"] = rng.random() < o["noise_prob" + suffix]
            p[f"gaussian{r}"] = rng.random() < o["gaussian_noise_prob" + suffix]
            p[f"sigma{r}"] = rng.uniform(*o["noise_range" + suffix])
            p[f"poisson{r}"] = rng.uniform(*o["poisson_scale_range" + suffix])
            p[f"gray{r}"] = float(rng.random() < o["gray_noise_prob" + suffix])
            p[f"jpeg{r}"] = rng.random() < o["jpeg_prob" + suffix]
            p[f"quality{r}"] = rng.uniform(*o["jpeg_range" + suffix])
        p["final_mode"] = rng.choice(3, p=o["resize_mode_prob"])
        p["sinc_first"] = rng.random() < 0.5
        p["back_mode"] = rng.choice(3, p=o["resize_mode_prob"])      # resize back to the GT size (osediff)
        return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in p.items()}

    # -- per batch, on the device ------------------------------------------------------------
    @staticmethod
    def _where(x, choose, fn):
        """fn applied to the samples where ``choose`` is true (computed only for those)."""
        idx = choose.bool().nonzero().view(-1)
        if idx.numel() == 0:
            return x
        if idx.numel() == x.shape[0]:
            return fn(x, idx)
        out = x.clone()
        out[idx] = fn(x[idx], idx)
        return out

    def _noise(self, x, p, r):
        def gaussian(y, idx):
            return basicsr_kernels.add_gaussian_noise_pt(y, sigma=p[f"sigma{r}"][idx], gray_noise=p[f"gray{r}"][idx],
                                                         clip=True, rounds=False)

        def poisson(y, idx):
            return basicsr_kernels.add_poisson_noise_pt(y, scale=p[f"poisson{r}"][idx], gray_noise=p[f"gray{r}"][idx],
                                                        clip=True, rounds=False)

        # Gaussian or Poisson is chosen per batch (from its first sample), as Real-ESRGAN does; the
        # strength, grey/colour and on/off are per sample
        return self._where(x, p[f"noise{r}"], gaussian if bool(p[f"gaussian{r}"][0]) else poisson)

    def _jpeg(self, x, p, r):
        # DiffJPEG returns a non-contiguous tensor, on which filter2D's view() fails on the CPU
        return self._where(x, p[f"jpeg{r}"], lambda y, idx: self.jpeg(y.clamp(0, 1), quality=p[f"quality{r}"][idx].clone())
                           .contiguous())

    def _blur(self, x, kernel, on):
        return self._where(x, on, lambda y, idx: basicsr_filter.filter2D(y, kernel[idx]))

    def _crop(self, pair: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A random ``gt_size`` GT patch and the LQ patch under it (one position for the batch, from
        torch's generator, which the engine seeds per micro-batch)."""
        h, w = pair["gt"].shape[-2:]
        size = self.gt_size
        if size > min(h, w):
            raise DataError(f"degradation.gt_size {size} exceeds the {h}x{w} GT patches the loader gives")
        f = 1 if self.opt["resize_lq_to_gt"] else self.opt["scale"]
        # the position is drawn on the LQ grid, so the GT patch sits exactly over the LQ patch
        top, left = (int(torch.randint(0, (n - size) // f + 1, ())) * f for n in (h, w))
        out = {}
        for key, value in pair.items():
            g = f if key == "lq" else 1
            out[key] = value[..., top // g:(top + size) // g, left // g:(left + size) // g]
        return out

    def _degrade(self, gt: torch.Tensor, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(LQ on the 8-bit grid, target) of a batch whose batch-level choices come from its first sample."""
        o = self.opt
        h, w = gt.shape[-2:]
        target = self.usm.to(gt.device)(gt) if self.usm is not None else gt
        out = self._blur(target, p["kernel1"], p["blur1"])
        out = F.interpolate(out, scale_factor=float(p["scale1"][0]), mode=MODES[int(p["mode1"][0])])
        out = self._jpeg(self._noise(out, p, 1), p, 1)
        # the second blur is on or off for the whole batch (from its first sample), as in Real-ESRGAN
        out = self._blur(out, p["kernel2"], p["blur2"][:1].expand_as(p["blur2"]))
        size = (int(h / o["scale"] * float(p["scale2"][0])), int(w / o["scale"] * float(p["scale2"][0])))
        out = F.interpolate(out, size=size, mode=MODES[int(p["mode2"][0])])
        out = self._noise(out, p, 2)
        final_size, final_mode = (h // o["scale"], w // o["scale"]), MODES[int(p["final_mode"][0])]

        def resize_sinc(x):
            return basicsr_filter.filter2D(F.interpolate(x, size=final_size, mode=final_mode), p["sinc_kernel"])

        if bool(p["sinc_first"][0]):
            out = self._jpeg(resize_sinc(out), p, 2)
        else:
            out = resize_sinc(self._jpeg(out, p, 2))
        if o["resize_lq_to_gt"]:
            if o["round_before_resize_back"]:
                out = quantise(out, 8) / 255.0
            out = F.interpolate(out, size=(h, w), mode=MODES[int(p["back_mode"][0])])
        lq = quantise(out, 8) / 255.0
        return lq, target

    @torch.no_grad()
    def __call__(self, gt: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{'lq', 'gt', 'gt_unsharpened'}`` for a batch of GT in [0, 1]; ``params`` stacks ``draw`` outputs."""
        o, p = self.opt, {k: v.to(gt.device) for k, v in params.items()}
        h, w = gt.shape[-2:]
        # the second blur runs after the first resize, the sinc filter at GT/scale: both need > radius
        shrink = min(o["resize_range"][0], 1.0) if o["resize_prob"][1] > 0 else 1.0
        smallest = min(h * shrink, h / o["scale"])
        if smallest <= KERNEL_SIZE // 2:
            raise DataError(f"GT patches of {h}x{w} are too small for this degradation: its resizes can shrink them to "
                             f"{smallest:.0f} px, not more than the {KERNEL_SIZE}x{KERNEL_SIZE} blur kernel's radius; "
                             f"use a larger gt_size (Real-ESRGAN uses 256)")
        self.jpeg = self.jpeg.to(gt.device)
        if o["per_image"]:       # every choice (sizes, modes, noise kind, second blur) per image
            parts = [self._degrade(gt[i:i + 1], {k: v[i:i + 1] for k, v in p.items()}) for i in range(gt.shape[0])]
            lq, target = torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])
        else:
            lq, target = self._degrade(gt, p)
        pair = {"lq": lq, "gt": target, "gt_unsharpened": gt}
        if self.gt_size is not None:
            pair = self._crop(pair)
        if self.pool is not None:
            pair = self.pool(pair)
        if self.usm is not None and self.gt_size is not None:
            # Real-ESRGAN sharpens the cropped (and pooled) patch again for the loss target, so the
            # target's borders are the patch's own, not the larger image's
            pair["gt"] = self.usm(pair["gt_unsharpened"])
        return pair


class PairPool:
    """Real-ESRGAN's training-pair pool: a queue of recent pairs; once full, each batch is swapped
    with random pool entries so a batch mixes degradations drawn for other batches.  The entries of a
    pair (lq, gt, gt_unsharpened) stay together."""

    def __init__(self, size: int):
        self.size, self.entries, self.filled = size, None, 0

    def __call__(self, pair: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        b = pair["lq"].shape[0]
        if self.size % b:
            raise OptionsError(f"degradation.pool_size {self.size} is not a multiple of the batch size {b}")
        if self.entries is None:
            self.entries = {k: v.new_empty((self.size, *v.shape[1:])) for k, v in pair.items()}
        if self.filled < self.size:              # fill first
            for k, v in pair.items():
                self.entries[k][self.filled:self.filled + b] = v
            self.filled += b
            return pair
        order = torch.randperm(self.size, device=pair["lq"].device)
        out = {}
        for k, v in pair.items():
            self.entries[k] = self.entries[k][order]
            out[k] = self.entries[k][:b].clone()
            self.entries[k][:b] = v
        return out
