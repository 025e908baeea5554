"""Simple per-sample degradations (Gaussian noise), written here because they are one line of
numpy each."""
from __future__ import annotations

from typing import Optional

import numpy as np

from osir.registry import DEGRADATIONS


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
