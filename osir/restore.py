"""Restore images or folders with a trained or released model, without writing an options file.

    osir restore --model irsde-denoise --weights W.pth INPUT_DIR_OR_IMAGE [...] -o OUT/
    osir restore --weights RealESRGAN_x4plus.pth photo.jpg -o out/     # method recognised from the keys
    osir restore --options options/test/irsde.yml INPUT -o OUT/          # a full osir options file
    python -m osir.restore ...                                           # the same

Where the method and network come from:

* ``--model NAME`` is a preset (``available_models()``, ``--list-models``): the method's settings the
  weights cannot tell (the SDE, sampler and step count of the release / options file it mirrors).  The
  network's hyper-parameters come from the weights themselves (``osir.recognize``) and fall back to the
  release network's when the file is not recognised (a file that does not fit is then refused, the
  differences listed).
* without ``--model`` the method is recognised from the file's keys and shapes (``osir.recognize``).
* ``--options FILE``: an osir test options file (``--weights`` then replaces ``path.pretrained.g``).
* ``--set key.path=value`` (repeatable) changes any option, e.g. the files a preset cannot know
  (``method.daclip_path``, ``method.sd_path``, ``method.compression_path``).

Padding and tiling follow the method's own declarations (``osir.inference.tiling.restore_image``,
``--tile``).  Choices a reviewer should know (also in ``--help``):

* a folder is read recursively; outputs keep the sub-folders and names (only the extension changes,
  with ``--ext``); files without an image extension are skipped with one note each; a file that cannot
  be decoded is reported (named) and skipped, the run goes on and exits with code 1 at the end (0 when
  every image was restored; user errors: 2); a floating-point input holding NaN or Inf is reported and
  skipped the same way; inputs are read upright by their EXIF orientation (as viewers show them);
* a restored image holding NaN or Inf stops the run (exit code 2) before it is written, naming the image
  and the network whose weights are the likely cause (``check_finite_output``);
* grey inputs are restored as RGB and written back grey (BT.601 luma); an alpha channel is kept,
  resized (bilinear) to the output size, where the output format has one (png, tif, webp) and dropped
  with a note otherwise; 16-bit inputs are restored from all 16 bits and written 16-bit where the
  format allows (png, tif); floating-point inputs are written 16-bit there;
* an output never overwrites an input: a run whose output path equals an input's, or where two inputs
  map to one output, is refused before any work; files under the output folder are never read as inputs;
* ``--steps`` / ``--sampler`` apply to the diffusion methods (IR-SDE, Refusion, DA-CLIP UIR) and are an
  error for the others; ``--seed`` (default 0) seeds every batch's generator, so an image restored alone
  or in a folder gets the same output at batch size 1 (with larger batches noise is drawn per batch);
* ``--precision fp16`` is refused on the CPU (osir's methods autocast fp16 on accelerators only).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from osir import cli
from osir.inference import check_finite_output
from osir.data.io import IMAGE_EXTENSIONS, DataError, ImageReadError, decode_raw
from osir.recognize import TILES   # the tiling the options files set for inference, by method
from osir.registry import OptionsError, nearest

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
EXTENSIONS = ("png", "jpg", "same")
#: output suffixes whose files can hold an alpha channel / 16-bit samples (OpenCV's writers)
ALPHA_SUFFIXES = (".png", ".tif", ".tiff", ".webp")
DEEP_SUFFIXES = (".png", ".tif", ".tiff")
_FAMILY = {"png": (".png",), "jpg": (".jpg", ".jpeg")}


# ----------------------------------------------------------------------------- presets
_RRDB_X4 = {"type": "RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32,
            "scale": 4}
_UNET = {"type": "ConditionalUNet", "in_nc": 3, "out_nc": 3, "nf": 64, "depth": 4}
_IRSDE = {"type": "IRSDE", "T": 100, "schedule": "cosine", "eps": 0.005, "network": _UNET}
_NAFNET = {"type": "ConditionalNAFNet", "img_channel": 3, "width": 64, "enc_blk_nums": [1, 1, 1, 28],
           "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1, 1]}
_REFUSION = {"type": "Refusion", "max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005, "sampler": "sde",
             "network": _NAFNET}
_DEMO_SAMPLER = {"max_sigma": 25, "T": 100, "schedule": "cosine", "eps": 0.05, "sampler": "posterior",
                 "sample_steps": 10, "eta": 0.0, "clip_denoised": True}
_DACLIP_UNET = {"type": "DACLIPUNet", "in_nc": 3, "out_nc": 3, "nf": 64, "ch_mult": [1, 2, 4, 8], "context_dim": 512,
                "use_degra_context": True, "use_image_context": True}




@dataclass(frozen=True)
class Preset:
    """A ``--model`` name: the method section of the options file it mirrors (``source``), without
    training-only keys.  ``weights``: the network the ``--weights`` file belongs to, or an option key
    (``method.release_path``) that takes the file; ``needs``: options the user must give (``--set``)."""
    description: str
    method: dict
    source: str | None = None
    weights: str = "g"
    needs: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "realesrgan-x4": Preset("Real-ESRGAN x4 super-resolution (RRDBNet; RealESRGAN_x4plus.pth or an osir run)",
                            {"type": "RealESRGAN", "scale": 4, "network": _RRDB_X4}, "options/realesrgan.yml"),
    "realesrgan-x2": Preset("Real-ESRGAN x2 super-resolution (RRDBNet x2; RealESRGAN_x2plus.pth)",
                            {"type": "RealESRGAN", "scale": 2, "network": {**_RRDB_X4, "scale": 2}}),
    "realesrnet-x4": Preset("Real-ESRNet x4 super-resolution (RRDBNet, L1 only; RealESRNet_x4plus.pth)",
                            {"type": "RealESRGAN", "scale": 4, "network": _RRDB_X4}, "options/realesrnet.yml"),
    "irsde-denoise": Preset("IR-SDE Gaussian denoising (lambda 70, T 1000, reverse ODE)",
                            {**_IRSDE, "max_sigma": 70, "T": 1000, "sampler": "ode"},
                            "options/irsde/denoising.yml"),
    "irsde-deraining": Preset("IR-SDE deraining (Rain100H release: lambda 10, T 100, posterior sampler)",
                              {**_IRSDE, "max_sigma": 10, "sampler": "posterior"}, "options/irsde/deraining.yml"),
    "irsde-deblurring": Preset("IR-SDE deblurring (GoPro release: lambda 10, T 100, reverse SDE)",
                               {**_IRSDE, "max_sigma": 10, "sampler": "sde"}, "options/irsde/deblurring.yml"),
    "irsde-sr-x4": Preset("IR-SDE x4 super-resolution (lambda 30, T 100, reverse SDE from the bicubic LQ)",
                          {**_IRSDE, "max_sigma": 30, "upscale": 4, "sampler": "sde"},
                          "options/irsde/super_resolution.yml"),
    "irsde-inpainting": Preset("IR-SDE inpainting (holes filled with white; lambda 30, T 100, reverse SDE)",
                               {**_IRSDE, "max_sigma": 30, "sampler": "sde"}, "options/irsde/inpainting.yml"),
    "irsde-demo": Preset("IR-SDE demo denoiser (sigma 25, 10 posterior steps; options/demo.yml's run)",
                         {"type": "IRSDE", **_DEMO_SAMPLER,
                          "network": {"type": "ConditionalUNet", "nf": 16, "depth": 3, "attn_levels": [3]}},
                         "options/demo.yml"),
    "refusion-shadow": Preset("Refusion shadow removal (NAFNet, lambda 50, T 100, reverse SDE)", _REFUSION,
                              "options/refusion/shadow_removal.yml"),
    "refusion-lowlight": Preset(
        "Refusion low-light enhancement (entropy-refusion: 5-level NAFNet, lambda 50, T 100, posterior sampler)",
        {**_REFUSION, "sampler": "posterior",
         "network": {**_NAFNET, "enc_blk_nums": [1, 1, 1, 1, 28], "dec_blk_nums": [1, 1, 1, 1, 1]}},
        "options/refusion/lowlight.yml"),
    "refusion-deraining": Preset("Refusion deraining (NAFNet, lambda 50, T 100, reverse SDE)", _REFUSION,
                                 "options/refusion/deraining.yml"),
    "refusion-dehazing": Preset(
        "latent Refusion HR dehazing (NAFNet on the compression model's latents; needs method.compression_path)",
        {"type": "LatentRefusion", "max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005, "sampler": "sde",
         "network": {**_NAFNET, "img_channel": 8, "global_skip": True},
         "compression": {"type": "CompressionUNet", "in_ch": 3, "out_ch": 3, "ch": 8, "ch_mult": [4, 8, 8, 16],
                         "embed_dim": 8}},
        "options/refusion/latent_stage2.yml",
        needs={"method.compression_path": "the stage-1 compression model (the release's latent-dehazing.pth or a "
                                          "net_l_*.safetensors)"}),
    "refusion-demo": Preset("Refusion demo denoiser (sigma 25, 10 posterior steps; options/refusion_demo.yml's run)",
                            {"type": "Refusion", **_DEMO_SAMPLER,
                             "network": {"type": "ConditionalNAFNet", "img_channel": 3, "width": 16,
                                         "enc_blk_nums": [1, 1, 1, 1], "middle_blk_num": 1,
                                         "dec_blk_nums": [1, 1, 1, 1]}},
                            "options/refusion_demo.yml"),
    "daclip-uir": Preset("DA-CLIP universal restoration, ten degradation types (needs method.daclip_path)",
                         {"type": "DACLIPUIR", "max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005,
                          "sampler": "posterior", "clip_model": "ViT-B-32", "network": _DACLIP_UNET},
                         "options/daclip_uir.yml",
                         needs={"method.daclip_path": "the DA-CLIP weights (daclip_ViT-B-32.pt or a stage-1 run's "
                                                      "net_daclip_*.safetensors)"}),
    "wild-ir": Preset("DA-CLIP wild image restoration, ViT-L/14 (20 posterior steps; needs method.daclip_path)",
                      {"type": "DACLIPUIR", "max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005,
                       "sampler": "posterior", "sample_steps": 20, "clip_model": "ViT-L-14",
                       "network": {**_DACLIP_UNET, "context_dim": 768, "use_degra_context": False, "scale": 0.5}},
                      "options/wild_ir.yml",
                      needs={"method.daclip_path": "the wild DA-CLIP weights (wild-daclip_ViT-L-14.pt)"}),
    "osediff": Preset("OSEDiff x4 one-step real-world SR (osediff.pkl; needs method.sd_path, SD 2.1-base folder)",
                      {"type": "OSEDiff", "scale": 4, "merge_lora": True, "prompt": {"type": "EmptyPrompt"},
                       "color_correction": "adain",
                       "tiling": {"vae_encoder": 1088, "vae_decoder": 246, "latent": 96, "latent_overlap": 32}},
                      "options/osediff.yml", weights="method.release_path",
                      needs={"method.sd_path": "a local diffusers Stable Diffusion 2.1-base folder"}),
}


def available_models() -> dict[str, str]:
    """``--model`` names -> one-line description."""
    return {name: preset.description for name, preset in PRESETS.items()}


# ----------------------------------------------------------------------------- options
def _set(tree: dict, key: str, value) -> None:
    node = tree
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _get(tree: dict, key: str):
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _recognizer():
    """``osir.recognize.recognize``, or None where that module is not available."""
    if importlib.util.find_spec("osir.recognize") is None:
        return None
    from osir.recognize import recognize
    return recognize


def _weights_file(weights) -> Path:
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: '{path}'")
    return path


#: the sampler settings a weights file cannot tell, shown when they are assumed
SDE_KEYS = ("max_sigma", "T", "eps", "sampler")


def _describe(rec) -> str:
    hp = " ".join(f"{k}={v}" for k, v in rec.hyper_parameters.items())
    arch = f"{rec.arch} {hp}".strip() if rec.arch else "its own layout"
    return f"{rec.method} ({arch}; detected by {rec.detector})"


def _preset_options(model: str, weights: Path) -> tuple[dict, object, str]:
    """(raw options, the recognised file or None, a note) for ``--model``: the preset's method
    section with the network read from the weights where ``osir.recognize`` knows the file."""
    if model not in PRESETS:
        raise OptionsError(f"--model: unknown model '{model}'{nearest(model, PRESETS)}; "
                           f"allowed: {', '.join(PRESETS)}")
    preset = PRESETS[model]
    method = copy.deepcopy(preset.method)
    raw = {"name": model, "method": method, "path": {"pretrained": {}}}
    if method["type"] in TILES:
        raw["tile"] = dict(TILES[method["type"]])
    if preset.weights.startswith("method."):            # a file the method reads itself (osediff.pkl)
        _set(raw, preset.weights, str(weights))
        return raw, None, ""
    rec, note = None, ""
    recognize = _recognizer()
    if recognize is not None:
        from osir.engine.checkpoint import CheckpointError
        try:
            rec = recognize(weights)
        except CheckpointError as err:     # not a layout osir.recognize knows: the release network, strictly
            note = f"note: '{weights}' not recognised ({cli.one_line(err)[:200]}); using {model}'s release network"
    expected = method.get("network", {}).get("type")
    if rec is not None and rec.arch is not None:
        rec.network = preset.weights         # the preset's network takes the file (a run may name it otherwise)
        if expected is not None and rec.arch != expected:
            raise OptionsError(f"--model {model}: expects {expected} weights ({method['type']}), but '{weights}' "
                               f"holds {_describe(rec)}; choose another --model or leave --model out")
        network = {"type": rec.arch, **rec.hyper_parameters}
        if method["type"] == "RealESRGAN" and network.get("scale", method["scale"]) != method["scale"]:
            others = [n for n, p in PRESETS.items() if p.method["type"] == "RealESRGAN"
                      and p.method["scale"] == network["scale"]]
            raise OptionsError(f"--model {model} is x{method['scale']}, but '{weights}' holds a x{network['scale']} "
                               f"RRDBNet; use --model {' or '.join(others) or '(none)'} or leave --model out")
        method["network"] = network
        note = f"weights: {_describe(rec)}"
    else:
        rec = None
        raw["path"]["pretrained"][preset.weights] = str(weights)
    return raw, rec, note


def _mentions(tree, value: str) -> bool:
    if isinstance(tree, dict):
        return any(_mentions(v, value) for v in tree.values())
    if isinstance(tree, list):
        return any(_mentions(v, value) for v in tree)
    return str(tree) == value


def _recognised_options(weights: Path, overrides: list[str] | None) -> tuple[dict, object, str]:
    """(options, the recognised file or None, a note) for weights without ``--model``: the method and its
    network from ``osir.recognize``; what only the user can give (``needs``) from ``--set method.<key>=``."""
    from osir.options import apply_overrides
    recognize = _recognizer()
    if recognize is None:
        raise OptionsError(f"--model: name the model of '{weights}' (one of {', '.join(PRESETS)}) or give --options: "
                           "recognising weights needs osir.recognize, which this installation lacks")
    rec = recognize(weights)
    given = apply_overrides({}, overrides or []).get("method") or {}
    missing = [k for k in rec.needs if given.get(k) is None]
    if missing:
        raise OptionsError("; ".join(f"method.{k}: {rec.needs[k]} ('{weights}' is {rec.method} weights); give it "
                                     f"with --set method.{k}=PATH" for k in missing))
    opt = rec.method_options(pretrained=False, **{k: given[k] for k in rec.needs})
    note = f"recognised '{weights}' as {_describe(rec)}"
    if rec.settings and rec.settings_source.startswith("not in the weights"):
        shown = " ".join(f"{k}={v}" for k, v in rec.settings.items() if k in SDE_KEYS)
        if shown:                                  # say which sampler settings were assumed, and how to change them
            note += (f"; assumed {shown} ({rec.settings_source}): change with --set method.<key>=VALUE, "
                     "e.g. --set method.max_sigma=70")
    if rec.arch is None:                           # e.g. osediff.pkl: the method reads the file itself
        if not _mentions(opt["method"], str(weights)):
            opt["path"]["pretrained"][rec.network] = str(weights)
        rec = None
    return opt, rec, note


def _resolve(raw: dict, overrides: list[str] | None, needs: dict) -> dict:
    from osir.options import Options, apply_overrides, validate
    raw = apply_overrides(raw, overrides or [])
    for key, what in needs.items():
        if not _get(raw, key):
            raise OptionsError(f"{key}: --model {raw['name']} needs {what}; give it with --set {key}=PATH")
    opt = validate(raw, Options)
    opt["datasets"] = {}
    return opt


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError) as err:
        raise OptionsError(f"--device: '{device}' is not usable here ({cli.one_line(err)[:160]}); "
                           "use cpu or an available accelerator (cuda, cuda:1, mps, xpu)") from None
    return dev


# ----------------------------------------------------------------------------- the restorer
class Restorer:
    """A method built for inference on one device: ``restore(image)`` takes HxWx3 RGB (uint8, uint16
    or float in [0, 1]; HxW / HxWx1 grey is repeated, a 4th alpha channel ignored) and returns float32
    RGB in [0, 1] of ``scale`` x the size.  Diffusion methods (``is_diffusion``) take ``steps``,
    ``sampler`` and ``seed`` per call (None: the preset's / options' steps and sampler, seed 0)."""

    def __init__(self, method, opt: dict, name: str, device: torch.device, precision: str, tile: int | None,
                 overlap: int):
        from osir.methods.irsde.method import IRSDE
        self.model, self.opt, self.name = method, opt, name
        self.method = opt["method"]["type"]
        self.is_diffusion = isinstance(method, IRSDE)
        self.scale = int(method.scale)
        self.device, self.precision = device, precision
        self.tile, self.overlap = tile, overlap
        self.steps = len(method.timesteps) - 1 if self.is_diffusion else None
        self.sampler = opt["method"].get("sampler") if self.is_diffusion else None
        self.note = ""          # what was recognised in the weights
        #: network -> the file its weights came from (named when an output is not finite)
        self.sources = {**method.pretrained, **opt["path"]["pretrained"]}

    def __repr__(self) -> str:
        return (f"Restorer({self.name!r}, method={self.method}, scale={self.scale}, device={self.device}, "
                f"precision={self.precision}, tile={self.tile})")

    @staticmethod
    def to_tensor(image: np.ndarray) -> torch.Tensor:
        """HxWx3 (or grey / RGBA) uint8, uint16 or float array -> 3xHxW float32 in [0, 1]."""
        image = np.asarray(image)
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        elif image.dtype == np.uint16:
            image = image.astype(np.float32) / 65535.0
        elif np.issubdtype(image.dtype, np.floating):
            image = image.astype(np.float32)
            if not np.isfinite(image).all():
                raise DataError("image holds NaN/Inf values; osir restores finite images only")
        else:
            raise DataError(f"image has unsupported pixel type {image.dtype}; expected uint8, uint16 or float")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise DataError(f"image has shape {image.shape}; expected HxWx3 RGB (or HxW grey, HxWx4 RGBA)")
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        return torch.from_numpy(np.ascontiguousarray(image[:, :, :3].transpose(2, 0, 1)))

    def check_sampling(self, steps: int | None = None, sampler: str | None = None) -> None:
        """``OptionsError`` for steps / a sampler this method cannot take (a feed-forward method, steps outside
        [1, T], an unknown sampler)."""
        from osir.registry import SAMPLERS
        if not self.is_diffusion and (steps is not None or sampler is not None):
            flag = "--steps" if steps is not None else "--sampler"
            raise OptionsError(f"{flag}: {self.name} ({self.method}) is a feed-forward method; steps and samplers "
                               "apply to the diffusion methods (IR-SDE, Refusion, DA-CLIP UIR)")
        if steps is not None and not 1 <= steps <= self.model.sde.T:
            raise OptionsError(f"--steps: {self.name} samples 1 to T={self.model.sde.T} steps, got {steps}")
        if sampler is not None:
            SAMPLERS.get(sampler, "--sampler")

    def restore_tensor(self, lq: torch.Tensor, *, steps: int | None = None, sampler: str | None = None,
                       seed: int | None = None, names: list[str] | None = None,
                       paths: list[str] | None = None) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] -> B x 3 x sH x sW float32 in [0, 1], on the restorer's device.  ``names`` /
        ``paths`` (default image0, image1, ...) reach the method as a dataset's ``name`` / ``lq_path`` do (prompt
        extractors read them, e.g. ``TextFilePrompt``)."""
        from osir.inference import restore_image
        from osir.registry import SAMPLERS
        self.check_sampling(steps, sampler)
        method = self.model
        saved = (method.timesteps, method.sampler, method.sampler_extras) if self.is_diffusion else None
        try:
            if steps is not None:
                method.timesteps = method.sde.timesteps(steps)
            if sampler is not None:
                method.sampler = SAMPLERS.get(sampler, "--sampler")
                if sampler != self.opt["method"].get("sampler"):
                    method.sampler_extras = {}        # eta / clip_denoised belong to the configured posterior sampler
            generator = torch.Generator(device=self.device).manual_seed(0 if seed is None else int(seed))
            shown = list(paths or names or ["the image"] * lq.shape[0])        # named if an output is not finite
            with torch.no_grad():
                names = list(names or [f"image{i}" for i in range(lq.shape[0])])
                batch = {"lq": lq.to(self.device), "name": names, "lq_path": list(paths or names)}
                out = restore_image(method, batch, self.tile, self.overlap, generator)
            check_finite_output(method, out, shown, self.sources)
            return out.float().clamp(0, 1)
        finally:
            if saved is not None:
                method.timesteps, method.sampler, method.sampler_extras = saved

    def restore_batch(self, images: list[np.ndarray], *, steps: int | None = None, sampler: str | None = None,
                      seed: int | None = None, names: list[str] | None = None,
                      paths: list[str] | None = None) -> list[np.ndarray]:
        """Images of one size restored together (one generator for the batch)."""
        batch = torch.stack([self.to_tensor(im) for im in images])
        out = self.restore_tensor(batch, steps=steps, sampler=sampler, seed=seed, names=names, paths=paths)
        return [np.ascontiguousarray(o.permute(1, 2, 0).cpu().numpy()) for o in out]

    def restore(self, image: np.ndarray, *, steps: int | None = None, sampler: str | None = None,
                seed: int | None = None) -> np.ndarray:
        return self.restore_batch([image], steps=steps, sampler=sampler, seed=seed)[0]


