"""``osir web``: a local Gradio page to restore one image with any osir model.

    osir web --model realesrgan-x4 --weights RealESRGAN_x4plus.pth [--weights-dir DIR] [--port 7860]

The page (upload or example photos, method and weights chooser, tile and precision controls, before/after
slider, PNG download; offline) and what it does with an upload are described in ``docs/web.md``.  The example
photos are crops of scikit-image's bundled ones (``skimage.data``, no download), written as PNG files once
per page (``example_images``).  The upload reaches osir undecoded (``preprocess=False``) and
is decoded by ``osir.data.io.decode_image``, the codec of every osir reader, so a bad file is a message naming
it; the result is written as an 8-bit RGB PNG (``to_uint8``, osir's one quantiser).
"""
from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"   # before gradio is imported: no telemetry, no version check

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import numpy as np

from osir.core.cli import USER_ERRORS, one_line, run
from osir.data.io import decode_image, max_image_pixels, to_uint8, write_array
from osir.core.checkpoint import WEIGHT_SUFFIXES
from osir.core.registry import SAMPLERS, OptionsError, missing_package
from osir.core.options import PRECISIONS
from osir.restore import Restorer, available_models, load_restorer, max_pixels_option

#: the example photos: ``skimage.data`` function -> (rows, columns) of a 128 x 128 crop
EXAMPLES = {"astronaut": (slice(30, 158), slice(180, 308)), "coffee": (slice(60, 188), slice(160, 288)),
            "chelsea": (slice(40, 168), slice(130, 258)), "rocket": (slice(150, 278), slice(280, 408))}

TITLE = "osir — image restoration"
AUTO = "auto"   # the method chooser's value for "recognised from the weights' keys"


def weight_files(weights: Sequence[str | Path] = (), weights_dir: str | Path | None = None) -> list[Path]:
    """The weights the chooser offers: the given files, then the weight files under ``weights_dir``
    (recursively, sorted), each once."""
    files = [Path(w) for w in weights]
    gone = [f"--weights '{path}': no such file" for path in files if not path.exists()]
    if weights_dir is not None and not Path(weights_dir).is_dir():
        gone.append(f"--weights-dir '{weights_dir}': not a folder")
    if gone:                                        # every missing path in one message
        raise OptionsError("; ".join(gone))
    if weights_dir is not None:
        folder = Path(weights_dir)
        files += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        where = f"in --weights-dir '{weights_dir}'" if weights_dir is not None else "given"
        raise OptionsError(f"no weights {where} (weight files end in {', '.join(WEIGHT_SUFFIXES)})")
    return unique


def example_images(folder: str | Path) -> list[Path]:
    """The example photos (``EXAMPLES``: crops of scikit-image's bundled photos) as PNG files in ``folder``."""
    import skimage.data
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (rows, columns) in EXAMPLES.items():
        path = folder / f"{name}.png"
        if not path.exists():
            write_array(path, np.ascontiguousarray(getattr(skimage.data, name)()[rows, columns][:, :, ::-1]))
        paths.append(path)
    return paths


def tile_option(tile) -> int | None:
    """The page's tile field: 0 -> whole images, else LQ pixels per tile; None (an API call that leaves it out)
    -> the model's own tiling; a ``gr.Error`` for a negative or fractional value."""
    if tile is None or tile == "":
        return None
    try:
        value = float(tile)
    except (TypeError, ValueError):
        value = -1.0
    if not value >= 0 or value != int(value):
        raise gr.Error(f"tile must be 0 (whole images) or a size in pixels, got {tile}", print_exception=False)
    return int(value)


def uploaded(image) -> tuple[bytes, str]:
    """(the bytes, the name to show) of an upload: gradio's file record (the uploaded file's own name) or a
    path (shown as given); a ``gr.Error`` when there is none or it cannot be read."""
    path, name = None, ""
    if isinstance(image, (str, Path)):
        path, name = (Path(image), str(image)) if image else (None, "")
    elif image is not None:             # gradio's record: a pydantic model (FileData), or its dict
        get = image.get if isinstance(image, dict) else (lambda key: getattr(image, key, None))
        path = Path(get("path")) if get("path") else None
        name = get("orig_name") or (path.name if path else "")
    if path is None:
        raise gr.Error("upload an image first", print_exception=False)
    try:
        return path.read_bytes(), name
    except OSError as err:
        raise gr.Error(f"cannot read the uploaded file '{name}': {err.strerror or err}", print_exception=False) \
            from None


