"""FID (Heusel et al. 2017) of a folder of restored images against the GT folder, a set metric of
the suite (``type: fid``), with the GT folder's statistics cached.

What is pyiqa's: the Inception network (pytorch-fid's port of TensorFlow's 2015-12-05 Inception,
weights file ``pt_inception-2015-12-05-6726825d.pth``) and the feature extraction from a folder of
images (clean-fid's resizing ``mode``: ``clean``, ``legacy_pytorch``, ``legacy_tensorflow``): the
functions pyiqa's own ``fid`` metric calls for two folders.  What is written here: the Inception
weights from a local file (``pretrained_model_path`` or ``weights_dir``; never downloaded), the
cache of the GT's mean and covariance, keyed by the GT folder's content (every image's relative
path and sha256), the feature mode and the Inception weights' sha256, so a second run against the
same GT does not extract its features again; the Fréchet distance (``frechet_distance``: pyiqa's
formula, its matrix square root's trace taken from a symmetric eigendecomposition instead of
``scipy.linalg.sqrtm``, equal to rounding and minutes faster at 2048 dimensions on a CPU); and the
set-metric interface (``score_folders``) that ``MetricSuite.score_sets`` calls.

Both folders are read whole (subfolders included, images only, by pyiqa's ``scandir_images``):
FID compares two sets of images, not pairs, so the GT folder's images need no restored partner.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal, Optional
from unittest import mock

import numpy as np

from osir.data.io import DataError
from osir.core.checkpoint import sha256
from osir.metrics.suite import Metric, Need, offline, resolve_weights, url_name
from osir.core.registry import METRICS

CACHE_VERSION = 1
DIMS = 2048       # Inception's final average pool: the standard FID features


def frechet_distance(feats: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """Fréchet distance between the Gaussian of ``feats`` (N, d) and N(mu_ref, sigma_ref):
    ``|mu - mu_ref|^2 + Tr S + Tr S_ref - 2 Tr sqrt(S S_ref)``, S the (N-1)-normalised covariance
    (numpy's ``np.cov``, as pyiqa).  With X the centred features over sqrt(N-1), S = X^T X, and
    S S_ref has the nonzero eigenvalues of the symmetric positive semi-definite X S_ref X^T (N x N;
    for N >= d, sqrt(S) S_ref sqrt(S)), so the trace is the sum of their square roots: no
    general matrix square root of a (rank-deficient) product."""
    feats = np.asarray(feats, dtype=np.float64)
    n, d = feats.shape
    mu = feats.mean(axis=0)
    x = (feats - mu) / np.sqrt(n - 1)
    if n < d:
        m = x @ sigma_ref @ x.T
    else:
        w, v = np.linalg.eigh(x.T @ x)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        m = root @ sigma_ref @ root
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu - mu_ref
    return float(diff @ diff + (x * x).sum() + np.trace(sigma_ref) - 2 * tr_covmean)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "osir" / "fid"


def folder_images(folder) -> list[str]:
    """The images FID reads from ``folder`` (pyiqa's listing: sorted, recursive)."""
    from pyiqa.utils.img_util import scandir_images
    if not Path(folder).is_dir():
        raise DataError(f"FID: '{folder}' is not a folder")
    return scandir_images(str(folder))


class FIDMetric(Metric):
    """FID between two folders (lower is better).  ``pretrained_model_path``: pyiqa's FID Inception
    ``pt_inception-2015-12-05-6726825d.pth`` (or from ``weights_dir``); ``mode``: clean-fid's image
    resizing (pyiqa's default ``clean``).  ``cache_dir`` holds the GT statistics (default
    ``~/.cache/osir/fid``; ``cache: false`` recomputes them every time).  ``batch_size`` and
    ``num_workers`` only change the speed."""
    lower_better = True
    per_image = False

    def __init__(self, pretrained_model_path: Optional[str] = None, weights_dir: Optional[str] = None,
                 mode: Literal["clean", "legacy_pytorch", "legacy_tensorflow"] = "clean", cache_dir: Optional[str] = None,
                 cache: bool = True, batch_size: int = 8, num_workers: int = 4):
        from pyiqa.archs.inception import FID_WEIGHTS_URL
        files = resolve_weights([Need("pretrained_model_path", pretrained_model_path, url_name(FID_WEIGHTS_URL),
                                      "pyiqa's FID Inception, TF 2015-12-05")], weights_dir)
        super().__init__(metric="fid", mode=mode, dims=DIMS, backbone="inceptionv3",
                         pretrained_model_path=files["pretrained_model_path"])
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache = cache
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._model = None
        self._weights_sha256 = None

    def to(self, device) -> "FIDMetric":
        super().to(device)
        if self._model is not None:
            self._model.to(self.device)
        return self

    def prepare(self) -> None:
        """pyiqa's FID Inception, its weights from the local file."""
        if self._model is None:
            from pyiqa.archs import inception
            from pyiqa.archs.fid_arch import FID
            path = self.settings["pretrained_model_path"]
            # pyiqa loads the Inception from the URL FID_WEIGHTS_URL; a local path in its place loads that file
            with offline(), mock.patch.object(inception, "FID_WEIGHTS_URL", str(path)):
                try:
                    net = FID(dims=DIMS)
                except RuntimeError as err:
                    raise DataError(f"'{path}' does not fit pyiqa's FID Inception: "
                                    f"{str(err).strip().splitlines()[0]} ...") from None
            self._model = net.model.eval().to(self.device)

    def features(self, folder) -> np.ndarray:
        """(N, 2048) Inception features of the images in ``folder``, by pyiqa's extractor."""
        from pyiqa.archs.fid_arch import get_folder_features
        self.prepare()
        files = folder_images(folder)
        if len(files) < 2:
            raise DataError(f"FID: '{folder}' has {len(files)} image(s); a mean and covariance need at least 2")
        return get_folder_features(str(folder), self._model, num_workers=self.num_workers, batch_size=self.batch_size,
                                   test_img_size=(299, 299), device=self.device, mode=self.settings["mode"],
                                   verbose=False)

    def statistics(self, folder) -> tuple[np.ndarray, np.ndarray]:
        feats = self.features(folder)
        return np.mean(feats, axis=0), np.cov(feats, rowvar=False)

    def cache_key(self, gt_dir) -> str:
        """sha256 of what the GT statistics depend on: every image's relative path and content, the
        feature mode and dimension, and the Inception weights."""
        if self._weights_sha256 is None:
            self._weights_sha256 = sha256(self.settings["pretrained_model_path"])
        h = hashlib.sha256(f"osir-fid-v{CACHE_VERSION} mode={self.settings['mode']} dims={DIMS} "
                           f"inception={self._weights_sha256}\n".encode())
        for path in folder_images(gt_dir):
            h.update(f"{Path(path).relative_to(gt_dir).as_posix()} {sha256(path)}\n".encode())
        return h.hexdigest()

    def reference_statistics(self, gt_dir) -> tuple[np.ndarray, np.ndarray]:
        """The GT folder's mean and covariance: from the cache when its content is unchanged, else
        computed (and cached)."""
        if not self.cache:
            return self.statistics(gt_dir)
        key = self.cache_key(gt_dir)
        file = self.cache_dir / f"fid_stats_{key[:32]}.npz"
        if file.is_file():
            try:
                with np.load(file) as stats:
                    if str(stats["key"]) == key:
                        return stats["mu"], stats["sigma"]
            except (OSError, ValueError, KeyError):   # unreadable: recompute and overwrite
                pass
        mu, sigma = self.statistics(gt_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp.npz")
        info = {"gt_dir": str(Path(gt_dir).resolve()), "images": len(folder_images(gt_dir)), **self.settings}
        np.savez(tmp, mu=mu, sigma=sigma, key=np.array(key), info=np.array(json.dumps(info)))
        os.replace(tmp, file)
        return mu, sigma

    def score_folders(self, restored_dir, gt_dir) -> float:
        mu_gt, sigma_gt = self.reference_statistics(gt_dir)
        return frechet_distance(self.features(restored_dir), mu_gt, sigma_gt)

    def __call__(self, restored, gt):
        raise TypeError("FID is a set metric: MetricSuite.score_sets(restored_dir, gt_dir) scores it")


METRICS.register(FIDMetric, name="fid")
