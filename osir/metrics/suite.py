"""The metric suite: one ``metrics:`` section of YAML, computed through pyiqa.

What is pyiqa's: every metric's algorithm and network (PSNR, SSIM, NIQE, LPIPS, DISTS, MUSIQ,
MANIQA, CLIP-IQA and any other pyiqa metric by name; FID's Inception and feature extraction, see
``osir.metrics.fid``), and the layout of their weight files.  What is written here: how the weights
reach pyiqa from local files only, the record of the settings that change a metric's numbers (crop
border, Y channel, colour space, variant, prompts, weights file) written next to every result, and
the suite that scores a batch (per-image metrics) or two folders (set metrics such as FID).

Weights.  Every learned metric takes its files from options (``pretrained_model_path``,
``backbone_path``) or from one folder, ``weights_dir`` (an option of each metric, or of the whole
suite: ``MetricSuite(..., weights_dir=...)``, ``python -m osir.metrics --weights-dir``), holding the
files under the names of pyiqa's, torchvision's and OpenAI CLIP's download URLs (e.g.
``DISTS_weights-f5e65c96.pth``, ``vgg16-397923af.pth``, ``RN50.pt``), either flat or in the
subfolders a torch-hub cache uses (``pyiqa/``, ``checkpoints/``, ``clip/``), so a filled
``~/.cache/torch/hub`` works as it is.  Nothing is ever downloaded: a metric whose file is absent is
skipped with one line on stderr naming the file and the option to set (``strict=True`` makes that
an error), and while a metric is built every download route of pyiqa, torch hub, CLIP and the
Hugging Face hub is refused.  NIQE needs no file: its pristine-model parameters ship inside basicsr.

Every weights file is read as weights only: osir's own reads through
``osir.core.checkpoint.read_weights_file``, and the reads of pyiqa, torchvision and torch hub
(which pass ``weights_only=False``) inside ``osir.core.weights.weights_only_loads``; a file that
holds pickled objects beyond tensors is refused in one line naming it, and nothing in it runs.
OpenAI CLIP's TorchScript backbones are read by ``torch.jit.load``, whose unpickler knows only
tensors and TorchScript types.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Literal, Optional
from urllib.parse import quote, unquote, urlparse

import numpy as np
import torch

from osir.data.io import DataError, quantise
from osir.core.checkpoint import CheckpointError, read_weights_file
from osir.core.weights import local_torchvision_weights, weights_only_loads
from osir.core.registry import METRICS, missing_package
from osir.metrics.files import CLIPIQA_BACKBONES  # also its file declarations, where the entry points are stale


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits, as the image is saved (``osir.data.io.quantise``), so scores match the written files."""
    return quantise(img, 8) / 255.0


# ----------------------------------------------------------------------------- local weights only
class MetricUnavailable(OSError):
    """A metric cannot be built on this machine (a weights file or a package is missing): the suite
    skips it with this message, or raises it when strict."""


class MissingWeights(MetricUnavailable, FileNotFoundError):
    """A weights file a metric needs is not on this machine."""


class WouldDownload(MissingWeights):
    """A library asked for a file it would download; refused (no downloads here)."""

    def __init__(self, url: str):
        name = unquote(os.path.basename(urlparse(str(url)).path)) or str(url)
        super().__init__(f"needs '{name}', which would be downloaded from {url}; nothing is downloaded: put the "
                         f"file in weights_dir (or set pretrained_model_path)")


def url_name(url: str) -> str:
    """The file name of a download URL (``%2B`` read as ``+``)."""
    return unquote(os.path.basename(urlparse(url).path))


def cache_names(name: str) -> list[str]:
    """``name`` and the URL-quoted form under which pyiqa's downloader caches it (``CLIP-IQA%2B_...``)."""
    return list(dict.fromkeys([name, quote(name)]))


#: subfolders of a torch-hub cache where pyiqa, torchvision and CLIP keep their files
HUB_SUBFOLDERS = ("", "pyiqa", "checkpoints", "clip")


def find_in_weights_dir(weights_dir: str | None, name: str) -> Path | None:
    if weights_dir is None:
        return None
    for sub in HUB_SUBFOLDERS:
        for alias in cache_names(name):
            path = Path(weights_dir) / sub / alias
            if path.is_file():
                return path
    return None


# the files a metric's options name are declared in files.py (checked with the other files before a run)