class Demo:
    """The page's state: the weights on offer and a cache of loaded restorers, keyed by (weights,
    method, precision), so that switching back and forth loads each model once.  ``precision`` None: the
    method's default (``osir.restore.default_precision``: fp16 on CUDA for feed-forward and one-step methods,
    else fp32)."""

    def __init__(self, weights: Sequence[Path], *, device: str = "cpu", precision: str | None = None,
                 tile: int | None = None, max_pixels: int | None = None):
        self.weights = list(weights)
        self.device, self.precision, self.tile = device, precision, tile
        self.max_pixels = max_image_pixels() if max_pixels is None else int(max_pixels)   # uploads above: refused
        self._cache: dict[tuple[str, str | None], Restorer] = {}
        self._lock = threading.Lock()
        self.output_dir = Path(tempfile.mkdtemp(prefix="osir-web-"))

    def load(self, method: str | None, weights: str | Path, precision: str | None = None) -> Restorer:
        """The cached restorer for (method, weights, precision), loaded on first use; ``method`` None or
        ``auto``: recognised from the weights' keys; ``precision`` None: the page's."""
        model = None if method in (None, "", AUTO) else method
        precision = precision or self.precision
        key = (str(Path(weights).resolve()), model, precision)
        with self._lock:
            if key not in self._cache:
                restorer = load_restorer(weights, model, device=self.device, precision=precision, tile=self.tile)
                self._cache[key] = restorer
                # the default precision resolved (fp16 on CUDA, else fp32): the same restorer when it is then named
                self._cache.setdefault(key[:2] + (restorer.precision,), restorer)
            return self._cache[key]

    def restorer(self, method: str | None, weights: str | Path | None, precision: str | None = None) -> Restorer:
        """``load`` for the page: a user error, or an optional package the chosen weights or method need
        and that is not installed (``osir.core.registry.missing_package``: the pip command), becomes a
        ``gr.Error`` (a message in the page)."""
        if not weights:
            raise gr.Error("choose the weights first", print_exception=False)
        try:
            return self.load(method, weights, precision)
        except ModuleNotFoundError as err:
            line = missing_package(err)
            if line is None:            # one of osir's own modules: a bug, with its traceback
                raise
            raise gr.Error(f"cannot load '{Path(weights).name}' as {method or AUTO}: {line}",
                           print_exception=False) from None
        except USER_ERRORS as err:
            raise gr.Error(f"cannot load '{Path(weights).name}' as {method or AUTO}: {one_line(err)}",
                           print_exception=False) from None

    def describe(self, restorer: Restorer, weights: str | Path) -> str:
        kind = f"diffusion, {restorer.steps} {restorer.sampler} steps" if restorer.is_diffusion else "feed-forward"
        return (f"**Loaded:** `{restorer.name}` ({restorer.method}, {kind}, ×{restorer.scale}) "
                f"from `{Path(weights).name}` on {self.device}")

    def choose(self, method: str, weights: str, precision: str | None = None):
        """Chooser change: load the model and say which; steps, sampler and seed only for diffusion
        methods, set to the model's defaults."""
        restorer = self.restorer(method, weights, precision)
        diffusion = restorer.is_diffusion
        return (self.describe(restorer, weights), gr.update(visible=diffusion, value=restorer.steps),
                gr.update(visible=diffusion, value=restorer.sampler), gr.update(visible=diffusion))

    def own_tile(self, method: str, weights: str, precision: str | None = None):
        """Chooser change: the tile field set to the model's own tiling (its release's tile size, or 0: whole
        images); unchanged where the model does not load (``choose`` shows why)."""
        try:
            return gr.update(value=self.restorer(method, weights, precision).tile or 0)
        except gr.Error:
            return gr.update()

    def restore(self, image, method: str, weights: str, steps: float | None = None,
                sampler: str | None = None, seed: float | None = None, tile: float | None = None,
                precision: str | None = None):
        """Restore the uploaded file (gradio's file record, or a path): ((before, after) for the slider, the
        result's PNG path, a status line).  ``before`` is the input enlarged to the result's size (nearest
        neighbour).  ``tile`` (``tile_option``) and ``precision`` (None: the page's) apply to this call.  A file
        that is empty, not an image, over ``max_pixels`` or holds NaN/Inf is a ``gr.Error`` naming it and
        saying which."""
        data, name = uploaded(image)
        tile = tile_option(tile)
        restorer = self.restorer(method, weights, precision)
        kwargs = {"tile": tile}
        if restorer.is_diffusion:
            kwargs |= {"steps": None if steps is None else int(steps),
                       "sampler": None if sampler in (None, "", restorer.sampler) else sampler,
                       "seed": None if seed is None else int(seed)}
        try:
            image = decode_image(data, name, self.max_pixels)
            start = time.perf_counter()
            result = to_uint8(restorer.restore(image, **kwargs))
            seconds = time.perf_counter() - start
            png = Path(tempfile.mkdtemp(dir=self.output_dir)) / f"{Path(name).stem}_{restorer.name}.png"
            write_array(png, result[:, :, ::-1])
        except USER_ERRORS as err:
            raise gr.Error(one_line(err), print_exception=False) from None
        (h, w), (oh, ow) = image.shape[:2], result.shape[:2]
        before = np.repeat(np.repeat(to_uint8(image), oh // h, axis=0), ow // w, axis=1)
        tiles = restorer.tile if tile is None else (tile or None)
        status = (f"{self.describe(restorer, weights)}  \n{w}×{h} → {ow}×{oh} in {seconds:.2f} s "
                  f"({restorer.precision}, {f'tiles of {tiles} px' if tiles else 'whole image'})")
        return (before, result), str(png), status


def build_app(weights: Sequence[str | Path] | str | Path = (), model: str | None = None, *,
              weights_dir: str | Path | None = None, device: str = "cpu", precision: str | None = None,
              tile: int | None = None, max_pixels: int | None = None) -> gr.Blocks:
    """The page, with the first weights loaded (as ``model``; default: recognised from the keys), so
    that a bad file or model name fails here, as the usual one-line user error, not in the browser."""
    if isinstance(weights, (str, Path)):
        weights = [weights]
    demo = Demo(weight_files(weights, weights_dir), device=device, precision=precision, tile=tile,
                max_pixels=max_pixels)
    first = str(demo.weights[0])
    restorer = demo.load(model, first)
    diffusion = restorer.is_diffusion

    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}\nUpload an image (or pick an example photo), choose the method and its weights, "
                    "press **Restore**; drag the slider to compare before and after, download the result as PNG "
                    "below it.")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Input image", type="filepath", image_mode=None, sources=["upload"],
                                      elem_id="input-image")
                method = gr.Dropdown(
                    [(f"{AUTO} (recognised from the weights' keys)", AUTO)]
                    + [(f"{name}: {text}", name) for name, text in available_models().items()],
                    value=model or AUTO, label="Method", elem_id="method")
                weights_choice = gr.Dropdown([(p.name, str(p)) for p in demo.weights], value=first,
                                             label="Weights", elem_id="weights")
                with gr.Row():
                    steps = gr.Number(restorer.steps, label="Steps", precision=0, minimum=1, visible=diffusion,
                                      elem_id="steps")
                    sampler = gr.Dropdown(SAMPLERS.names(), value=restorer.sampler, label="Sampler",
                                          visible=diffusion, elem_id="sampler")
                    seed = gr.Number(0, label="Seed", precision=0, visible=diffusion, elem_id="seed")
                with gr.Row():
                    tile_field = gr.Number(restorer.tile or 0, label="Tile (LQ pixels; 0: whole image)",
                                           precision=0, minimum=0, elem_id="tile")
                    precision_choice = gr.Dropdown(list(PRECISIONS), value=restorer.precision, label="Precision",
                                                   elem_id="precision")
                button = gr.Button("Restore", variant="primary", elem_id="restore-btn")
                gr.Examples([[str(p)] for p in example_images(demo.output_dir / "examples")], [image],
                            label="Example photos (scikit-image)", elem_id="examples")
            with gr.Column(scale=2):
                status = gr.Markdown(demo.describe(restorer, first), elem_id="status")
                slider = gr.ImageSlider(label="Before / after", type="numpy", format="png", interactive=False,
                                        elem_id="slider")
                download = gr.File(label="Result (PNG)", interactive=False, elem_id="result-file")
        for chooser in (method, weights_choice, precision_choice):
            chooser.change(demo.choose, [method, weights_choice, precision_choice], [status, steps, sampler, seed],
                           api_name=False)
            chooser.change(demo.own_tile, [method, weights_choice, precision_choice], [tile_field],
                           api_name=False)
        # preprocess=False: the upload reaches osir as gradio's file record, undecoded (gr.Image's own
        # preprocessing opens it with PIL and any failure reads "Could not preprocess input component")
        button.click(demo.restore, [image, method, weights_choice, steps, sampler, seed, tile_field,
                                     precision_choice],
                     [slider, download, status], api_name="restore", preprocess=False)
    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="osir web", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--model", help="model of the --weights (default: recognised from their keys); "
                                        "`osir restore --list-models` lists them")
    parser.add_argument("--weights", nargs="+", default=[], action="extend", metavar="W",
                        help="weights file(s) offered in the page; the first is loaded at start")
    parser.add_argument("--weights-dir", help="also offer every weights file under this folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--precision", default=None, choices=list(PRECISIONS),
                        help="the page's initial precision (default: fp16 on CUDA, fp32 elsewhere)")
    parser.add_argument("--tile", type=int, help="tile size for large images (default: the method's own)")
    parser.add_argument("--max-megapixels", type=float, metavar="MP",
                        help="refuse uploads of more than MP megapixels, read from the header before decoding "
                             "(default: $OSIR_MAX_IMAGE_PIXELS or 178.96, PIL's own refusal point)")
    args = parser.parse_args(argv)
    if not args.weights and not args.weights_dir:
        if args.model is not None:              # name the file the release publishes, as osir restore does
            from osir.restore import check_files_first
            return run("osir web", lambda: check_files_first(None, args.model, None) or 2)
        parser.error("give --weights and/or --weights-dir")

    def body() -> int:
        app = build_app(args.weights, args.model, weights_dir=args.weights_dir, device=args.device,
                        precision=args.precision, tile=args.tile, max_pixels=max_pixels_option(args.max_megapixels))
        app.queue().launch(server_name=args.host, server_port=args.port, share=False, show_error=True,
                           inbrowser=False)
        return 0

    return run("osir web", body)


if __name__ == "__main__":
    sys.exit(main())
