"""The metric suite: one ``metrics:`` section of YAML, computed through pyiqa.

Every entry records the settings that change its numbers (crop border, Y channel, colour space,
weights file) so they can be written next to every result.  NIQE uses pyiqa's implementation
with the pristine-model parameters that ship inside basicsr (``niqe_pris_params.npz``), so it
works offline; other learned metrics take a local ``pretrained_model_path`` and fail with the
missing file's name instead of trying to download.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from osir.data.io import DataError
from osir.engine.weights import local_torchvision_weights
from osir.registry import METRICS


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits, as the image is saved, so scores match the written files."""
    return (img.clamp(0, 1) * 255.0).round() / 255.0


class Metric:
    """A scorer ``(restored, gt) -> (B,) tensor`` plus its settings."""
    lower_better = False
    needs_gt = True
    min_size = 1      # smallest image side the metric accepts

    def __init__(self, **settings):
        self.settings = settings
        self.device = torch.device("cpu")

    def to(self, device) -> "Metric":
        self.device = torch.device(device)
        return self

    def __call__(self, restored: torch.Tensor, gt: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def _pyiqa_metric(name: str, device, **kwargs):
    import pyiqa
    return pyiqa.create_metric(name, as_loss=False, device=device, **kwargs)


class PyiqaMetric(Metric):
    """Any pyiqa metric by name, created once per device."""

    def __init__(self, metric: str, **kwargs):
        super().__init__(metric=metric, **kwargs)
        from pyiqa.default_model_configs import DEFAULT_CONFIGS
        if metric not in DEFAULT_CONFIGS:
            from osir.registry import nearest
            raise ValueError(f"unknown pyiqa metric '{metric}'{nearest(metric, DEFAULT_CONFIGS)}")
        path = kwargs.get("pretrained_model_path")
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"metric '{metric}': weights file not found: '{path}'")
        self._kwargs = kwargs
        self._net = None
        self.lower_better = bool(DEFAULT_CONFIGS[metric].get("lower_better", False))
        self.needs_gt = DEFAULT_CONFIGS[metric]["metric_mode"] == "FR"

    def _build(self):
        if self._net is None:
            try:
                self._net = _pyiqa_metric(self.settings["metric"], self.device, **self._kwargs)
            except OSError as err:  # pyiqa tried to download weights: no network here
                raise RuntimeError(
                    f"metric '{self.settings['metric']}' needs weights that are not on this machine; set "
                    f"pretrained_model_path to a local file ({err})") from None
        return self._net

    def __call__(self, restored, gt):
        net = self._build()
        with torch.no_grad():
            score = net(restored.to(self.device), gt.to(self.device)) if self.needs_gt else net(restored.to(self.device))
        return score.reshape(-1).double().cpu()


@METRICS.register(name="psnr")
def psnr(crop_border: int = 0, test_y_channel: bool = False, color_space: Literal["ycbcr", "yiq"] = "ycbcr"):
    """PSNR (pyiqa), on RGB or on the Y channel of ITU-R BT.601 YCbCr."""
    return PyiqaMetric("psnr", crop_border=crop_border, test_y_channel=test_y_channel, color_space=color_space)


@METRICS.register(name="ssim")
def ssim(crop_border: int = 0, test_y_channel: bool = False, color_space: Literal["ycbcr", "yiq"] = "ycbcr"):
    """SSIM (pyiqa; Wang et al. 2004 with the MATLAB Gaussian window)."""
    metric = PyiqaMetric("ssim", crop_border=crop_border, test_y_channel=test_y_channel, color_space=color_space)
    metric.min_size = 11 + 2 * crop_border          # the 11x11 Gaussian window
    return metric


