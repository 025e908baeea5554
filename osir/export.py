"""ONNX export of osir's feed-forward networks, checked against PyTorch with onnxruntime, optional int8.

    osir export onnx --weights W.pth [--model NAME] -o model.onnx [--int8] [--opset N] [--check-size 64]

What is exported comes from the method cards (``exports``, ``not_exportable``, ``export_names``; this module
names no method).  The manual (dynamic shapes, the onnxruntime check, int8 and its measured speed-up, model
cards) is ``docs/export.md``; ``--help`` lists the choices.  Exporting and quantising are torch's and
onnxruntime's; hand-written here: the check sizes, the comparison with PyTorch, the calibration images.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn

from osir.core import cli
from osir.core.checkpoint import CheckpointError, atomic_write, write_failure
from osir.inference.onnx_graphs import GraphSpec, round_up
from osir.core.registry import OptionsError

__all__ = ["MODELS", "ExportCheckError", "GraphSpec", "graphs_for", "export_onnx", "quantize_int8", "network_from_weights", "main"]

#: scikit-image photos used for int8 calibration by default (the SR demo's training photos, none held out)
CALIBRATION_PHOTOS = ("chelsea", "rocket", "immunohistochemistry", "camera", "brick", "grass")
#: onnxruntime's graphs are fp32: differences above this between onnxruntime and PyTorch mean a wrong graph
DEFAULT_TOLERANCE = 1e-3


class ExportCheckError(CheckpointError):
    """The exported graph does not reproduce PyTorch within the tolerance (or does not run)."""


class ModelEntry(NamedTuple):
    """What a ``--model`` name gives: the method, the architecture and the release's hyper-parameters."""
    method: str
    arch: str
    hyper_parameters: dict


# ----------------------------------------------------------------------------- what the cards export
def _cards():
    """The cards, feed-forward methods first (their whole model is the exported graph), then by name."""
    from osir.core.card import cards
    return sorted(cards(), key=lambda card: card.sampling.iterative)


def _exports() -> dict[str, tuple[str, str]]:
    """Architecture -> (card name, ``module:function`` of its graphs), over every card."""
    out: dict[str, tuple[str, str]] = {}
    for card in _cards():
        for arch, reference in card.exports.items():
            if arch in out:
                raise KeyError(f"architecture '{arch}' is exported by the cards '{out[arch][0]}' and '{card.name}'")
            out[arch] = (card.name, reference)
    return out


def _not_exportable(*names: Optional[str]) -> Optional[str]:
    """Why the first of ``names`` (methods or architectures) that a card declares not exportable is not, or None."""
    for name in names:
        for card in _cards():
            if name and name in card.not_exportable:
                return card.not_exportable[name]
    return None


def _exportable_archs() -> str:
    return ", ".join(f"{arch} ({card})" for arch, (card, _) in _exports().items())


def graphs_for(net: nn.Module, arch: Optional[str] = None, method: Optional[str] = None) -> list[GraphSpec]:
    """The graph(s) that export ``net``: the function named by the card that exports its class (or the
    nearest base class, or ``arch``); an ``OptionsError`` for networks that are not exportable, with the
    reason of the card that says so (for the class, a base class nearer than an exported one, ``arch`` or
    ``method``)."""
    from osir.core.card import resolve
    net = net.eval()
    exports, name = _exports(), type(net).__name__
    why = None
    for key in [cls.__name__ for cls in type(net).__mro__] + [arch]:
        why = _not_exportable(key)
        if why:
            break
        if key in exports:
            return list(resolve(exports[key][1])(net))
    why = why or _not_exportable(method) or f"{name} is not one of osir's feed-forward networks"
    raise OptionsError(f"{arch or name} cannot be exported to ONNX: {why}; exportable: {_exportable_archs()}")


# ----------------------------------------------------------------------------- export and check
def _sizes(spec: GraphSpec, check_size: int) -> tuple[tuple[int, int], list[tuple[int, int, int]]]:
    """(export h, w) and the (batch, h, w) of the two checks, all different, valid for ``spec``."""
    m, low = spec.multiple, spec.min_size
    if check_size < low or check_size % m:
        raise OptionsError(f"--check-size {check_size}: this network needs sizes of at least {low}"
                           + (f" and a multiple of {m}" if m > 1 else ""))
    export = (round_up(max(low, 16) + 8, m), round_up(max(low, 16), m))       # e.g. 24 x 16
    odd = (check_size + 3 * m, max(low, check_size - 5 * m))                     # not a multiple of 2^depth
    checks = [(1, check_size, check_size), (2, *odd)]
    if export in [c[1:] for c in checks]:
        export = (export[0] + 2 * m, export[1])
    return export, checks