def load_restorer(weights: str | Path | None, model: str | None = None, *, device: str = "cpu",
                  precision: str = "fp32", tile: int | None = None, options: str | Path | None = None,
                  tile_overlap: int | None = None, overrides: list[str] | None = None) -> Restorer:
    """Build a ``Restorer`` from a weights file and a preset name (``available_models()``), or from
    the weights alone (recognised by ``osir.recognize``), or from an osir options file (``options``;
    ``weights`` then replaces its ``path.pretrained.g``).  ``overrides``: ``key.path=value`` strings as
    ``--set``; ``tile``: tile size in LQ pixels (None: the preset's / options file's tiling, 0: whole
    images).  ``Restorer.note`` says what was recognised in the weights.  A ``Restorer`` switches steps and
    samplers per call on its method: use one per thread."""
    from osir.engine.checkpoint import load_network
    from osir.engine.trainer import build_method
    if precision not in PRECISIONS:
        raise OptionsError(f"--precision: unknown precision '{precision}'; allowed: {', '.join(PRECISIONS)}")
    dev = _device(device)
    if precision == "fp16" and dev.type == "cpu":
        raise OptionsError("--precision fp16: osir's methods autocast to fp16 on accelerators only (on the CPU it "
                           "would silently run fp32); use --precision bf16 or fp32 on the CPU")
    rec, note, needs = None, "", {}
    if options is not None:
        from osir.options import load_options
        if model is not None:
            raise OptionsError("--model and --options: give one of them (the options file names its method)")
        opt = load_options(options, overrides)
        if weights is not None:
            key = "method.release_path" if opt["method"]["type"] == "OSEDiff" else "path.pretrained.g"
            _set(opt, key, str(_weights_file(weights)))
        opt["datasets"] = {}
        name = opt["name"]
    else:
        if weights is None:
            raise OptionsError("--weights: give the weights file to restore with (or an --options file naming it)")
        path = _weights_file(weights)
        if model is not None:
            raw, rec, note = _preset_options(model, path)
            needs = PRESETS[model].needs
        else:
            raw, rec, note = _recognised_options(path, overrides)
        opt = _resolve(raw, overrides, needs)
        name = model or opt["method"]["type"]
    if tile is None:
        tile = (opt.get("tile") or {}).get("size")
    overlap = tile_overlap if tile_overlap is not None else (opt.get("tile") or {}).get("overlap", 32)
    method = build_method(opt)
    if rec is not None:
        if rec.network not in method.networks:
            raise OptionsError(f"'{weights}' holds network '{rec.network}', which {opt['method']['type']} does not have; "
                               f"networks: {', '.join(method.networks)}")
        load_network(method.networks[rec.network], str(weights), strict=True, state=rec.state_dict)
        opt["path"]["pretrained"][rec.network] = str(weights)     # the file named when an output is not finite
    method.setup(dev, PRECISIONS[precision])
    for net in method.networks.values():
        net.to(dev).eval().requires_grad_(False)
    method.prepare_inference()
    for net in method.networks.values():
        net.eval()
    restorer = Restorer(method, opt, name, dev, precision, tile or None, int(overlap))
    restorer.note = note
    return restorer