class Need:
    """One file a metric needs: the option that names it, the file name pyiqa's (or torchvision's,
    CLIP's) download URL gives it, and what it is."""

    def __init__(self, option: str, given: str | None, name: str, what: str):
        self.option, self.given, self.name, self.what = option, given, name, what


def resolve_weights(needs: list[Need], weights_dir: str | None) -> dict[str, str]:
    """{option: local path} for every need (the option's own path first, then ``weights_dir``), or
    ``MissingWeights`` naming every absent file and the option to set."""
    found, missing = {}, []
    for need in needs:
        label = "backbone weights" if need.option == "backbone_path" else "weights"
        if need.given is not None:
            if Path(need.given).is_file():
                found[need.option] = str(need.given)
            else:
                missing.append(f"{label} file not found: '{need.given}' ({need.what}, '{need.name}'; set {need.option})")
            continue
        path = find_in_weights_dir(weights_dir, need.name)
        if path is not None:
            found[need.option] = str(path)
        elif weights_dir is not None:
            missing.append(f"{label} file not found: '{need.name}' ({need.what}) is not in weights_dir '{weights_dir}' "
                           f"(nor its {'/, '.join(s for s in HUB_SUBFOLDERS if s)}/); put it there or set {need.option}")
        else:
            missing.append(f"needs the {label} file '{need.name}' ({need.what}): set {need.option}, or weights_dir "
                           f"to a folder holding it")
    if missing:
        raise MissingWeights("; ".join(missing))
    return found


@contextlib.contextmanager
def offline(weights_dir: str | None = None):
    """Within the block no library downloads: pyiqa's and torch hub's downloaders raise
    ``WouldDownload``, CLIP's ``urlopen`` too, and the Hugging Face hub is in offline mode.  With
    ``weights_dir``, a temporary torch-hub folder links its files where pyiqa (``hub/pyiqa``),
    torchvision (``hub/checkpoints``) and CLIP (``hub/clip``) look, so any pyiqa metric finds them
    under their download names; the user's own cache is neither read nor written.  pyiqa's
    progress lines ("Loading pretrained model ...", "Downloading: ..." before a refusal) are
    silenced: the files used are in the settings.  Every ``torch.load`` in the block reads weights
    only (``weights_only_loads``)."""
    import urllib.request

    import huggingface_hub.constants as hf_constants
    from pyiqa.utils import download_util as pyiqa_download

    def refuse(url, *args, **kwargs):
        raise WouldDownload(getattr(url, "full_url", url))

    saved = [(pyiqa_download, "download_url_to_file"), (torch.hub, "download_url_to_file"),
             (urllib.request, "urlopen"), (hf_constants, "HF_HUB_OFFLINE"), (pyiqa_download, "DEFAULT_CACHE_DIR")]
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr in saved]
    old_hub = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="osir-hub-") as hub, contextlib.redirect_stdout(io.StringIO()), \
            weights_only_loads():
        try:
            pyiqa_download.download_url_to_file = refuse
            torch.hub.download_url_to_file = refuse
            urllib.request.urlopen = refuse
            hf_constants.HF_HUB_OFFLINE = True
            if weights_dir is not None:
                files = {}
                for sub in reversed(HUB_SUBFOLDERS):            # the flat folder wins over its subfolders
                    folder = Path(weights_dir) / sub
                    if folder.is_dir():
                        files.update({p.name: p for p in folder.iterdir() if p.is_file()})
                for sub in HUB_SUBFOLDERS[1:]:
                    (Path(hub) / sub).mkdir()
                    for name, path in files.items():
                        for alias in cache_names(unquote(name)):
                            if not (Path(hub) / sub / alias).exists():
                                os.symlink(path.resolve(), Path(hub) / sub / alias)
                torch.hub.set_dir(hub)
                pyiqa_download.DEFAULT_CACHE_DIR = os.path.join(hub, "pyiqa")
            yield
        finally:
            for mod, attr, value in saved:
                setattr(mod, attr, value)
            if weights_dir is not None:
                torch.hub.set_dir(old_hub)


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