def export_graph(spec: GraphSpec, path: Path, export_size: tuple[int, int], opset: Optional[int] = None,
                 metadata: Optional[dict] = None) -> int:
    """Write ``spec`` as ONNX at ``path``; returns the opset written."""
    import onnx
    gen = torch.Generator().manual_seed(0)
    example = spec.inputs(2, *export_size, gen)            # batch 2: export does not fix a size-1 batch
    shapes = spec.dynamic_shapes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # unprovable shape facts (e.g. a slice end within the padded size) become run-time checks, not errors
        program = torch.export.export(spec.module, example, dynamic_shapes=shapes, strict=False,
                                      prefer_deferred_runtime_asserts_over_guards=True)
        onnx_program = torch.onnx.export(program, input_names=spec.input_names, output_names=spec.output_names,
                                         opset_version=opset, dynamo=True, dynamic_shapes=shapes, verbose=False)
    model = onnx_program.model_proto
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=f"osir.{key}", value=str(value))
    large = model.ByteSize() > 1_800_000_000 if hasattr(model, "ByteSize") else False
    data = path.with_name(path.name + ".data")      # the weights of a graph over protobuf's 2 GB, beside it
    try:        # a temporary name, renamed onto ``path`` when whole: a failed write leaves nothing under it
        atomic_write(path, lambda tmp: onnx.save_model(model, tmp, format="protobuf", save_as_external_data=large,
                                                       location=data.name if large else None))
    except OSError:
        if large:
            data.unlink(missing_ok=True)
        raise
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def session(path: str | Path, threads: Optional[int] = None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_graph(spec: GraphSpec, path: Path, checks: list[tuple[int, int, int]]) -> dict[str, float]:
    """Max abs difference between onnxruntime and PyTorch per check size ('BxHxW' -> value)."""
    sess = session(path)
    result = {}
    for k, (b, h, w) in enumerate(checks):
        inputs = spec.inputs(b, h, w, torch.Generator().manual_seed(100 + k))
        reference = spec.reference(inputs)
        try:
            outputs = sess.run(None, {n: x.numpy() for n, x in zip(spec.input_names, inputs)})
        except Exception as err:   # onnxruntime's own errors: the graph does not accept this size
            raise ExportCheckError(f"'{path}' does not run at {b}x{h}x{w} in onnxruntime: "
                                   f"{str(err).splitlines()[0][:300]}") from None
        diffs = []
        for name, ref, out in zip(spec.output_names, reference, outputs):
            if out.shape != ref.shape:
                raise ExportCheckError(f"'{path}': output '{name}' at input {b}x{h}x{w} is {list(out.shape)}, "
                                       f"PyTorch gives {list(ref.shape)}")
            diffs.append(float(np.abs(out - ref).max()))
        result[f"{b}x{h}x{w}"] = max(diffs)
    return result


# ----------------------------------------------------------------------------- int8
def calibration_images(folder: Optional[str | Path], scale: int, size: int = 128, limit: int = 16) -> list[np.ndarray]:
    """HxWx3 float32 images for calibration: the images of ``folder`` (centre crops of at most ``size``), or
    scikit-image's ``CALIBRATION_PHOTOS`` downscaled bicubically by ``scale`` (what an SR network is fed)."""
    if folder is None:
        from osir.data.datasets import skimage_photo
        from osir.degradations.simple import BicubicDownscale
        downscale, rng = BicubicDownscale(scale), np.random.default_rng(0)
        images = [downscale(skimage_photo(name), rng)[0] for name in CALIBRATION_PHOTOS]
    else:
        from osir.data.io import DataError, list_images, read_image
        files = list_images(folder)[:limit]
        if not files:
            raise DataError(f"--calibration: no images in '{folder}'")
        images = [read_image(p) for p in files]
    out = []
    for img in images:
        h, w = img.shape[:2]
        y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
        out.append(np.ascontiguousarray(img[y:y + size, x:x + size], dtype=np.float32))
    return out


def quantize_int8(fp32_path: str | Path, out_path: str | Path, images: Sequence[np.ndarray],
                  input_name: str = "lq") -> Path:
    """Static QDQ int8 (per-channel int8 weights, uint8 activations, min-max calibration on ``images``)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: img.transpose(2, 0, 1)[None].copy()} for img in images])

        def get_next(self):
            return next(self.batches, None)

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    # onnxruntime's intermediate files, beside the output and removed however it ends; the output itself is
    # written once, whole, under a temporary name renamed onto ``out_path``
    pre, raw = out_path.with_name(out_path.stem + ".pre.onnx"), out_path.with_name(out_path.stem + ".pre.int8.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre))        # shape inference + graph optimisation, as recommended
        quantize_static(str(pre), str(raw), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        # keep the fp32 graph's symbolic output shapes (shape inference rewrites them as floor(...) expressions)
        fp32, model = onnx.load(str(fp32_path), load_external_data=False), onnx.load(str(raw))
        for src, dst in zip(list(fp32.graph.input) + list(fp32.graph.output),
                            list(model.graph.input) + list(model.graph.output)):
            dst.type.tensor_type.shape.CopyFrom(src.type.tensor_type.shape)
        atomic_write(out_path, lambda tmp: onnx.save_model(model, tmp, format="protobuf"))
    except OSError as err:            # a full disk in onnxruntime's writes, too: one line naming the output
        reason = write_failure(err, out_path.parent)
        failed = OSError(str(err) if str(err).startswith("cannot write '") else f"cannot write '{out_path}': {reason}")
        failed.errno = err.errno
        raise failed from None
    finally:
        for extra in (pre, raw, *out_path.parent.glob(out_path.stem + ".pre*")):
            extra.unlink(missing_ok=True)
    return out_path


def smooth_image(h: int, w: int, channels: int = 3) -> np.ndarray:
    """A smooth test image (gradients and low-frequency waves in [0.1, 0.9])."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [0.5 + 0.4 * np.sin(2 * np.pi * (x / w * (k + 1) + y / h * (2 - k % 2)) + k) for k in range(channels)]
    return np.stack(planes, -1).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray, clip: bool = True) -> float:
    """PSNR (peak 1) of ``a`` against ``b``, both clipped to [0, 1] first unless ``clip`` is false."""
    if clip:
        a, b = np.clip(a, 0, 1), np.clip(b, 0, 1)
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