class LPIPSMetric(PyiqaMetric):
    """LPIPS (Zhang et al. 2018) through pyiqa from local files: ``pretrained_model_path`` (pyiqa's
    LPIPS checkpoint) and ``backbone_path`` (torchvision's ImageNet AlexNet/VGG16 file, e.g.
    ``alexnet-owt-7be5be79.pth``)."""

    def __init__(self, pretrained_model_path: str, backbone_path: str, net: Literal["alex", "vgg"] = "alex",
                 version: str = "0.1"):
        if not Path(backbone_path).is_file():
            raise FileNotFoundError(f"metric 'lpips': backbone weights file not found: '{backbone_path}'")
        super().__init__("lpips" if net == "alex" else "lpips-vgg", pretrained_model_path=pretrained_model_path,
                         net=net, version=version)
        self.settings["backbone_path"] = backbone_path

    def _build(self):
        weights = "AlexNet_Weights.IMAGENET1K_V1" if self.settings["net"] == "alex" else "VGG16_Weights.IMAGENET1K_V1"
        with local_torchvision_weights(weights, self.settings["backbone_path"]):
            return super()._build()


METRICS.register(LPIPSMetric, name="lpips")


@METRICS.register(name="pyiqa")
def any_pyiqa(metric: str, pretrained_model_path: Optional[str] = None, options: dict = {}):  # noqa: B006
    """Any other pyiqa metric (MUSIQ, MANIQA, CLIPIQA, DISTS, ...) by name, with a local weights file."""
    kwargs = dict(options)
    if pretrained_model_path is not None:
        kwargs["pretrained_model_path"] = pretrained_model_path
    return PyiqaMetric(metric, **kwargs)


class NIQE(Metric):
    """NIQE (Mittal et al. 2013) by pyiqa's implementation with basicsr's shipped MATLAB
    pristine-model parameters; no download.  Lower is better; needs no GT."""
    lower_better = True
    needs_gt = False

    def __init__(self, crop_border: int = 0, color_space: Literal["yiq", "ycbcr"] = "yiq"):
        super().__init__(metric="niqe", crop_border=crop_border, test_y_channel=True, color_space=color_space,
                         parameters="basicsr/metrics/niqe_pris_params.npz")
        from osir._compat import basicsr
        params = np.load(os.path.join(os.path.dirname(basicsr.__file__), "metrics", "niqe_pris_params.npz"))
        self.mu = torch.from_numpy(np.ravel(params["mu_pris_param"]))
        self.cov = torch.from_numpy(params["cov_pris_param"])
        self.min_size = 96 + 2 * crop_border              # one 96x96 block

    def __call__(self, restored, gt=None):
        from pyiqa.archs.niqe_arch import calculate_niqe
        with torch.no_grad():
            score = calculate_niqe(restored.to(self.device), self.settings["crop_border"], True,
                                   self.settings["color_space"], self.mu, self.cov)
        return score.reshape(-1).double().cpu()


METRICS.register(NIQE, name="niqe")


class MetricSuite:
    """The metrics of one ``metrics:`` section, built from the registry."""

    def __init__(self, specs: dict[str, dict], device="cpu"):
        self.metrics: dict[str, Metric] = {name: METRICS.build(spec, f"metrics.{name}").to(device)
                                           for name, spec in specs.items()}

    def __bool__(self) -> bool:
        return bool(self.metrics)

    def score(self, restored: torch.Tensor, gt: torch.Tensor | None, names=None) -> dict[str, list[float]]:
        """Scores of a batch (restored quantised to 8 bits); metrics that need a GT are skipped
        when there is none.  An image too small for a metric, or one the metric fails on, is a
        ``DataError`` naming the image (``names``: one per batch item)."""
        restored = quantize(restored.float())
        gt = None if gt is None else gt.float().clamp(0, 1)
        h, w = restored.shape[-2:]
        image = f"'{names[0]}'" if names else "the image"
        out = {}
        for name, metric in self.metrics.items():
            if metric.needs_gt and gt is None:
                continue
            if min(h, w) < metric.min_size:
                raise DataError(f"metrics.{name}: {image} is {w}x{h}, smaller than the {metric.min_size}x"
                                f"{metric.min_size} the metric needs")
            try:
                out[name] = metric(restored, gt).tolist()
            except RuntimeError as err:
                raise DataError(f"metrics.{name}: cannot score {image} ({w}x{h}): "
                                f"{str(err).strip().splitlines()[-1]}") from None
        return out

    def settings(self) -> dict[str, dict]:
        return {name: {"type": type(m).__name__, "lower_better": m.lower_better, **m.settings}
                for name, m in self.metrics.items()}
