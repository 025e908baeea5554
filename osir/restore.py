"""``osir restore``: restore image files or folders with a trained or released model, without an options file.

    osir restore [--model NAME | --options YML] --weights W.pth INPUT_DIR_OR_IMAGE [...] -o OUT/

The manual (where the method comes from, folders, grey / alpha / 16-bit inputs, seeds, limits, exit codes) is
``docs/restore.md``; ``--help`` gives the same choices in short (``HELP``).  Hand-written here: the file plan
(outputs never overwrite inputs), the batch loop and ``--outscale`` (a resize after the network, as Real-ESRGAN's
``inference_realesrgan.py`` does: OpenCV's Lanczos-4, no library offers it as one call with that rounding);
images are read and written by ``osir.data.io``'s codec, models loaded by ``osir.inference.load``, and the
releases come from the method cards (``osir.core.card``).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from osir.core import cli
from osir.core.errors import DataError, ImageReadError
from osir.core.options import PRECISIONS, Options
from osir.core.registry import OptionsError, nearest
from osir.data.formats import IMAGE_EXTENSIONS

if TYPE_CHECKING:             # torch and the codec are imported where used: --help, --list-models and path
    import torch              # errors answer without loading them
    from osir.data.io import Decoded as Loaded

EXTENSIONS = ("png", "jpg", "same")
_FAMILY = {"png": (".png",), "jpg": (".jpg", ".jpeg")}


# ----------------------------------------------------------------------------- releases (the method cards')
@dataclass(frozen=True)
class Preset:
    """A ``--model`` name as this command shows it: a release of a method card (``osir.core.card``).
    ``method``: the release's method section; ``weights``: the network or option the ``--weights`` file
    goes to; ``needs``: option -> the file only the user can give; ``source`` is None: the options files
    include the release's YAML themselves (``tests/test_release_options.py`` checks which)."""
    description: str
    method: dict
    source: str | None = None
    weights: str = "g"
    needs: dict = field(default_factory=dict)


def presets() -> dict[str, Preset]:
    """``--model`` name -> ``Preset``, from every card's releases."""
    from osir.core.card import release_options, releases
    return {name: Preset(rel.description, release_options(card, rel)["method"], None, rel.weights.option,
                         {f.option: f.describe() for f in rel.needs})
            for name, (card, rel) in releases().items()}


def __getattr__(name: str):
    if name == "PRESETS":         # computed from the cards when asked for (not at import)
        return presets()
    if name == "Loaded":          # a decoded input as ``osir restore`` keeps it (``osir.data.io.Decoded``)
        from osir.data.io import Decoded
        return Decoded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def available_models() -> dict[str, str]:
    """``--model`` names -> one-line description."""
    from osir.core.card import releases
    return {name: rel.description for name, (_, rel) in releases().items()}


# the loading steps live in osir.inference.load (one loader for every command); names kept for callers
def _resolve(raw: dict, overrides: list[str] | None, needs: dict) -> dict:
    from osir.core.card import ReleaseFile
    from osir.inference.load import validated
    return validated(raw, overrides, [ReleaseFile(k, "", "", what) for k, what in needs.items()])


def _recognised_options(weights: Path, overrides: list[str] | None) -> tuple[dict, object, str]:
    from osir.inference.load import from_weights
    found = from_weights(weights, overrides)
    return found.options, found.recognized, found.note


# ----------------------------------------------------------------------------- precision and output scale
def default_precision(device: torch.device, method_type: str | None = None) -> str:
    """``--precision`` when none is given: on a CUDA device fp16 for a feed-forward or one-step method (as
    Real-ESRGAN's ``inference_realesrgan.py`` and OSEDiff's ``test_osediff.py``, whose defaults are half
    precision; spandrel's networks), fp32 for a method that samples in steps (its card's ``sampling`` is
    iterative: IR-SDE's, Refusion's and DA-CLIP's test scripts run their networks in fp32, and rounding adds up
    over the steps); fp32 elsewhere (fp16 autocast does not run on the CPU)."""
    import torch
    if torch.device(device).type != "cuda":
        return "fp32"
    from osir.core.card import card_of_method
    card = card_of_method(method_type) if method_type else None
    return "fp32" if card is not None and card.sampling_for(method_type).iterative else "fp16"