# ----------------------------------------------------------------------------- the whole export
def export_onnx(net: nn.Module, out: str | Path, *, method: str, hyper_parameters: dict, arch: Optional[str] = None,
                source: Optional[str | Path] = None, options: Optional[dict] = None, opset: Optional[int] = None, check_size: int = 64,
                tolerance: float = DEFAULT_TOLERANCE, int8: bool = False, calibration: Optional[str | Path] = None,
                int8_metrics: Optional[dict] = None, log: Callable[[str], None] = print) -> list[dict]:
    """Export ``net`` to ``out`` (``<stem><suffix>.onnx`` per graph where it is several, e.g. ``.encoder`` /
    ``.decoder``), check it with onnxruntime, write model cards; with ``int8`` also ``<stem>.int8.onnx``.
    Returns one record per file."""
    from osir.model_card import write_model_card
    out = Path(out)
    if out.suffix != ".onnx":
        raise OptionsError(f"-o {out}: the output must end in .onnx")
    for package in ("onnx", "onnxscript", "onnxruntime"):   # a missing one is reported before a file is written
        __import__(package)
    specs = graphs_for(net, arch, method)
    arch = arch or type(net).__name__
    scale = specs[0].calibration_scale
    if int8 and scale is None:
        raise OptionsError(f"--int8 is for the super-resolution graphs (calibrated on downscaled photos); {arch} is "
                           "exported in fp32 only (its method's onnx.py says why)")
    records = []
    for spec in specs:
        path = out.with_name(out.stem + spec.suffix + ".onnx")
        export_size, checks = _sizes(spec, check_size)
        written = export_graph(spec, path, export_size, opset,
                               metadata={"method": method, "arch": arch, "role": spec.role})
        diffs = check_graph(spec, path, checks)
        worst = max(diffs.values())
        log(f"{path}: onnxruntime vs PyTorch max abs difference {worst:.2e} "
            f"({', '.join(f'{k}: {v:.2e}' for k, v in diffs.items())}; exported at 2x{export_size[0]}x{export_size[1]})")
        if not worst <= tolerance:
            path.unlink(missing_ok=True)
            raise ExportCheckError(f"'{path}': onnxruntime and PyTorch differ by {worst:.3g} (max abs difference "
                                   f"at {max(diffs, key=diffs.get)}), above --tolerance {tolerance:g}; file removed")
        card = write_model_card(path, method=method, hyper_parameters=hyper_parameters, source=source,
                                options=options, format="onnx", arch=arch, role=spec.role, opset=written,
                                inputs=spec.input_names, outputs=spec.output_names, shapes=spec.io,
                                dynamic_axes="batch, height, width",
                                min_size=spec.min_size, size_multiple=spec.multiple,
                                max_abs_difference=worst, checked_at=diffs, tolerance=tolerance,
                                exporter=f"torch.onnx (dynamo) {torch.__version__}")
        records.append({"path": path, "card": card, "max_abs_difference": worst, "checks": diffs})
    if int8:
        spec, fp32 = specs[0], records[0]["path"]
        int8_path = out.with_name(out.stem + ".int8.onnx")
        images = calibration_images(calibration, scale)
        quantize_int8(fp32, int8_path, images, spec.input_names[0])
        x = smooth_image(check_size, check_size)[None].transpose(0, 3, 1, 2).copy()
        ref = session(fp32).run(None, {spec.input_names[0]: x})[0]
        q = session(int8_path).run(None, {spec.input_names[0]: x})[0]
        diff, agreement = float(np.abs(q - ref).max()), psnr(q, ref, clip=False)
        log(f"{int8_path}: int8 vs fp32 on a smooth {check_size}x{check_size} image: max abs difference "
            f"{diff:.3g}, PSNR {agreement:.2f} dB")
        card = write_model_card(int8_path, method=method, hyper_parameters=hyper_parameters, source=source,
                                options=options, metrics=int8_metrics, format="onnx", arch=arch,
                                role=spec.role + ", int8", opset=written,
                                quantization={"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                                              "weights": "int8 per channel", "activations": "uint8",
                                              "calibration": str(calibration) if calibration else
                                              "scikit-image " + ",".join(CALIBRATION_PHOTOS) + f" (/{scale} bicubic)",
                                              "calibration_images": len(images), "method": "MinMax"},
                                fp32_file=fp32.name, inputs=spec.input_names, outputs=spec.output_names,
                                int8_vs_fp32={"max_abs_difference": diff, "psnr": agreement,
                                              "input": f"smooth {check_size}x{check_size}"})
        records.append({"path": int8_path, "card": card, "max_abs_difference_vs_fp32": diff, "psnr_vs_fp32": agreement})
    return records