# ----------------------------------------------------------------------------- metrics
class Metric:
    """A scorer ``(restored, gt) -> (B,) tensor`` plus its settings."""
    lower_better = False
    needs_gt = True
    per_image = True  # False: a set metric (FID), scored over two folders by ``score_folders``
    min_size = 1      # smallest image side the metric accepts

    def __init__(self, **settings):
        self.settings = settings
        self.device = torch.device("cpu")

    def to(self, device) -> "Metric":
        self.device = torch.device(device)
        return self

    def prepare(self) -> None:
        """Build what the metric needs (networks); ``MetricUnavailable`` when it cannot."""

    def __call__(self, restored: torch.Tensor, gt: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def _pyiqa_metric(name: str, device, **kwargs):
    import pyiqa
    return pyiqa.create_metric(name, as_loss=False, device=device, **kwargs)


class PyiqaMetric(Metric):
    """Any pyiqa metric by name, created once per device, offline (``weights_dir`` serves pyiqa's
    and torchvision's files by their download names)."""

    def __init__(self, metric: str, weights_dir: Optional[str] = None, **kwargs):
        super().__init__(metric=metric, **kwargs)
        from pyiqa.default_model_configs import DEFAULT_CONFIGS
        if metric not in DEFAULT_CONFIGS:
            from osir.core.registry import nearest
            raise ValueError(f"unknown pyiqa metric '{metric}'{nearest(metric, DEFAULT_CONFIGS)}")
        path = kwargs.get("pretrained_model_path")
        if path is not None and not Path(path).is_file():
            raise MissingWeights(f"weights file not found: '{path}' (set pretrained_model_path)")
        self._kwargs = kwargs
        self._weights_dir = weights_dir
        self._net = None
        self.lower_better = bool(DEFAULT_CONFIGS[metric].get("lower_better", False))
        self.needs_gt = DEFAULT_CONFIGS[metric]["metric_mode"] == "FR"

    def to(self, device) -> "PyiqaMetric":
        super().to(device)
        if self._net is not None:
            self._net.to(self.device)
        return self

    def _create(self):
        """The pyiqa model (called inside ``offline``)."""
        return _pyiqa_metric(self.settings["metric"], self.device, **self._kwargs)

    def _build(self):
        if self._net is None:
            try:
                with offline(self._weights_dir):
                    self._net = self._create()
            except MetricUnavailable:
                raise
            except ModuleNotFoundError as err:
                raise MetricUnavailable(missing_package(err) or f"cannot import '{err.name}'") from None
            except OSError as err:
                if type(err).__module__.startswith("huggingface_hub"):   # the hub in offline mode: no request made
                    raise MissingWeights("needs a file of the Hugging Face hub (a timm/transformers backbone) that is "
                                         "not in its local cache; nothing is downloaded") from None
                raise MetricUnavailable(f"needs weights that are not on this machine ({_last_line(err)}); set "
                                        f"pretrained_model_path or weights_dir") from None
        return self._net

    def prepare(self) -> None:
        self._build()

    def __call__(self, restored, gt):
        net = self._build()
        with torch.no_grad():
            score = net(restored.to(self.device), gt.to(self.device)) if self.needs_gt else net(restored.to(self.device))
        return score.reshape(-1).double().cpu()


def read_state(path: str, arch: str, required: tuple[str, ...] = ()) -> dict:
    """A pyiqa checkpoint's state dict: the file's own, or the one under ``'params'`` (pyiqa's
    training output), ``module.`` prefixes dropped as pyiqa does.  ``required`` keys must be in it
    (a non-strict load would otherwise accept a wrong file silently)."""
    from pyiqa.archs.arch_util import clean_state_dict
    state = read_weights_file(path)
    if isinstance(state, dict) and "params" in state and isinstance(state["params"], dict):
        state = state["params"]
    if not isinstance(state, dict):
        raise DataError(f"'{path}' is not a state dict (a {type(state).__name__})")
    state = clean_state_dict(state)
    absent = [k for k in required if k not in state]
    if absent:
        raise DataError(f"'{path}' is not a {arch} checkpoint: it has no {', '.join(absent)}")
    return state


def load_state(net: torch.nn.Module, path: str, state: dict | None = None, strict: bool = True) -> None:
    """Load ``state`` (default: ``read_state(path)``) into ``net``; a mismatch names the file."""
    try:
        net.load_state_dict(read_state(path, type(net).__name__) if state is None else state, strict=strict)
    except RuntimeError as err:
        raise DataError(f"'{path}' does not fit pyiqa's {type(net).__name__}: "
                        f"{str(err).strip().splitlines()[0]} ...") from None


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


TORCHVISION_BACKBONES = {"alex": "AlexNet_Weights.IMAGENET1K_V1", "vgg": "VGG16_Weights.IMAGENET1K_V1"}


def torchvision_file(weights: str) -> str:
    import torchvision.models as tvm
    return url_name(tvm.get_weight(weights).url)


class LPIPSMetric(PyiqaMetric):
    """LPIPS (Zhang et al. 2018) through pyiqa from local files: ``pretrained_model_path`` (pyiqa's
    LPIPS checkpoint, ``LPIPS_v0.1_alex-df73285e.pth`` / ``LPIPS_v0.1_vgg-a78928a0.pth``) and
    ``backbone_path`` (torchvision's ImageNet AlexNet/VGG16 file, ``alexnet-owt-7be5be79.pth`` /
    ``vgg16-397923af.pth``), or both from ``weights_dir``.  Lower is better."""

    def __init__(self, pretrained_model_path: Optional[str] = None, backbone_path: Optional[str] = None,
                 net: Literal["alex", "vgg"] = "alex", version: Literal["0.1", "0.0"] = "0.1",
                 weights_dir: Optional[str] = None):
        from pyiqa.archs.lpips_arch import default_model_urls
        files = resolve_weights([
            Need("pretrained_model_path", pretrained_model_path, url_name(default_model_urls[f"{version}_{net}"]),
                 f"pyiqa's LPIPS-{net} v{version} layers"),
            Need("backbone_path", backbone_path, torchvision_file(TORCHVISION_BACKBONES[net]),
                 f"torchvision's ImageNet {'AlexNet' if net == 'alex' else 'VGG16'}")], weights_dir)
        super().__init__("lpips" if net == "alex" else "lpips-vgg", pretrained_model_path=files["pretrained_model_path"],
                         net=net, version=version)
        self.settings["backbone_path"] = files["backbone_path"]

    def _create(self):
        with local_torchvision_weights(TORCHVISION_BACKBONES[self.settings["net"]], self.settings["backbone_path"]):
            return super()._create()


METRICS.register(LPIPSMetric, name="lpips")


class DISTSMetric(PyiqaMetric):
    """DISTS (Ding et al. 2020) through pyiqa: ``pretrained_model_path`` is pyiqa's
    ``DISTS_weights-f5e65c96.pth`` (the alpha/beta weights; pyiqa loads it non-strictly, so it is
    checked to hold them), ``backbone_path`` torchvision's ImageNet VGG16 ``vgg16-397923af.pth``; or
    both from ``weights_dir``.  Full-reference, lower is better."""

    def __init__(self, pretrained_model_path: Optional[str] = None, backbone_path: Optional[str] = None,
                 weights_dir: Optional[str] = None):
        from pyiqa.archs.dists_arch import default_model_urls
        files = resolve_weights([
            Need("pretrained_model_path", pretrained_model_path, url_name(default_model_urls["url"]),
                 "pyiqa's DISTS weights"),
            Need("backbone_path", backbone_path, torchvision_file(TORCHVISION_BACKBONES["vgg"]),
                 "torchvision's ImageNet VGG16")], weights_dir)
        super().__init__("dists", pretrained=False)
        self.settings.update(pretrained_model_path=files["pretrained_model_path"], backbone_path=files["backbone_path"])
        del self.settings["pretrained"]
        self.min_size = 32        # four stride-2 L2 poolings before the last stage

    def _create(self):
        path = self.settings["pretrained_model_path"]
        state = read_state(path, "DISTS", required=("alpha", "beta"))
        with local_torchvision_weights(TORCHVISION_BACKBONES["vgg"], self.settings["backbone_path"]):
            metric = super()._create()
        load_state(metric.net, path, state, strict=False)
        return metric


METRICS.register(DISTSMetric, name="dists")

MUSIQ_VARIANTS = {"koniq": ("musiq", "koniq10k"), "spaq": ("musiq-spaq", "spaq"), "ava": ("musiq-ava", "ava"),
                  "paq2piq": ("musiq-paq2piq", "paq2piq")}


class MUSIQMetric(PyiqaMetric):
    """MUSIQ (Ke et al. 2021) through pyiqa; ``variant`` is the training set of the checkpoint
    (``koniq`` = pyiqa's ``musiq``, ``spaq``, ``ava`` (scores 1-10), ``paq2piq``), its file pyiqa's
    ``musiq_<variant>_ckpt-*.pth`` from ``pretrained_model_path`` or ``weights_dir``.  No GT."""

    def __init__(self, variant: Literal["koniq", "spaq", "ava", "paq2piq"] = "koniq",
                 pretrained_model_path: Optional[str] = None, weights_dir: Optional[str] = None):
        from pyiqa.archs.musiq_arch import default_model_urls
        name, key = MUSIQ_VARIANTS[variant]
        files = resolve_weights([Need("pretrained_model_path", pretrained_model_path, url_name(default_model_urls[key]),
                                      f"pyiqa's MUSIQ trained on {key}")], weights_dir)
        extra = {"num_class": 10} if variant == "ava" else {}       # AVA's head is a 10-bin score distribution
        super().__init__(name, pretrained_model_path=files["pretrained_model_path"], **extra)
        self.settings["variant"] = variant
        self.min_size = 32        # one 32x32 patch


METRICS.register(MUSIQMetric, name="musiq")

MANIQA_VARIANTS = {"koniq": "maniqa", "kadid": "maniqa-kadid", "pipal": "maniqa-pipal"}


@contextlib.contextmanager
def _timm_without_pretrained():
    """MANIQA asks timm for an ImageNet ViT-B/8 (a Hugging Face download) that its own checkpoint
    then overwrites entirely: build that ViT randomly initialised instead."""
    import timm
    create = timm.create_model

    def create_model(*args, **kwargs):
        return create(*args, **{**kwargs, "pretrained": False})
    timm.create_model = create_model
    try:
        yield
    finally:
        timm.create_model = create


class MANIQAMetric(PyiqaMetric):
    """MANIQA (Yang et al. 2022) through pyiqa; ``variant`` is the checkpoint's training set
    (``koniq`` = pyiqa's ``maniqa``, ``kadid``, ``pipal``), its file pyiqa's ``ckpt_koniq10k.pt`` /
    ``ckpt_kadid10k.pt`` / ``MANIQA_PIPAL-ae6d356b.pth`` (the whole network, ViT included, flat or
    under ``'params'``) from ``pretrained_model_path`` or ``weights_dir``.  ``test_sample`` is the
    number of 224x224 crops averaged (pyiqa: 20).  No GT."""

    def __init__(self, variant: Literal["koniq", "kadid", "pipal"] = "koniq", pretrained_model_path: Optional[str] = None,
                 weights_dir: Optional[str] = None, test_sample: int = 20):
        from pyiqa.archs.maniqa_arch import default_model_urls
        files = resolve_weights([Need("pretrained_model_path", pretrained_model_path,
                                      url_name(default_model_urls[variant]), f"pyiqa's MANIQA trained on {variant}")],
                                weights_dir)
        super().__init__(MANIQA_VARIANTS[variant], pretrained=False, test_sample=test_sample)
        del self.settings["pretrained"]
        self.settings.update(variant=variant, pretrained_model_path=files["pretrained_model_path"])

    def _create(self):
        path = self.settings["pretrained_model_path"]
        state = read_state(path, "MANIQA")          # read (weights only) before the network is built
        with _timm_without_pretrained():
            metric = super()._create()
        load_state(metric.net, path, state)
        return metric


METRICS.register(MANIQAMetric, name="maniqa")

#: pyiqa's CLIP-IQA prompt pairs (positive, negative), checked against pyiqa's own when built
CLIPIQA_PROMPTS = ["Good image", "bad image", "Sharp image", "blurry image", "sharp edges", "blurry edges",
                   "High resolution image", "low resolution image", "Noise-free image", "noisy image"]


def _import_clipiqa():
    """pyiqa's CLIP-IQA module.  openai-clip 1.0.1 imports ``pkg_resources`` only for its
    ``packaging``; where setuptools no longer ships pkg_resources, that import is served by a
    stand-in holding ``packaging`` for the duration of the import."""
    try:
        import pyiqa.archs.clipiqa_arch as arch
    except ModuleNotFoundError as err:
        if err.name != "pkg_resources":
            raise
        import packaging.version
        sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)
        try:
            import pyiqa.archs.clipiqa_arch as arch
        finally:
            del sys.modules["pkg_resources"]
    return arch