def check_outscale(outscale: float | None) -> float | None:
    """``--outscale`` checked: None (the network's own scale) or a finite number above 0."""
    if outscale is None:
        return None
    if not math.isfinite(outscale) or outscale <= 0:
        raise OptionsError(f"--outscale must be a number above 0 (the output size over the input size), "
                           f"got {outscale:g}")
    return float(outscale)


def outscale_size(height: int, width: int, outscale: float) -> tuple[int, int]:
    """The output (height, width) of an input of ``height`` x ``width`` at ``outscale``: ``int(side *
    outscale)``, truncated as Real-ESRGAN's ``RealESRGANer.enhance`` does, and at least 1."""
    return max(1, int(height * outscale)), max(1, int(width * outscale))


def resize_output(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float RGB resized to ``height`` x ``width`` with OpenCV's Lanczos-4 (``cv2.INTER_LANCZOS4``, the
    interpolation of Real-ESRGAN's ``--outscale``), clipped to [0, 1] (the Lanczos lobes overshoot)."""
    import cv2
    if rgb.shape[:2] == (height, width):
        return rgb
    out = cv2.resize(np.ascontiguousarray(rgb, dtype=np.float32), (width, height), interpolation=cv2.INTER_LANCZOS4)
    return np.clip(out.reshape(height, width, *rgb.shape[2:]), 0.0, 1.0)


# ----------------------------------------------------------------------------- the restorer
class Restorer:
    """A method built for inference on one device: ``restore(image)`` takes HxWx3 RGB (uint8, uint16
    or float in [0, 1]; HxW / HxWx1 grey is repeated, a 4th alpha channel ignored) and returns float32
    RGB in [0, 1] of ``scale`` x the size (``outscale`` x the size where given: the network's output resized,
    ``resize_output``).  Diffusion methods (``is_diffusion``) take ``steps``, ``sampler`` and ``seed`` per
    call (None: the preset's / options' steps and sampler, seed 0), and every method ``tile`` (None: the
    restorer's, 0: whole images), handed to the method's ``restore``: the method is never changed, so one
    ``Restorer`` serves several threads."""

    def __init__(self, method, opt: Options, name: str, device: torch.device, precision: str, tile: int | None,
                 overlap: int):
        from osir.core.card import FEED_FORWARD, Tiling, card_of_method
        self.model, self.opt, self.name = method, opt, name
        self.method = opt.method["type"]
        card = card_of_method(self.method)
        self.sampling = card.sampling_for(self.method) if card is not None else FEED_FORWARD
        #: how the inference layer may tile it: a method that tiles itself: internal; else the method's own
        #: ``tiling`` where it declares one per instance (a network loaded by a generic loader), else its card's
        declared = method.tiling_advice
        self.tiling = "internal" if method.tiles_internally else (
            Tiling(declared).value if declared is not None else card.tiling.value if card is not None else "supported")
        self.is_diffusion = self.sampling.iterative
        self.scale = int(method.scale)
        self.device, self.precision = device, precision
        self.tile, self.overlap = tile, overlap
        self.steps = method.sample_steps if self.is_diffusion else None
        self.sampler = opt.method.get("sampler") if self.is_diffusion else None
        self.note = ""          # what was recognised in the weights
        #: network -> the file its weights came from (named when an output is not finite)
        self.sources = {**method.pretrained, **opt.path.pretrained}

    def __repr__(self) -> str:
        return (f"Restorer({self.name!r}, method={self.method}, scale={self.scale}, device={self.device}, "
                f"precision={self.precision}, tile={self.tile})")

    @staticmethod
    def to_tensor(image: np.ndarray) -> torch.Tensor:
        """HxWx3 (or grey / RGBA) uint8, uint16 or float array -> 3xHxW float32 in [0, 1]."""
        import torch
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
        from osir.core.registry import SAMPLERS
        if not self.is_diffusion and (steps is not None or sampler is not None):
            from osir.core.card import cards
            flag = "--steps" if steps is not None else "--sampler"
            iterative = [c.title or c.name for c in cards() if any(c.sampling_for(m).iterative for m in c.methods)]
            raise OptionsError(f"{flag}: {self.name} ({self.method}) is a feed-forward method; steps and samplers "
                               f"apply to the diffusion methods ({', '.join(iterative)})")
        if steps is not None and not 1 <= steps <= self.model.max_steps:
            raise OptionsError(f"--steps: {self.name} samples 1 to T={self.model.max_steps} steps, got {steps}")
        if sampler is not None and self.sampling.samplers is not None:      # the card names the method's own
            if sampler not in self.sampling.samplers:
                raise OptionsError(f"--sampler: unknown sampler '{sampler}' for {self.method}"
                                   f"{nearest(sampler, self.sampling.samplers)}; allowed: "
                                   f"{', '.join(self.sampling.samplers)}")
        elif sampler is not None:
            SAMPLERS.get(sampler, "--sampler")

    def restore_tensor(self, lq: torch.Tensor, *, steps: int | None = None, sampler: str | None = None,
                       seed: int | None = None, names: list[str] | None = None,
                       paths: list[str] | None = None, tile: int | None = None) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] -> B x 3 x sH x sW float32 in [0, 1], on the restorer's device.  ``names`` /
        ``paths`` (default image0, image1, ...) reach the method as a dataset's ``name`` / ``lq_path`` do (prompt
        extractors read them, e.g. ``TextFilePrompt``); ``tile``: LQ pixels per tile (None: the restorer's,
        0: the whole image)."""
        import torch
        from osir.inference import check_finite_output, restore_image
        self.check_sampling(steps, sampler)
        if tile is not None and tile < 0:
            raise OptionsError(f"tile must be 0 (whole images) or a size in pixels, got {tile}")
        tile = self.tile if tile is None else (tile or None)
        generator = torch.Generator(device=self.device).manual_seed(0 if seed is None else int(seed))
        shown = list(paths or names or ["the image"] * lq.shape[0])        # named if an output is not finite
        with torch.no_grad():
            names = list(names or [f"image{i}" for i in range(lq.shape[0])])
            batch = {"lq": lq.to(self.device), "name": names, "lq_path": list(paths or names)}
            out = restore_image(self.model, batch, tile, self.overlap, generator, sampler=sampler, steps=steps)
        check_finite_output(self.model, out, shown, self.sources)
        return out.float().clamp(0, 1)

    def restore_batch(self, images: list[np.ndarray], *, steps: int | None = None, sampler: str | None = None,
                      seed: int | None = None, names: list[str] | None = None,
                      paths: list[str] | None = None, tile: int | None = None,
                      outscale: float | None = None) -> list[np.ndarray]:
        """Images of one size restored together (one generator for the batch); ``outscale`` (None: the
        network's scale) resizes each output to ``outscale_size`` of its input (``resize_output``)."""
        import torch
        outscale = check_outscale(outscale)
        batch = torch.stack([self.to_tensor(im) for im in images])
        out = self.restore_tensor(batch, steps=steps, sampler=sampler, seed=seed, names=names, paths=paths, tile=tile)
        outputs = [np.ascontiguousarray(o.permute(1, 2, 0).cpu().numpy()) for o in out]
        if outscale is None or outscale == self.scale:      # the network's own scale: nothing to resize
            return outputs
        import cv2
        height, width = outscale_size(*batch.shape[-2:], outscale)
        shown = list(paths or names or ["the image"] * len(outputs))
        resized = []
        for rgb, name in zip(outputs, shown):
            try:
                resized.append(resize_output(rgb, height, width))
            except (MemoryError, cv2.error) as err:             # an output too large to allocate
                raise OptionsError(f"--outscale {outscale:g}: cannot resize '{name}' to {width}x{height} pixels "
                                   f"({cli.one_line(err)[:120]})") from None
        return resized

    def restore(self, image: np.ndarray, *, steps: int | None = None, sampler: str | None = None,
                seed: int | None = None, tile: int | None = None, outscale: float | None = None) -> np.ndarray:
        return self.restore_batch([image], steps=steps, sampler=sampler, seed=seed, tile=tile, outscale=outscale)[0]


def load_restorer(weights: str | Path | None, model: str | None = None, *, device: str = "cpu",
                  precision: str | None = None, tile: int | None = None, options: str | Path | None = None,
                  tile_overlap: int | None = None, overrides: list[str] | None = None) -> Restorer:
    """Build a ``Restorer`` from a weights file and a preset name (``available_models()``), or from
    the weights alone (recognised by ``osir.recognize``), or from an osir options file (``options``;
    ``weights`` then replaces its ``path.pretrained.g``).  ``overrides``: ``key.path=value`` strings as
    ``--set``; ``tile``: tile size in LQ pixels (None: the preset's / options file's tiling, 0: whole
    images); ``precision``: fp32, bf16 or fp16 (None: ``default_precision`` of the device).  ``Restorer.note``
    says what was recognised in the weights, and where the method does not run the precision asked for.  Steps and samplers are per-call arguments
    of the method's ``restore`` (never written into it): a ``Restorer`` may be shared by threads."""
    check_files_first(weights, model, options, overrides)
    from osir.inference import load
    dev = load.pick_device(device)
    if precision is not None:
        load.check_precision(precision, dev)
    if options is not None:
        if model is not None:
            raise OptionsError("--model and --options: give one of them (the options file names its method)")
        found = load.from_options(options, weights, overrides)
    elif weights is None:
        raise OptionsError("--weights: give the weights file to restore with (or an --options file naming it)")
    elif model is not None:
        found = load.from_release(model, weights, overrides)
    else:
        found = load.from_weights(weights, overrides)
    opt, name = found.options, found.name
    precision = default_precision(dev, opt.method["type"]) if precision is None else precision
    if tile is None:
        tile = opt.tile.size
    overlap = tile_overlap if tile_overlap is not None else opt.tile.overlap
    method = load.load(found, dev, precision)
    restorer = Restorer(method, opt, name, dev, precision, tile or None, int(overlap))
    # a method may say where it does not run as asked (e.g. a network without fp16 support, run in fp32)
    restorer.note = "\n".join([found.note] * bool(found.note) + list(method.inference_notes))
    return restorer


def check_files_first(weights: str | Path | None, model: str | None, options: str | Path | None,
                      overrides: list[str] | None = None) -> None:
    """The errors a user meets first, before torch is imported (well under 2 s): an unknown ``--model``; no
    ``--weights`` (naming the file the release publishes and its page); a weights or options file that is not
    there; the files an options file names (``check_files_early``; not when ``--weights`` replaces one)."""
    from osir.core.card import releases
    release = None
    if model is not None and options is None:
        known = releases()
        if model not in known:
            raise OptionsError(f"--model: unknown model '{model}'{nearest(model, known)}; allowed: {', '.join(known)}")
        release = known[model][1]
        if weights is None:
            raise OptionsError(f"--weights: give the weights file of '{model}': {release.weights.describe()}")
    if options is not None and not Path(options).is_file():
        raise OptionsError(f"--options: file not found: '{options}'")
    if options is not None and weights is None:
        from osir.core.options import check_files_early, read_options
        check_files_early(read_options(options, overrides), datasets=False)
    if weights is not None and not Path(weights).exists():
        expected = f" ('{model}' restores with {release.weights.describe()})" if release else ""
        raise FileNotFoundError(f"weights file not found: '{weights}'{expected}")


def check_paths(inputs, weights, model, options, overrides=None) -> None:
    """Every path error of the command line in one message: ``check_files_first``'s (weights, options and the
    files the options name) and the inputs that are not there."""
    gone = [f"input not found: '{item}'" for item in inputs if not Path(item).exists()]
    try:
        check_files_first(weights, model, options, overrides)
    except (OptionsError, FileNotFoundError) as err:
        if not gone:
            raise
        raise type(err)("; ".join([str(err).rstrip("."), *gone])) from None
    if gone:
        raise DataError("; ".join(gone))


# ----------------------------------------------------------------------------- files
@dataclass
class Job:
    source: Path
    target: Path
    name: str           # the path relative to its input folder, without the extension (a dataset's ``name``)


def read_input(path: Path, max_pixels: int | None = None) -> Loaded:
    """Decode an image (``osir.data.io.read_decoded``: OpenCV, all bit depths, upright by its EXIF orientation),
    a floating-point file's samples clipped to [0, 1]; ``ImageReadError`` naming the file when it is empty,
    cannot be decoded, holds NaN/Inf or has more than ``max_pixels`` pixels (read from its header before
    decoding; default ``osir.data.io.max_image_pixels()``)."""
    from osir.data.io import read_decoded
    return read_decoded(path, max_pixels).clipped()


def write_output(path: Path, rgb: np.ndarray, loaded: Loaded) -> str | None:
    """Write the restored float RGB as the input was stored (grey, alpha, 16-bit) where the format of
    ``path`` allows it, atomically (``osir.data.io.write_rgb``: a failed write leaves nothing under ``path``
    and is an ``ImageWriteError`` naming it); returns a note when something could not be kept."""
    from osir.data.io import write_rgb
    return write_rgb(path, rgb, loaded)


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
#: the choices a user needs, after the --model list in ``--help`` (the manual: docs/restore.md)
HELP = """\
where the method comes from:
  --model NAME    a release: the settings the weights cannot tell (SDE, sampler, steps); the network's
                  hyper-parameters are read from the weights (the release network's when not recognised)
  no --model      the method recognised from the weights' keys and shapes (osir recognize W.pth)
  --options YML   an osir test options file (--weights replaces its path.pretrained.g)
  --set K=V       any option, e.g. the files only you can give: method.daclip_path, method.sd_path

inputs and outputs:
  folders are read recursively; outputs keep sub-folders and names (--ext png|jpg|same, --suffix);
  non-images are skipped with a note; inputs are read upright by their EXIF orientation;
  grey inputs are written grey (BT.601 luma); alpha is kept and resized (png, tif, webp; else dropped
  with a note); 16-bit and floating-point inputs are written 16-bit (png, tif);
  an output never overwrites an input, and two inputs never share an output (refused before any work);
  outputs are written atomically (a temporary file renamed into place)

sampling: --steps / --sampler apply to diffusion methods only; --seed (default 0) seeds each batch, so an
  image restored alone or in a folder matches at --batch-size 1

precision: by default fp16 on CUDA for feed-forward and one-step methods (as their releases' scripts), fp32
  for methods that sample in steps (their releases' precision) and off CUDA;
  --precision fp16 is refused on the CPU; a network that does not support the precision asked for runs in
  fp32 (with a note)

output scale: --outscale X resizes each output to int(X * input size) with OpenCV's Lanczos-4 after the
  network (as Real-ESRGAN's --outscale); default: the network's own scale

exit codes: 0 every image restored; 1 some inputs skipped as unreadable (corrupt, empty, NaN/Inf, over
  --max-megapixels; each named); 2 user errors, a NaN/Inf output (named with its network), a failed write

manual: docs/restore.md"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osir restore", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Restore images or folders (recursive) with a trained or released model.",
        epilog="models (--model):\n" + "\n".join(f"  {n:<20} {d}" for n, d in available_models().items()) +
               "\n\n" + HELP)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder (or an image file name for a single input image)")
    parser.add_argument("--model", metavar="NAME", help="preset (see below); default: recognised from the weights")
    parser.add_argument("--weights", metavar="FILE", help="weights file (a release .pth/.pkl or osir .safetensors)")
    parser.add_argument("--options", metavar="YML", help="an osir test options file instead of --model")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override an option (repeatable), e.g. --set method.daclip_path=daclip_ViT-B-32.pt")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps, ...")
    parser.add_argument("--precision", default=None, choices=list(PRECISIONS),
                        help="autocast precision (default: fp16 on CUDA for feed-forward and one-step methods, "
                        "fp32 for step samplers and off CUDA)")
    parser.add_argument("--outscale", type=float, default=None, metavar="X",
                        help="output size = int(X * input size), the network's output resized with Lanczos-4 "
                             "(default: the network's own scale)")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="restore images larger than PX (LQ pixels) tile by tile; 0: whole images")
    parser.add_argument("--tile-overlap", type=int, default=None, metavar="PX", help="tile overlap (default 32)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="images of one size restored together")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="sampling steps (diffusion methods)")
    parser.add_argument("--sampler", default=None, help="a registered sampler of the diffusion methods: posterior, sde, ode, or diffusers' "
                        "ddim, dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, unipc, deis, heun (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default 0)")
    parser.add_argument("--suffix", default="", help="appended to each output's file name (before the extension)")
    parser.add_argument("--ext", default="png", choices=EXTENSIONS, help="output format (default png)")
    parser.add_argument("--max-megapixels", type=float, default=None, metavar="MP",
                        help="refuse inputs of more than MP megapixels, read from the file's header before decoding "
                             "(decompression bombs; default: $OSIR_MAX_IMAGE_PIXELS or 178.96, PIL's own refusal "
                             "point); larger images up to the limit restore tile by tile with --tile")
    parser.add_argument("--list-models", action="store_true", help="print the --model names and exit")
    own = set(parser._option_string_actions)
    for card, flag in card_flags():
        if flag.flag in own:
            raise OptionsError(f"the {card.title} card's shortcut {flag.flag} is already an option of osir restore")
        parser.add_argument(flag.flag, default=None, metavar="VALUE",
                            help=f"{card.title}: {flag.help}".replace("%", "%%"))
    return parser


def card_flags() -> list:
    """(card, ``OptionFlag``) of every method card (light: the cards import no torch); a flag two cards declare
    is an error naming both."""
    from osir.core.card import cards
    found, owner = [], {}
    for card in cards():
        for flag in card.flags:
            if flag.flag in owner:
                raise OptionsError(f"the shortcut {flag.flag} is declared by the {owner[flag.flag]} and the "
                                   f"{card.title} cards")
            owner[flag.flag] = card.title
            found.append((card, flag))
    return found


def apply_card_flags(args) -> None:
    """Turn the cards' shortcuts given on the command line into ``--weights`` / ``--set`` (``OptionFlag``)."""
    for _, flag in card_flags():
        given = getattr(args, flag.flag.lstrip("-").replace("-", "_"), None)
        if given is None:
            continue
        if flag.option == "weights":
            if args.weights is not None and args.weights != given:
                raise OptionsError(f"{flag.flag} and --weights: give one weights file")
            args.weights = given
        else:
            if any(item.split("=", 1)[0].strip() == flag.option for item in args.set):
                raise OptionsError(f"{flag.flag} and --set {flag.option}=...: give one of them")
            args.set.append(f"{flag.option}={flag.value(given)}")


def _flush(restorer: Restorer, group: list[tuple[Job, Loaded]], args, bar, say) -> int:
    outputs = restorer.restore_batch([loaded.rgb for _, loaded in group], steps=args.steps, sampler=args.sampler,
                                     seed=args.seed, names=[job.name for job, _ in group],
                                     paths=[str(job.source) for job, _ in group], outscale=args.outscale)
    for (job, loaded), out in zip(group, outputs):
        note = write_output(job.target, out, loaded)
        if note:
            say(note)
        bar.update(1)
    return len(group)


def max_pixels_option(megapixels: float | None) -> int | None:
    """``--max-megapixels`` (osir restore, osir web) in pixels; None: None, the codec's limit in force
    (``osir.data.io.max_image_pixels()``), whose ``OSIR_MAX_IMAGE_PIXELS`` is checked here, before any work
    and without importing the codec."""
    from osir.data.formats import DEFAULT_MAX_IMAGE_PIXELS, environment_max_pixels
    if megapixels is None:
        environment_max_pixels()          # a bad value: a DataError naming the variable
        return None
    if megapixels == np.inf:
        raise OptionsError("--max-megapixels inf is not a limit: give a large number of megapixels instead "
                           f"(the default is {DEFAULT_MAX_IMAGE_PIXELS / 1e6:g})")
    if np.isnan(megapixels) or megapixels <= 0:
        raise OptionsError(f"--max-megapixels must be a number of megapixels above 0, got {megapixels:g}")
    if megapixels * 1e6 < 1:
        raise OptionsError(f"--max-megapixels {megapixels:g} is {megapixels * 1e6:.3g} pixels, less than one pixel: "
                           "give at least 1e-06 (one pixel)")
    return int(megapixels * 1e6)


def run(args) -> int:
    from osir.core.progress import Progress, format_rate
    if args.batch_size < 1:
        raise OptionsError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.tile is not None and args.tile < 0:
        raise OptionsError(f"--tile must be 0 (whole images) or a size in pixels, got {args.tile}")
    check_outscale(args.outscale)
    check_paths(args.inputs, args.weights, args.model, args.options, args.set)   # before any heavy import
    jobs, skipped = plan(args.inputs, args.output, args.ext, args.suffix)
    max_pixels = max_pixels_option(args.max_megapixels)
    start = time.perf_counter()
    restorer = load_restorer(args.weights, args.model, device=args.device, precision=args.precision,
                             tile=args.tile, options=args.options,
                             tile_overlap=args.tile_overlap, overrides=args.set)
    restorer.check_sampling(args.steps, args.sampler)
    loaded_in = time.perf_counter() - start

    bar = Progress(len(jobs), "osir restore", "image")     # a bar on a terminal, else a line every few images

    def say(text: str) -> None:
        bar.write(text)

    if restorer.note:
        for line in restorer.note.splitlines():
            say(line)
    if args.tile and restorer.tiling != "supported":        # the method's / card's Tiling: discouraged / internal
        say(f"note: --tile {args.tile}: {restorer.name} " + (
            "tiles itself (latent / VAE tiles): its own tiling applies" if restorer.tiling == "internal" else
            "uses context beyond a tile (whole-image embeddings, global noise, attention): tiles may differ from "
            "the whole image at their seams"))
    for path in skipped:
        say(f"note: skipped '{path}' (not an image: {path.suffix or 'no extension'})")
    failed = done = 0
    pending: dict[tuple[int, int], list[tuple[Job, Loaded]]] = {}
    start = time.perf_counter()
    with bar:
        for job in jobs:
            try:
                loaded = read_input(job.source, max_pixels)
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
    print(f"osir restore: {done} images restored, {failed} failed, {len(skipped)} skipped (not images) in "
          f"{seconds:.2f} s ({format_rate(done, seconds)}; model loaded in {loaded_in:.2f} s) with {restorer.name} -> "
          f"{args.output}")
    return 1 if failed else 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-models" in argv:
        from osir.core.card import releases
        for name, (_, release) in releases().items():
            print(f"{name:<20} {release.description}")
            if release.few_steps is not None:
                print(f"{'':<20}   few steps: {release.few_steps.flags()} ({release.few_steps.measured})")
        return 0
    args = build_parser().parse_args(argv)

    def body() -> int:
        apply_card_flags(args)
        return run(args)
    return cli.run("osir restore", body)


if __name__ == "__main__":
    sys.exit(main())