# ----------------------------------------------------------------------------- --model names
def _model_names() -> dict[str, tuple]:
    """Every ``--model`` name -> (card, release, network key, method or None): the cards' ``export_names``
    first, then the release names."""
    out: dict[str, tuple] = {}
    for card in _cards():
        for short in card.export_names:
            release = card.release(short.release)
            if release is None:
                raise KeyError(f"card '{card.name}': export name '{short.name}' names no release '{short.release}'")
            out.setdefault(short.name, (card, release, short.network, short.method))
    for card in _cards():
        for release in card.releases:
            out.setdefault(release.name, (card, release, "network", None))
    return out


_RELEASE_METHODS: dict[tuple[str, str], dict] = {}


def _release_method(card, release) -> dict:
    """The ``method`` section of ``release``'s options (read once per process)."""
    from osir.core.card import release_options
    key = (card.package, release.options)
    if key not in _RELEASE_METHODS:
        _RELEASE_METHODS[key] = release_options(card, release).get("method") or {}
    return _RELEASE_METHODS[key]


def _release_network(card, release, key: str, method: Optional[str]) -> tuple[Optional[ModelEntry], Optional[str]]:
    """(the method, architecture and hyper-parameters at ``method.<key>`` of ``release``'s options, None),
    or (None, why that release is not exported)."""
    options = _release_method(card, release)
    method = method or options.get("type")
    spec = options.get(key)
    arch = spec.get("type") if isinstance(spec, dict) else None
    why = _not_exportable(method, arch)
    if why is None and arch is None:
        why = f"the release '{release.name}' names no network at method.{key}"
    elif why is None and arch not in _exports():
        why = f"no method card exports {arch}"
    if why:
        return None, why
    return ModelEntry(method, arch, {k: v for k, v in spec.items() if k != "type"}), None