# ----------------------------------------------------------------------------- files
@dataclass
class Job:
    source: Path
    target: Path
    name: str           # the path relative to its input folder, without the extension (a dataset's ``name``)


@dataclass
class Loaded:
    """A decoded input: float32 RGB, how it was stored (grey, alpha, 16-bit or float)."""
    rgb: np.ndarray
    grey: bool
    alpha: np.ndarray | None     # float32 HxW in [0, 1]
    deep: bool                   # more than 8 bits per sample


def read_input(path: Path) -> Loaded:
    """Decode an image (OpenCV, all bit depths), upright by its EXIF orientation; ``ImageReadError`` naming
    the file when it cannot be decoded or holds NaN/Inf (``osir.data.io.decode_raw``)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read image '{path}': {err.strerror or err}") from None
    img = decode_raw(data, str(path))
    if img.dtype == np.uint8:
        img, deep = img.astype(np.float32) / 255.0, False
    elif img.dtype == np.uint16:
        img, deep = img.astype(np.float32) / 65535.0, True
    elif img.dtype in (np.float32, np.float64):
        img, deep = np.clip(img.astype(np.float32), 0, 1), True
    else:
        raise ImageReadError(f"image '{path}' has unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels not in (1, 3, 4):
        raise ImageReadError(f"image '{path}' has {channels} channels; expected 1, 3 or 4")
    alpha = np.ascontiguousarray(img[:, :, 3]) if channels == 4 else None
    rgb = np.repeat(img, 3, axis=2) if channels == 1 else np.ascontiguousarray(img[:, :, 2::-1])   # BGR -> RGB
    return Loaded(rgb, channels == 1, alpha, deep)


def write_output(path: Path, rgb: np.ndarray, loaded: Loaded) -> str | None:
    """Write the restored float RGB as the input was stored (grey, alpha, 16-bit) where the format of
    ``path`` allows it; returns a note when something could not be kept."""
    note = None
    suffix = path.suffix.lower()
    if loaded.grey:
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        out = np.ascontiguousarray(rgb[:, :, ::-1])
        if loaded.alpha is not None:
            if suffix in ALPHA_SUFFIXES:
                h, w = out.shape[:2]
                alpha = loaded.alpha if loaded.alpha.shape == (h, w) else \
                    cv2.resize(loaded.alpha, (w, h), interpolation=cv2.INTER_LINEAR)
                out = np.dstack([out, alpha])
            else:
                note = f"note: '{path}': {suffix} has no alpha channel; the input's alpha is dropped"
    deep = loaded.deep and suffix in DEEP_SUFFIXES
    top = 65535.0 if deep else 255.0
    out = (np.clip(out, 0, 1) * top).round().astype(np.uint16 if deep else np.uint8)
    ok, encoded = cv2.imencode(path.suffix, out)
    if not ok:
        raise OSError(f"cannot encode '{path}' as {path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())
    return note


def _target_suffix(source: Path, ext: str) -> str:
    if ext == "same":
        return source.suffix
    return source.suffix if source.suffix.lower() in _FAMILY[ext] else _FAMILY[ext][0]


def plan(inputs: list[str | Path], output: str | Path, ext: str = "png", suffix: str = "") -> tuple[list[Job], list[Path]]:
    """(jobs, non-image files) for the inputs (files or folders, recursive); refuses a run that
    would overwrite an input or write two inputs to one file."""
    output = Path(output)
    out_resolved = output.resolve()
    files: list[tuple[Path, Path]] = []          # (source, path relative to the output folder)
    skipped: list[Path] = []
    single = len(inputs) == 1 and Path(inputs[0]).is_file()
    out_is_file = single and output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir()
    for item in map(Path, inputs):
        if item.is_dir():
            inside = out_resolved != item.resolve() and item.resolve() in out_resolved.parents
            for p in sorted(item.rglob("*")):
                if not p.is_file() or (inside and out_resolved in p.resolve().parents):
                    continue                     # an output folder inside the input folder is never read
                if p.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append((p, p.relative_to(item)))
                else:
                    skipped.append(p)
        elif item.is_file():
            if item.suffix.lower() in IMAGE_EXTENSIONS:
                files.append((item, Path(item.name)))
            else:
                skipped.append(item)
        else:
            raise DataError(f"input not found: '{item}'")
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(repr(str(i)) for i in inputs)}")
    sources = {src.resolve(): src for src, _ in files}
    jobs, targets = [], {}
    for src, rel in files:
        if out_is_file:
            target = output
        else:
            target = output / rel.parent / f"{rel.stem}{suffix}{_target_suffix(src, ext)}"
        key = target.resolve()
        if key in sources:
            raise DataError(f"output '{target}' would overwrite the input '{sources[key]}': choose another -o folder, "
                            "a --suffix or another --ext")
        if key in targets:
            raise DataError(f"inputs '{targets[key]}' and '{src}' would both be written to '{target}': "
                            "restore them into different folders or use --ext same")
        targets[key] = src
        jobs.append(Job(src, target, rel.with_suffix("").as_posix()))
    return jobs, skipped


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osir restore", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Restore images or folders (recursive) with a trained or released model.",
        epilog="models (--model):\n" + "\n".join(f"  {n:<20} {d}" for n, d in available_models().items()) +
               "\n\nFolders keep their sub-folders and names; non-images are skipped with a note; a corrupt image is "
               "reported and skipped (exit code 1 at the end). Grey inputs are written grey, alpha is kept (png, "
               "tif, webp), 16-bit inputs are written 16-bit (png, tif). Outputs never overwrite inputs.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder (or an image file name for a single input image)")
    parser.add_argument("--model", metavar="NAME", help="preset (see below); default: recognised from the weights")
    parser.add_argument("--weights", metavar="FILE", help="weights file (a release .pth/.pkl or osir .safetensors)")
    parser.add_argument("--options", metavar="YML", help="an osir test options file instead of --model")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override an option (repeatable), e.g. --set method.daclip_path=daclip_ViT-B-32.pt")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps, ...")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="autocast precision")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="restore images larger than PX (LQ pixels) tile by tile; 0: whole images")
    parser.add_argument("--tile-overlap", type=int, default=None, metavar="PX", help="tile overlap (default 32)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="images of one size restored together")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="sampling steps (diffusion methods)")
    parser.add_argument("--sampler", default=None, help="sde, ode or posterior (diffusion methods)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default 0)")
    parser.add_argument("--suffix", default="", help="appended to each output's file name (before the extension)")
    parser.add_argument("--ext", default="png", choices=EXTENSIONS, help="output format (default png)")
    parser.add_argument("--list-models", action="store_true", help="print the --model names and exit")
    return parser


def _flush(restorer: Restorer, group: list[tuple[Job, Loaded]], args, bar, say) -> int:
    outputs = restorer.restore_batch([loaded.rgb for _, loaded in group], steps=args.steps, sampler=args.sampler,
                                     seed=args.seed, names=[job.name for job, _ in group],
                                     paths=[str(job.source) for job, _ in group])
    for (job, loaded), out in zip(group, outputs):
        note = write_output(job.target, out, loaded)
        if note:
            say(note)
        bar.update(1)
    return len(group)


def run(args) -> int:
    from tqdm import tqdm
    if args.batch_size < 1:
        raise OptionsError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.tile is not None and args.tile < 0:
        raise OptionsError(f"--tile must be 0 (whole images) or a size in pixels, got {args.tile}")
    jobs, skipped = plan(args.inputs, args.output, args.ext, args.suffix)
    start = time.perf_counter()
    restorer = load_restorer(args.weights, args.model, device=args.device, precision=args.precision,
                             tile=args.tile, options=args.options,
                             tile_overlap=args.tile_overlap, overrides=args.set)
    restorer.check_sampling(args.steps, args.sampler)
    loaded_in = time.perf_counter() - start

    def say(text: str) -> None:
        tqdm.write(text, file=sys.stderr)

    if restorer.note:
        say(restorer.note)
    for path in skipped:
        say(f"note: skipped '{path}' (not an image: {path.suffix or 'no extension'})")
    failed = done = 0
    pending: dict[tuple[int, int], list[tuple[Job, Loaded]]] = {}
    start = time.perf_counter()
    with tqdm(total=len(jobs), unit="img", desc="osir restore", file=sys.stderr, disable=None) as bar:
        for job in jobs:
            try:
                loaded = read_input(job.source)
            except ImageReadError as err:
                say(f"error: {err}; skipped")
                failed += 1
                bar.update(1)
                continue
            group = pending.setdefault(loaded.rgb.shape[:2], [])
            group.append((job, loaded))
            if len(group) >= args.batch_size:
                done += _flush(restorer, pending.pop(loaded.rgb.shape[:2]), args, bar, say)
            elif sum(map(len, pending.values())) > 2 * args.batch_size:     # bound the images held in memory
                largest = max(pending, key=lambda k: len(pending[k]))
                done += _flush(restorer, pending.pop(largest), args, bar, say)
        for size in list(pending):
            done += _flush(restorer, pending.pop(size), args, bar, say)
    seconds = time.perf_counter() - start
    rate = done / seconds if seconds > 0 else float("inf")
    print(f"osir restore: {done} images restored, {failed} failed, {len(skipped)} skipped (not images) in "
          f"{seconds:.2f} s ({rate:.2f} images/s; model loaded in {loaded_in:.2f} s) with {restorer.name} -> "
          f"{args.output}")
    return 1 if failed else 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-models" in argv:
        for name, text in available_models().items():
            print(f"{name:<20} {text}")
        return 0
    args = build_parser().parse_args(argv)
    return cli.run("osir restore", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
