"""Simple per-sample degradations (Gaussian noise, random inpainting masks), written here because
they are a few lines of numpy / OpenCV each."""
from __future__ import annotations

from typing import Annotated, Optional

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt

from osir.data.io import to_uint8
from osir.core.registry import DEGRADATIONS


@DEGRADATIONS.register()
class GaussianNoise:
    """Additive white Gaussian noise, LQ = GT + sigma/255 * n, n ~ N(0, I).

    ``sigma`` is fixed (8-bit units); with ``sigma_range: [lo, hi]`` it is drawn uniformly per
    sample instead.  ``clip`` clamps the result to [0, 1] (IR-SDE's denoising task does not)."""

    def __init__(self, sigma: float = 25.0, sigma_range: Optional[list[float]] = None, clip: bool = False):
        if sigma_range is not None and (len(sigma_range) != 2 or sigma_range[0] > sigma_range[1]):
            raise ValueError(f"sigma_range must be [low, high], got {sigma_range}")
        self.sigma, self.sigma_range, self.clip = sigma, sigma_range, clip

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        sigma = float(rng.uniform(*self.sigma_range)) if self.sigma_range else float(self.sigma)
        lq = gt + rng.standard_normal(gt.shape, dtype=np.float32) * np.float32(sigma / 255.0)
        if self.clip:
            lq = np.clip(lq, 0.0, 1.0)
        return lq.astype(np.float32), {"sigma": sigma}


@DEGRADATIONS.register()
class RandomMask:
    """Random free-form holes for inpainting, filled with 1 (white), as IR-SDE's inpainting data.

    Per sample: ``strokes`` (drawn in [low, high]) thick polylines of 4-8 vertices with widths drawn
    from ``width`` (pixels, at the image's size), plus with probability ``box_prob`` one rectangle of
    0.1 to ``max_box`` of each side (so ``max_box`` lies in [0.1, 1]).  Written here because it is a
    few lines of OpenCV drawing."""

    def __init__(self, strokes: list[NonNegativeInt] = (1, 4), width: list[PositiveInt] = (8, 24),
                 box_prob: float = 0.5, max_box: Annotated[float, Field(ge=0.1, le=1)] = 0.5, fill: float = 1.0):
        if len(strokes) != 2 or strokes[0] > strokes[1] or len(width) != 2 or width[0] > width[1]:
            raise ValueError(f"strokes and width must be [low, high], got {list(strokes)} and {list(width)}")
        self.strokes, self.width, self.box_prob, self.max_box, self.fill = strokes, width, box_prob, max_box, fill

    def mask(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        import cv2
        m = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(self.strokes[0], self.strokes[1] + 1))):
            vertices = np.stack([rng.integers(0, w, 6), rng.integers(0, h, 6)], 1).astype(np.int32)
            cv2.polylines(m, [vertices[: int(rng.integers(4, 7))]], False, 1,
                          int(rng.integers(self.width[0], self.width[1] + 1)))
        if rng.random() < self.box_prob:
            bh, bw = int(rng.uniform(0.1, self.max_box) * h), int(rng.uniform(0.1, self.max_box) * w)
            y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            m[y:y + bh, x:x + bw] = 1
        return m.astype(np.float32)

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        m = self.mask(gt.shape[0], gt.shape[1], rng)[..., None]
        return (gt * (1 - m) + self.fill * m).astype(np.float32), {"hole_fraction": float(m.mean())}


@DEGRADATIONS.register()
class BicubicDownscale:
    """LQ = the GT downscaled by ``scale`` with OpenCV's bicubic (a clean x``scale`` SR pair)."""

    def __init__(self, scale: PositiveInt = 4):
        self.scale = scale

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        import cv2
        h, w = gt.shape[:2]
        lq = cv2.resize(gt, (w // self.scale, h // self.scale), interpolation=cv2.INTER_CUBIC)
        return np.clip(lq, 0, 1).astype(np.float32), {"scale": float(self.scale)}


@DEGRADATIONS.register()
class JPEGCompression:
    """JPEG at a quality drawn uniformly from ``quality`` ([low, high]), OpenCV's encoder on the 8-bit
    rounded image (basicsr's ``add_jpg_compression`` hands OpenCV a float array, which it truncates)."""

    def __init__(self, quality: list[int] = (10, 40)):
        if len(quality) != 2 or not 1 <= quality[0] <= quality[1] <= 100:
            raise ValueError(f"quality must be [low, high] in 1..100, got {list(quality)}")
        self.quality = quality

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        import cv2
        q = int(rng.integers(self.quality[0], self.quality[1] + 1))
        img = to_uint8(gt)
        colour = img.ndim == 3 and img.shape[2] == 3
        _, data = cv2.imencode(".jpg", img[..., ::-1] if colour else img, [int(cv2.IMWRITE_JPEG_QUALITY), q])
        out = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)          # OpenCV codes BGR: back to RGB
        out = out[..., ::-1] if colour else out
        return (out.reshape(gt.shape) / 255.0).astype(np.float32), {"quality": float(q)}


@DEGRADATIONS.register()
class GaussianBlur:
    """Isotropic Gaussian blur (basicsr's kernel) with sigma drawn from ``sigma`` ([low, high], pixels)."""

    def __init__(self, sigma: list[float] = (1.0, 3.0), kernel_size: PositiveInt = 21):
        if len(sigma) != 2 or not 0 < sigma[0] <= sigma[1] or kernel_size % 2 == 0:
            raise ValueError(f"sigma must be [low, high] > 0 and kernel_size odd, got {list(sigma)}, {kernel_size}")
        self.sigma, self.kernel_size = sigma, kernel_size

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        import cv2
        import osir._compat  # noqa: F401  (before basicsr)
        from basicsr.data.degradations import bivariate_Gaussian
        s = float(rng.uniform(*self.sigma))
        kernel = bivariate_Gaussian(self.kernel_size, s, s, 0, isotropic=True)
        return cv2.filter2D(gt, -1, kernel, borderType=cv2.BORDER_REFLECT).astype(np.float32), {"sigma": s}


@DEGRADATIONS.register()
class LowLight:
    """Under-exposure: LQ = ``gain`` * GT^``gamma`` with gain and gamma drawn from their ranges."""

    def __init__(self, gain: list[float] = (0.1, 0.4), gamma: list[float] = (1.2, 2.0)):
        self.gain, self.gamma = gain, gamma

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        g, k = float(rng.uniform(*self.gamma)), float(rng.uniform(*self.gain))
        return (k * np.clip(gt, 0, 1) ** g).astype(np.float32), {"gain": k, "gamma": g}


@DEGRADATIONS.register()
class Haze:
    """Homogeneous haze (atmospheric scattering): LQ = t GT + (1 - t) A, transmission t and airlight A
    drawn from their ranges."""

    def __init__(self, transmission: list[float] = (0.3, 0.6), airlight: list[float] = (0.7, 1.0)):
        self.transmission, self.airlight = transmission, airlight

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        t, a = float(rng.uniform(*self.transmission)), float(rng.uniform(*self.airlight))
        return (t * gt + (1 - t) * a).astype(np.float32), {"transmission": t, "airlight": a}