def _entry(model: str, card, release, key: str, method: Optional[str]) -> ModelEntry:
    entry, why = _release_network(card, release, key, method)
    if why:
        raise OptionsError(f"--model {model}: cannot be exported to ONNX: {why}; exportable: {_exportable_models()}")
    return entry


def export_models() -> dict[str, ModelEntry]:
    """The exportable ``--model`` names (``MODELS``): short names first, then release names."""
    out = {}
    for name, found in _model_names().items():
        entry, _ = _release_network(*found)
        if entry is not None:
            out[name] = entry
    return out


def _exportable_models() -> str:
    names = list(export_models())
    short = [n for n in names if n in {s.name for card in _cards() for s in card.export_names}]
    releases = [n for n in names if n not in short]
    return ", ".join(short) + (f"; or a release: {', '.join(releases)}" if releases else "")


class _Models(Mapping):
    """``MODELS``: ``export_models()`` read when used (importing this module reads no release file)."""

    def __getitem__(self, name: str) -> ModelEntry:
        return export_models()[name]

    def __iter__(self):
        return iter(export_models())

    def __len__(self) -> int:
        return len(export_models())

    def __repr__(self) -> str:
        return repr(export_models())


#: ``--model`` name -> (method, arch, the release's hyper-parameters, used when the weights are not recognised)
MODELS: Mapping[str, ModelEntry] = _Models()


def _lookup(name: str) -> Optional[tuple]:
    """(card, release, network key, method) for a ``--model`` name: a release or export name, or a card's
    name (its first release, unless the card's first method is not exportable: then an ``OptionsError``)."""
    names = _model_names()
    if name in names:
        return names[name]
    for card in _cards():
        if card.name == name:
            why = _not_exportable(*card.methods[:1])
            if why or not card.releases:
                raise OptionsError(f"--model {name}: cannot be exported to ONNX: "
                                   f"{why or 'the card declares no release'}; exportable: {_exportable_models()}")
            return card, card.releases[0], "network", None
    return None


def _model_entry(model: str) -> ModelEntry:
    """The entry of a ``--model`` name; a name that is not one, ``<name>-<anything>`` (e.g. ``realesrgan-x8``)
    is read as ``<name>``."""
    name = model.lower()
    for candidate in dict.fromkeys((name, name.split("-")[0])):
        try:
            found = _lookup(candidate)
        except OptionsError as err:
            raise OptionsError(str(err).replace(f"--model {candidate}:", f"--model {model}:", 1)) from None
        if found is not None:
            return _entry(model, *found)
    from osir.core.registry import nearest
    raise OptionsError(f"--model {model}: unknown{nearest(name, list(_model_names()))}; exportable: "
                       f"{_exportable_models()}")


# ----------------------------------------------------------------------------- weights -> network
class LoadedNetwork(NamedTuple):
    network: nn.Module
    method: str
    arch: str
    hyper_parameters: dict
    run_options: Optional[dict]           # the osir run's options.yml when the weights sit in its models/


def network_from_weights(weights: str | Path, model: Optional[str] = None,
                         overrides: Optional[dict] = None) -> LoadedNetwork:
    """The network of ``weights``, recognised from its keys (``osir.recognize``); ``model`` (a ``--model``
    name) checks or, when the file is not recognised, gives the architecture, and ``overrides``
    hyper-parameters."""
    from osir.core.checkpoint import describe_mismatch, read_state_dict
    from osir.recognize import recognize
    from osir.core.registry import ARCHS
    overrides = overrides or {}
    entry = _model_entry(model) if model else None
    try:
        found, failure = recognize(weights), None
    except CheckpointError as err:
        found, failure = None, err
    if found is not None:
        why = _not_exportable(found.method, found.arch)
        if why or found.arch is None or found.arch not in _exports():
            why = why or f"it holds {found.method} weights, not one feed-forward network"
            raise OptionsError(f"'{weights}' ({found.method}, {found.arch or 'not one network'}) cannot be exported "
                               f"to ONNX: {why}; exportable: {_exportable_models()}")
        if entry is not None and entry.arch != found.arch:
            raise OptionsError(f"--model {model} expects {entry.arch} weights, but '{weights}' holds {found.arch} "
                               f"({found.method}); leave --model out or name the right one")
        method, arch, run_options = found.method, found.arch, found.run_options   # the file's method, not the name's
        if not overrides:
            return LoadedNetwork(found.build_network(), method, arch, dict(found.hyper_parameters), run_options)
        hp, state = {**found.hyper_parameters, **overrides}, found.state_dict
    elif entry is not None:
        (method, arch, defaults), run_options = entry, None
        hp, state = {**defaults, **overrides}, read_state_dict(weights)
    else:
        raise CheckpointError(f"{failure} (name the architecture with --model: {_exportable_models()})") from None
    net = ARCHS.build({"type": arch, **hp}, f"--model {model or arch}")
    diff = describe_mismatch(net.state_dict(), state)
    if diff:
        raise CheckpointError(f"'{weights}' does not fit {arch}({hp}): {diff}"
                              + ("" if overrides else "; give its hyper-parameters with --set key=value"))
    net.load_state_dict(state, strict=True)
    return LoadedNetwork(net.eval(), method, arch, hp, run_options)


