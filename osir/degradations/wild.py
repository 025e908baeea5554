"""The synthetic in-the-wild degradation of wild IR (Luo, Gustafsson, Zhao, Sjölund and Schön,
"Photo-Realistic Image Restoration in the Wild with Controlled Vision-Language Models", CVPR Workshops
2024, arXiv:2404.09732, the follow-up of DA-CLIP), as a batch degradation for restoration: the LQ has
the GT's size.

What the paper says: all LQ images are simulated with "a synthetic degradation pipeline that contains
multiple common degradations such as blur, resize, noise, and JPEG compression", a higher-order
process in the manner of Real-ESRGAN.  Its numbers are not in the text; they come from the authors'
released code, ``random_degrade`` in ``universal-image-restoration/data/deg_util.py`` of
github.com/Algolzw/daclip-uir (commit 74b7851), which the wild-IR and wild-DA-CLIP training data use.
That code runs three stages, each in its own random order drawn per image:

1. blur (p 0.8), resize (p 0.8), noise (p 0.4), JPEG (p 0.4);
2. blur (p 0.4, smaller kernels), noise (p 0.2);
3. blur (p 0.8, mostly sinc), resize back to the GT size, JPEG (p 0.4, quality 80-100);

then 8-bit rounding.  Here every stage has the same four operations, shuffled per stage and per
image, each with its own probability and ranges as options; the defaults (preset ``wild_ir``) are
the released code's values, an operation that its stage lacks having probability 0 (stage 2's
resize, stage 3's noise).  The resize of stages 1 and 2 rescales by a drawn factor; the resize of
stage 3 is the resize back to the GT size, at its drawn place in stage 3's order (as in the released
code), done whenever the image is not at the GT size then, so the LQ always has the GT size.

basicsr's parts: the blur kernels (``random_mixed_kernels``: isotropic / anisotropic / generalised /
plateau Gaussians; ``circular_lowpass_kernel``: the sinc filter), ``filter2D``, the noise
(``add_gaussian_noise_pt``, ``add_poisson_noise_pt``) and ``DiffJPEG``; the blur / JPEG / masking
helpers of :class:`osir.degradations.realesrgan.RealESRGANDegradation` are called as they are.

Where this differs from the released code (the paper does not go into these details):

* kernels: the released code adds defocus, box, line-motion and recorded-PSF kernels (probability
  0.19 together), a Wiener-deconvolution "ringing" step (p 0.1 after Gaussian-family blurs under
  8 px) and an under-display-camera PSF filter when a blur is skipped (p 0.2); these are not part
  of basicsr (two need the authors' PSF data files) and are left out.  The six basicsr kernel
  families keep the released code's weights (0.35, 0.2, 0.1, 0.03, 0.1, 0.03) renormalised to sum
  to 1; sizes, sigmas, beta ranges, the multiplicative kernel noise [0.9, 1.1] and the sinc
  cut-offs are the released code's.
* resize: the released code divides the size by a factor drawn uniformly from [0.5, 1.4] (so it
  scales by 0.71-2.0, up with probability 5/9); here, as in Real-ESRGAN, ``resize_prob`` gives
  up / down / keep (0.8 * 5/9, 0.8 * 4/9, 0.2) and the factor is uniform in [1, 2.0] or
  [0.71, 1]; the modes are torch's area / bilinear / bicubic (cv2's in the released code), drawn
  per resize with ``resize_mode_prob``.
* noise: as in the released code, Gaussian (p 0.6) and Poisson (p 0.4) are drawn independently
  (either, both or none), each grey with p 0.4, and the noisy image is rounded to 8 bits.
* JPEG: basicsr's ``DiffJPEG`` instead of cv2; cv2 truncates the quality to an integer, so the
  released range 80-100 never reaches 100, and ``DiffJPEG``'s quality 100 divides by a zero table:
  drawn qualities above 99 are taken as 99.
* random numbers: every choice (order, kernels, probabilities, strengths, sizes, modes) is drawn in
  ``draw(seed)`` from the sample's seed; the noise fields come from torch's generator, which the
  engine seeds per micro-batch and ``osir.degrade`` per image.  Each image of a batch is degraded
  on its own (its sizes and order are its own).
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F

from osir.core.lazy import basicsr_module     # basicsr imported when first used: option checks stay light
from osir.data.io import DataError, quantise
from osir.data.sampler import BATCH_DEGRADATION, sample_rng
from osir.degradations.realesrgan import KERNEL_SIZE, KERNELS, MODES, RealESRGANDegradation
from osir.core.options import validate
from osir.core.registry import BATCH_DEGRADATIONS, OptionsError, nearest

basicsr_kernels = basicsr_module("data.degradations")
basicsr_jpeg = basicsr_module("utils.diffjpeg")

#: the operations of a stage; ``draw`` returns each stage's order as indices into this list
OPERATIONS = ["blur", "resize", "noise", "jpeg"]
STAGES = {1: "", 2: "2", 3: "3"}        # stage -> option-key suffix
MAX_JPEG_QUALITY = 99.0                 # DiffJPEG's quality 100 divides by zero

# over KERNELS: the released code's weights of basicsr's six families, renormalised
_KERNEL_PROB = [w / 0.81 for w in (0.35, 0.2, 0.1, 0.03, 0.1, 0.03)]


def _stage(blur_prob, kernel_size, sinc_prob, blur_sigma, noise_prob, jpeg_prob, jpeg_range, suffix,
           resize_prob=None):
    o = {"blur_prob": blur_prob, "kernel_size": kernel_size, "sinc_prob": sinc_prob, "kernel_prob": list(_KERNEL_PROB),
         "blur_sigma": blur_sigma, "betag_range": [0.5, 2.0], "betap_range": [1.0, 1.5]}
    if resize_prob is not None:          # stage 3's resize is the resize back to the GT size
        o.update(resize_prob=resize_prob, resize_range=[1 / 1.4, 2.0])
    o.update(noise_prob=noise_prob, gaussian_noise_prob=0.6, noise_range=[1.0, 5.0], poisson_noise_prob=0.4,
             poisson_scale_range=[0.01, 0.5], gray_noise_prob=0.4, jpeg_prob=jpeg_prob, jpeg_range=jpeg_range)
    return {key + suffix: value for key, value in o.items()}


# the released code's values (deg_util.random_degrade, see the module docstring)
_WILD_IR = {
    **_stage(0.8, [5, 19], 0.1, [0.2, 2.2], 0.4, 0.4, [60.0, 95.0], "", resize_prob=[0.8 * 5 / 9, 0.8 * 4 / 9, 0.2]),
    **_stage(0.4, [5, 9], 0.1, [0.2, 1.5], 0.2, 0.0, [60.0, 95.0], "2", resize_prob=[0.0, 0.0, 1.0]),
    **_stage(0.8, [5, 19], 0.8, [0.2, 1.0], 0.0, 0.4, [80.0, 100.0], "3"),
    "kernel_noise_range": [0.9, 1.1],           # basicsr's multiplicative kernel noise; [1, 1] for none
    "resize_mode_prob": [1 / 3, 1 / 3, 1 / 3],  # area, bilinear, bicubic
}
PRESETS = {"wild_ir": _WILD_IR}

#: the choices each probability list distributes over
CHOICES = {"kernel_prob": KERNELS, "resize_prob": ["up", "down", "keep"], "resize_mode_prob": MODES}


def _base(key: str) -> str:
    return key[:-1] if key[-1] in "23" else key


def check_settings(opt: dict) -> None:
    """Probabilities in [0, 1], choice distributions of the right length summing to 1, ranges
    [low, high] (not negative), odd kernel sizes up to 21, JPEG qualities in [1, 100]; an error
    names the key."""
    for key, value in opt.items():
        where, base = f"degradation.{key}", _base(key)
        if base.endswith("_prob"):
            values = value if isinstance(value, list) else [value]
            if any(not 0.0 <= v <= 1.0 for v in values):
                raise OptionsError(f"{where}: probabilities must lie in [0, 1], got {value}")
            if isinstance(value, list):
                choices = CHOICES[base]
                if len(value) != len(choices):
                    raise OptionsError(f"{where}: expected {len(choices)} probabilities ({', '.join(choices)}), "
                                       f"got {len(value)}")
                if abs(sum(value) - 1.0) > 1e-6:
                    raise OptionsError(f"{where}: probabilities must sum to 1, got {sum(value):.6g} ({value})")
            continue
        if len(value) != 2 or value[0] > value[1]:
            raise OptionsError(f"{where}: expected a range [low, high], got {value}")
        if value[0] < 0:
            raise OptionsError(f"{where}: must not be negative, got {value}")
        if base == "kernel_size" and (value[0] % 2 == 0 or value[1] % 2 == 0 or value[0] < 3
                                      or value[1] > KERNEL_SIZE):
            raise OptionsError(f"{where}: expected odd kernel sizes in [3, {KERNEL_SIZE}], got {value}")
        if base == "jpeg_range" and (value[0] < 1 or value[1] > 100):
            raise OptionsError(f"{where}: JPEG qualities lie in [1, 100], got {value}")
        if base == "resize_range" and value[0] <= 0:
            raise OptionsError(f"{where}: resize factors must be positive, got {value}")


@BATCH_DEGRADATIONS.register()
class WildDegradation:
    """Args: ``preset`` ('wild_ir', the only one) and any of its keys to override (see ``PRESETS``):
    per stage (suffix '', '2', '3') ``blur_prob``, ``kernel_size`` (odd [min, max]), ``sinc_prob``,
    ``kernel_prob`` (over basicsr's six kernel families), ``blur_sigma``, ``betag_range``,
    ``betap_range``, ``resize_prob`` ([up, down, keep]; stages 1 and 2) and ``resize_range``,
    ``noise_prob``, ``gaussian_noise_prob``, ``noise_range`` (sigma in 8-bit units),
    ``poisson_noise_prob``, ``poisson_scale_range``, ``gray_noise_prob``, ``jpeg_prob``,
    ``jpeg_range``; shared ``kernel_noise_range`` and ``resize_mode_prob`` (area, bilinear, bicubic).

    Returns ``{'lq', 'gt'}``: the LQ at the GT's size, clipped to [0, 1] and rounded to 8 bits."""

    # RealESRGANDegradation's helpers, called as they are (they use ``self.jpeg`` and ``self._where``)
    _where = staticmethod(RealESRGANDegradation._where)
    _blur = RealESRGANDegradation._blur
    _jpeg = RealESRGANDegradation._jpeg

    def __init__(self, preset: str = "wild_ir", **overrides):
        if preset not in PRESETS:
            raise OptionsError(f"degradation.preset: unknown preset '{preset}'{nearest(preset, PRESETS)}; "
                               f"allowed: {', '.join(PRESETS)}")
        defaults = PRESETS[preset]
        for key, value in overrides.items():
            if key not in defaults:
                raise OptionsError(f"degradation.{key}: unknown key{nearest(key, defaults)}; "
                                   f"allowed: preset, {', '.join(defaults)}")
            kind = type(defaults[key])
            if kind is list:
                kind = list[int] if _base(key) == "kernel_size" else list[float]
            overrides[key] = validate(value, kind, f"degradation.{key}")
        self.preset, self.opt = preset, {**defaults, **overrides}
        check_settings(self.opt)
        self.jpeg = basicsr_jpeg.DiffJPEG(differentiable=False)

    # -- per sample, in the workers ----------------------------------------------------------
    def _kernel(self, rng: np.random.Generator, suffix: str) -> np.ndarray:
        """A blur kernel of the stage, zero-padded to KERNEL_SIZE (basicsr's generators; the released
        code's sinc cut-offs)."""
        o = self.opt
        low, high = o["kernel_size" + suffix]
        size = int(rng.choice(np.arange(low, high + 1, 2)))
        if rng.random() < o["sinc_prob" + suffix]:
            cutoff = rng.uniform(np.pi / 3, np.pi) if size < 13 else rng.uniform(np.pi / 5, np.pi)
            kernel = basicsr_kernels.circular_lowpass_kernel(cutoff, size, pad_to=False)
        else:
            s_low, s_high = o["blur_sigma" + suffix]
            sigma = (s_low, max(s_high, s_low + 1e-6))       # basicsr asserts low < high
            n_low, n_high = o["kernel_noise_range"]
            kernel = basicsr_kernels.random_mixed_kernels(
                KERNELS, o["kernel_prob" + suffix], size, sigma, sigma, [-math.pi, math.pi], o["betag_range" + suffix],
                o["betap_range" + suffix], noise_range=[n_low, n_high] if n_high > n_low else None)
        pad = (KERNEL_SIZE - size) // 2
        return np.pad(kernel, ((pad, pad), (pad, pad)))

    def draw(self, seed: int) -> dict[str, torch.Tensor]:
        """All random choices of one sample's degradation, from its seed: ``order`` (3 x 4, each
        stage's operations as indices into ``OPERATIONS``) and per stage r the kernel, on/off flags,
        strengths, resize factor and modes."""
        o = self.opt
        rng = sample_rng(seed, BATCH_DEGRADATION)
        # basicsr's kernel generators draw from the global np.random and random modules
        np.random.seed(int(rng.integers(2 ** 31)))
        random.seed(int(rng.integers(2 ** 31)))
        p = {"order": np.stack([rng.permutation(len(OPERATIONS)) for _ in STAGES])}
        for r, s in STAGES.items():
            p[f"kernel{r}"] = self._kernel(rng, s)
            p[f"blur{r}"] = rng.random() < o["blur_prob" + s]
            if "resize_prob" + s in o:
                updown = rng.choice(3, p=o["resize_prob" + s])              # up, down, keep
                low, high = o["resize_range" + s]
                p[f"scale{r}"] = [rng.uniform(1, max(high, 1)), rng.uniform(min(low, 1), 1), 1.0][updown]
            else:
                p[f"scale{r}"] = 1.0           # the last stage resizes back to the GT size
            p[f"mode{r}"] = rng.choice(3, p=o["resize_mode_prob"])
            p[f"noise{r}"] = rng.random() < o["noise_prob" + s]
            p[f"gaussian{r}"] = rng.random() < o["gaussian_noise_prob" + s]
            p[f"sigma{r}"] = rng.uniform(*o["noise_range" + s])
            p[f"gray{r}"] = float(rng.random() < o["gray_noise_prob" + s])
            p[f"poisson{r}"] = rng.random() < o["poisson_noise_prob" + s]
            p[f"poisson_scale{r}"] = rng.uniform(*o["poisson_scale_range" + s])
            p[f"poisson_gray{r}"] = float(rng.random() < o["gray_noise_prob" + s])
            p[f"jpeg{r}"] = rng.random() < o["jpeg_prob" + s]
            p[f"quality{r}"] = min(rng.uniform(*o["jpeg_range" + s]), MAX_JPEG_QUALITY)
        return {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in p.items()}

    # -- per image, on the device ------------------------------------------------------------
    def _resize(self, x, p, r, gt_size):
        mode = MODES[int(p[f"mode{r}"][0])]
        if r == len(STAGES):                   # back to the GT size
            return x if tuple(x.shape[-2:]) == gt_size else F.interpolate(x, size=gt_size, mode=mode)
        scale = float(p[f"scale{r}"][0])
        if scale == 1.0:
            return x
        size = tuple(max(1, int(n * scale)) for n in x.shape[-2:])
        return F.interpolate(x, size=size, mode=mode)

    def _noise(self, x, p, r):
        if not bool(p[f"noise{r}"][0]):
            return x
        # the released code: Gaussian and Poisson drawn independently, then 8-bit rounding
        if bool(p[f"gaussian{r}"][0]):
            x = basicsr_kernels.add_gaussian_noise_pt(x, sigma=p[f"sigma{r}"], gray_noise=p[f"gray{r}"], clip=True,
                                                      rounds=False)
        if bool(p[f"poisson{r}"][0]):
            x = basicsr_kernels.add_poisson_noise_pt(x, scale=p[f"poisson_scale{r}"], gray_noise=p[f"poisson_gray{r}"],
                                                     clip=True, rounds=False)
        return quantise(x, 8) / 255.0

    def _degrade(self, gt: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The LQ of one image (a batch of 1) on the 8-bit grid."""
        gt_size = tuple(gt.shape[-2:])
        out = gt
        for r in STAGES:
            for op in p["order"][0, r - 1].tolist():
                name = OPERATIONS[int(op)]
                if name == "blur":
                    out = self._blur(out, p[f"kernel{r}"], p[f"blur{r}"])
                elif name == "resize":
                    out = self._resize(out, p, r, gt_size)
                elif name == "noise":
                    out = self._noise(out, p, r)
                else:
                    out = self._jpeg(out, p, r)
        return quantise(out, 8) / 255.0

    def _check_size(self, h: int, w: int) -> None:
        """The blurs pad by the kernel radius: every size the resizes can reach must exceed it."""
        shrink = 1.0
        for s in STAGES.values():
            if "resize_prob" + s in self.opt and self.opt["resize_prob" + s][1] > 0:
                shrink *= min(self.opt["resize_range" + s][0], 1.0)
        smallest = min(h, w) * shrink
        if smallest <= KERNEL_SIZE // 2:
            raise DataError(f"GT images of {h}x{w} are too small for this degradation: its resizes can shrink them "
                            f"to {smallest:.0f} px, not more than the {KERNEL_SIZE}x{KERNEL_SIZE} blur kernel's "
                            f"radius; use larger images or patches")

    @torch.no_grad()
    def __call__(self, gt: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{'lq', 'gt'}`` for a batch of GT in [0, 1]; ``params`` stacks ``draw`` outputs."""
        p = {k: v.to(gt.device) for k, v in params.items()}
        self._check_size(*gt.shape[-2:])
        self.jpeg = self.jpeg.to(gt.device)
        lq = torch.cat([self._degrade(gt[i:i + 1], {k: v[i:i + 1] for k, v in p.items()})
                        for i in range(gt.shape[0])])
        return {"lq": lq, "gt": gt}