def _clip_url(backbone: str) -> str:
    from pyiqa.archs.clip_model import _MODELS
    return _MODELS[backbone]


def _is_torchscript(path: str) -> bool:
    """A TorchScript archive (a zip with compiled code), not a ``torch.save`` file."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


class CLIPIQAMetric(PyiqaMetric):
    """CLIP-IQA (Wang et al. 2023) through pyiqa.  ``variant``: ``clipiqa`` (zero-shot: CLIP RN50 with
    ``prompts``, pairs of positive/negative texts, default pyiqa's five pairs), ``clipiqa+``
    (CoOp-learned prompt context, pyiqa's ``CLIP-IQA+_learned_prompts-603f3273.pth``), or
    ``clipiqa+_rn50_512`` / ``clipiqa+_vitL14_512`` (pyiqa's finetuned checkpoints).  Files: the
    OpenAI CLIP backbone ``backbone_path`` (``RN50.pt`` / ``ViT-L-14.pt`` as OpenAI distributes them,
    TorchScript: pyiqa's loader fails on a plain state dict) and, for the + variants,
    ``pretrained_model_path``; or both from ``weights_dir``.  No GT."""

    def __init__(self, variant: Literal["clipiqa", "clipiqa+", "clipiqa+_rn50_512", "clipiqa+_vitL14_512"] = "clipiqa",
                 backbone_path: Optional[str] = None, pretrained_model_path: Optional[str] = None,
                 prompts: Optional[list[str]] = None, weights_dir: Optional[str] = None):
        try:
            arch = _import_clipiqa()
        except ModuleNotFoundError as err:
            raise MetricUnavailable(f"needs the package '{err.name}', which is not installed (CLIP-IQA uses "
                                    f"openai-clip: pip install openai-clip)") from None
        backbone = CLIPIQA_BACKBONES[variant]
        needs = [Need("backbone_path", backbone_path, url_name(_clip_url(backbone)), f"OpenAI CLIP {backbone}")]
        if variant != "clipiqa":
            if prompts is not None:
                raise ValueError(f"prompts: variant '{variant}' uses learned prompts; custom prompts need variant 'clipiqa'")
            needs.append(Need("pretrained_model_path", pretrained_model_path, url_name(arch.default_model_urls[variant]),
                              f"pyiqa's {variant} prompts/weights"))
        elif pretrained_model_path is not None:
            raise ValueError("pretrained_model_path: variant 'clipiqa' has no checkpoint (zero-shot prompts)")
        if prompts is not None and (len(prompts) < 2 or len(prompts) % 2):
            raise ValueError(f"prompts: pairs of positive and negative texts expected, got {len(prompts)} texts")
        files = resolve_weights(needs, weights_dir)
        super().__init__(variant, pretrained=False, backbone=files["backbone_path"])
        for key in ("pretrained", "backbone"):
            del self.settings[key]
        self.settings.update(variant=variant, backbone=backbone, backbone_path=files["backbone_path"])
        if variant == "clipiqa":
            self.settings["prompts"] = list(prompts) if prompts is not None else list(CLIPIQA_PROMPTS)
        else:
            self.settings.update(prompts="learned", pretrained_model_path=files["pretrained_model_path"])
        self.min_size = 32        # the CLIP ResNet's stride

    def _create(self):
        arch = _import_clipiqa()
        path = self.settings["backbone_path"]
        if not _is_torchscript(path):
            raise DataError(f"'{path}' is not a TorchScript archive: pyiqa's CLIP loader reads OpenAI's CLIP files "
                            f"({self.settings['backbone']}: '{url_name(_clip_url(self.settings['backbone']))}') as "
                            f"distributed, TorchScript")
        variant = self.settings["variant"]
        trained = None                   # read (weights only) before the network is built
        if variant == "clipiqa+":        # pyiqa stores only the learned context for the RN50 clipiqa+
            trained = read_weights_file(self.settings["pretrained_model_path"])
        elif variant != "clipiqa":
            trained = read_state(self.settings["pretrained_model_path"], "CLIPIQA")
        try:
            metric = super()._create()
        except (RuntimeError, EOFError, CheckpointError):  # pyiqa's CLIP loader: torch.jit.load, then torch.load
            try:                                   # the TorchScript reader's reason, not the fallback's
                torch.jit.load(path, map_location="cpu")
            except RuntimeError as err:
                raise CheckpointError(f"cannot read '{path}' as a TorchScript archive (OpenAI CLIP's format): "
                                      f"{(str(err).strip().splitlines() or [type(err).__name__])[0]}") from None
            raise
        net = metric.net
        if variant == "clipiqa":
            if not torch.equal(net.prompt_pairs, arch.clip.tokenize(CLIPIQA_PROMPTS)):
                raise RuntimeError("pyiqa's CLIP-IQA prompts differ from osir's record of them (CLIPIQA_PROMPTS)")
            net.prompt_pairs = arch.clip.tokenize(self.settings["prompts"])
        elif variant == "clipiqa+":
            if not torch.is_tensor(trained) or trained.shape != net.prompt_learner.ctx.shape:
                raise DataError(f"'{self.settings['pretrained_model_path']}' is not a CLIP-IQA+ prompt context "
                                f"(a {tuple(net.prompt_learner.ctx.shape)} tensor)")
            net.prompt_learner.ctx.data = trained.to(net.prompt_learner.ctx)
        else:
            load_state(net, self.settings["pretrained_model_path"], trained)
        return metric


METRICS.register(CLIPIQAMetric, name="clipiqa")


@METRICS.register(name="pyiqa")
def any_pyiqa(metric: str, pretrained_model_path: Optional[str] = None, weights_dir: Optional[str] = None,
              options: dict = {}):  # noqa: B006
    """Any other pyiqa metric by name, from local files only: ``pretrained_model_path`` and/or
    ``weights_dir`` (files under their download names); skipped when it would download."""
    kwargs = dict(options)
    if pretrained_model_path is not None:
        kwargs["pretrained_model_path"] = pretrained_model_path
    return PyiqaMetric(metric, weights_dir=weights_dir, **kwargs)


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


# ----------------------------------------------------------------------------- the suite
def _takes_weights_dir(type_name: str, key: str) -> bool:
    entry = METRICS.get(type_name, f"{key}.type")
    target = entry.__init__ if inspect.isclass(entry) else entry
    return "weights_dir" in inspect.signature(target).parameters


class MetricSuite:
    """The metrics of one ``metrics:`` section, built from the registry.

    ``weights_dir``: the folder of weight files for every learned metric without its own.  A
    metric that cannot be built here (a weights file or package missing) is skipped with one line
    on stderr and listed in ``skipped`` and ``settings()``; with ``strict`` it is an error.
    Per-image metrics score batches (``score``); set metrics (FID) score a restored folder against
    the GT folder (``score_sets``), after the images are written."""

    def __init__(self, specs: dict[str, dict], device="cpu", weights_dir: str | None = None, strict: bool = False):
        self.metrics: dict[str, Metric] = {}        # per image
        self.set_metrics: dict[str, Metric] = {}    # over folders (FID)
        self.skipped: dict[str, dict] = {}          # name -> {type, skipped: reason}
        for name, spec in specs.items():
            key = f"metrics.{name}"
            if weights_dir is not None and isinstance(spec, dict) and "type" in spec \
                    and spec.get("weights_dir") is None and _takes_weights_dir(spec["type"], key):
                spec = {**spec, "weights_dir": str(weights_dir)}
            try:
                metric = METRICS.build(spec, key).to(device)
                metric.prepare()
            except MetricUnavailable as err:
                if strict:
                    raise (MissingWeights if isinstance(err, MissingWeights) else MetricUnavailable)(
                        f"{key}: {err}") from None
                self.skipped[name] = {"type": spec["type"], "skipped": str(err)}
                print(f"warning: {key} skipped: {err}", file=sys.stderr)
                continue
            (self.metrics if metric.per_image else self.set_metrics)[name] = metric

    def __bool__(self) -> bool:
        return bool(self.metrics or self.set_metrics)

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

    def score_sets(self, restored_dir, gt_dir) -> dict[str, float]:
        """The set metrics (FID) of the images in ``restored_dir`` against those in ``gt_dir`` (all
        images of both folders, subfolders included; not matched by name); none without a GT folder."""
        if gt_dir is None:
            return {}
        return {name: metric.score_folders(restored_dir, gt_dir) for name, metric in self.set_metrics.items()}

    def settings(self) -> dict[str, dict]:
        out = {name: {"type": type(m).__name__, "lower_better": m.lower_better,
                      **({} if m.per_image else {"per_image": False}), **m.settings}
               for name, m in {**self.metrics, **self.set_metrics}.items()}
        return {**out, **self.skipped}