def _parse_overrides(items: Sequence[str]) -> dict:
    from osir.core.options import load_yaml
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OptionsError(f"--set {item}: expected key=value (e.g. num_block=6)")
        out[key.strip()] = load_yaml(f"--set {key.strip()}", text=value)      # YAML as options files read it
    return out


def _help() -> str:
    """The ``onnx`` sub-command's epilog: what the installed cards export, and what the command does."""
    import textwrap
    fill = lambda text: textwrap.fill(text, 110, initial_indent="  ", subsequent_indent="  ",  # noqa: E731
                                      break_on_hyphens=False)
    return "\n".join([
        "exportable architectures (from the method cards):", fill(_exportable_archs()),
        "--model names:", fill(_exportable_models()),
        "", "Batch, height and width are dynamic (torch.export + the dynamo ONNX exporter). Every graph is run with",
        "onnxruntime at --check-size and an odd size and compared with PyTorch; above --tolerance the file is",
        "removed and the command fails. --int8 (SR networks): static QDQ, int8 per-channel weights, uint8",
        "activations, min-max calibration on --calibration DIR (default: scikit-image photos downscaled by the",
        "scale). Every file gets a model card <stem>.card.yaml.", "", "manual: docs/export.md"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="osir export", description="Export a feed-forward network to ONNX.")
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p = sub.add_parser("onnx", help="ONNX graph with dynamic batch / height / width, checked with onnxruntime",
                       description="Export to ONNX, check against PyTorch with onnxruntime, write a model card.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_help())
    p.add_argument("--weights", required=True, help="weights file (official release or osir's own)")
    p.add_argument("--model", help="architecture when the weights do not say, a release (osir restore "
                                   "--list-models) or a short name (e.g. the method's); checked against the "
                                   "recognised one otherwise")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="hyper-parameters of the network (e.g. num_block=6), over the recognised / release ones")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--check-size", type=int, default=64, metavar="N",
                   help="image size of the onnxruntime check (a second, odd size is checked too)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="largest max abs difference to PyTorch accepted (default %(default)g)")
    p.add_argument("--int8", action="store_true", help="also write <stem>.int8.onnx (static QDQ, SR networks)")
    p.add_argument("--calibration", metavar="DIR",
                   help="images for int8 calibration (default: scikit-image photos downscaled by the scale)")
    args = parser.parse_args(argv)
    if args.check_size < 1:
        parser.error(f"--check-size must be positive, got {args.check_size}")

    def body() -> int:
        out = Path(args.output)
        if out.suffix != ".onnx":
            raise OptionsError(f"-o {out}: the output must end in .onnx")
        if out.resolve() == Path(args.weights).resolve():
            raise OptionsError(f"-o {out}: that is the weights file")
        if args.model:
            _model_entry(args.model)                   # an unexportable --model fails before reading anything
        net, method, arch, hp, run_options = network_from_weights(args.weights, args.model, _parse_overrides(args.set))
        print(f"{args.weights}: {method} / {arch} {hp}")
        records = export_onnx(net, out, method=method, hyper_parameters=hp, arch=arch, source=args.weights,
                              options=run_options,
                              opset=args.opset, check_size=args.check_size, tolerance=args.tolerance,
                              int8=args.int8, calibration=args.calibration)
        for record in records:
            print(f"wrote {record['path']} (card {record['card'].name})")
        return 0

    return cli.run("osir export", body)


if __name__ == "__main__":
    sys.exit(main())
