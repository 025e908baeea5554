"""ONNX export of osir's feed-forward networks, checked against PyTorch with onnxruntime, optional int8.

    osir export onnx --weights W.pth [--model realesrgan] -o model.onnx [--int8] [--opset N] [--check-size 64]
    python -m osir.export onnx ...

Exported: RRDBNet (Real-ESRGAN / Real-ESRNet, input ``lq``, output ``sr``), the noise networks with their
time input (IR-SDE's ``ConditionalUNet`` and Refusion's ``ConditionalNAFNet``: inputs ``x_t``, ``mu`` (the
condition: the LQ image or latent), ``t`` (float, one step per batch element, as the samplers call them),
plus ``lens_info`` (B x 3) for the bokeh NAFNet; output ``noise``) and latent Refusion's ``CompressionUNet``
as two files, ``<stem>.encoder.onnx`` (``image`` -> ``latent``, ``skip0``..) and ``<stem>.decoder.onnx``
(``latent``, ``skip0``.. -> ``image`` at the padded size, a multiple of 2^levels: crop it to the LQ's size).
The compression model is two graphs, not one, because latent Refusion runs the whole reverse SDE between
them and decodes the *sampled* latent with the LQ's skips; a single graph could only rebuild its own input.

Batch, height and width are dynamic.  The graphs come from ``torch.export`` (the dynamo exporter, torch's
default since 2.9; the TorchScript exporter is deprecated) with ``dynamic_shapes``.  The U-Net and the
compression encoder pad their input to a multiple of 2^depth inside ``forward`` behind a Python ``if``, which
export would fix to the branch of the example size; the exported module pads first (the same reflect pad, to
a size the network then sees as a multiple), so the graph is one for every size of at least 2^depth (below
that PyTorch switches to replicate padding).  After export every graph is run with onnxruntime at two sizes
other than the export size (``--check-size`` and an odd one) and compared with PyTorch; above ``--tolerance``
the file is removed and the command fails naming the difference.

``--int8`` (RRDBNet): static QDQ quantisation with onnxruntime (int8 per-channel weights, uint8 activations,
min-max calibration on images: ``--calibration DIR``, default a few of scikit-image's photos downscaled by
the network's scale, as an SR network's inputs are).  Static, not dynamic: dynamic quantisation turns Conv
into ConvInteger and quantises activations at run time, which was slower than fp32 on CPU for these conv nets
when tried, while QDQ runs fused int8 kernels (2.2x the fp32 graph's speed in benchmarks/onnx_int8.py).  Every file gets a model card
(``osir.model_card``).
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osir import cli
from osir.engine.checkpoint import CheckpointError
from osir.registry import OptionsError

__all__ = ["MODELS", "ExportCheckError", "GraphSpec", "graphs_for", "export_onnx", "quantize_int8", "network_from_weights", "main"]

RRDB_RELEASE = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4}
NAFNET_RELEASE = {"img_channel": 3, "width": 64, "enc_blk_nums": [1, 1, 1, 28], "middle_blk_num": 1,
                  "dec_blk_nums": [1, 1, 1, 1]}
COMPRESSION_RELEASE = {"in_ch": 3, "out_ch": 3, "ch": 8, "ch_mult": [4, 8, 8, 16], "embed_dim": 8}

#: ``--model`` name -> (osir method, arch, the release's hyper-parameters, used when the weights are not recognised)
MODELS = {
    "realesrgan": ("RealESRGAN", "RRDBNet", RRDB_RELEASE),
    "realesrnet": ("RealESRGAN", "RRDBNet", RRDB_RELEASE),
    "irsde": ("IRSDE", "ConditionalUNet", {"nf": 64, "depth": 4}),
    "refusion": ("Refusion", "ConditionalNAFNet", NAFNET_RELEASE),
    "refusion-latent": ("LatentRefusion", "ConditionalNAFNet", {**NAFNET_RELEASE, "img_channel": 8, "global_skip": True}),
    "refusion-compression": ("RefusionCompression", "CompressionUNet", COMPRESSION_RELEASE),
}
#: what is not one feed-forward network, and why
NOT_EXPORTABLE = {
    "OSEDiff": "OSEDiff is Stable Diffusion 2.1 (VAE, LoRA U-Net, text encoder and prompt tagger), not one "
               "feed-forward osir network",
    "DACLIP": "the DA-CLIP ViT is an image/text encoder pair, not a restoration network",
    "DACLIPUIR": "DA-CLIP universal IR's noise network needs the DA-CLIP encoder's degradation and content "
                 "embeddings at every step",
}
NOT_EXPORTABLE_NAMES = {"osediff": "OSEDiff", "daclip": "DACLIP", "daclip-uir": "DACLIPUIR", "wild-ir": "DACLIPUIR"}
ARCH_OF_MODULE = {"DACLIPUNet": "DACLIPUIR"}
#: scikit-image photos used for int8 calibration by default (the SR demo's training photos, none held out)
CALIBRATION_PHOTOS = ("chelsea", "rocket", "immunohistochemistry", "camera", "brick", "grass")
#: onnxruntime's graphs are fp32: differences above this between onnxruntime and PyTorch mean a wrong graph
DEFAULT_TOLERANCE = 1e-3


class ExportCheckError(CheckpointError):
    """The exported graph does not reproduce PyTorch within the tolerance (or does not run)."""


# ----------------------------------------------------------------------------- what is exported
def _round_up(n, m: int):
    return (n + m - 1) // m * m          # symbolic-friendly: export then knows the result is a multiple of m


def _pad_to(x: torch.Tensor, m: int) -> torch.Tensor:
    """Reflect-pad bottom / right to a multiple of ``m``, written so that the padded size is provably a
    multiple (the networks' own ``if any(pad)`` then folds away at export instead of fixing a branch)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, _round_up(w, m) - w, 0, _round_up(h, m) - h), mode="reflect")


class _PaddedUNet(nn.Module):
    """ConditionalUNet with its reflect padding done before it (the same values for sizes >= 2^depth)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x_t, mu, t):
        h, w = x_t.shape[-2:]
        m = self.net.size_multiple
        return self.net(_pad_to(x_t, m), _pad_to(mu, m), t)[..., :h, :w]


class _NAFNet(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x_t, mu, t, lens_info=None):
        return self.net(x_t, mu, t, lens_info) if lens_info is not None else self.net(x_t, mu, t)


class _Encoder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, image):
        z, skips = self.net.encode(_pad_to(image, self.net.pad_multiple))
        return (z, *skips)


class _Decoder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, latent, *skips):
        return self.net.decode(latent, list(skips))


@dataclass
class GraphSpec:
    """One ONNX graph: the module to export, its inputs for an image of b x h x w, names, shapes."""

    suffix: str                                   # "" or ".encoder" / ".decoder" (added to the output's stem)
    module: nn.Module
    inputs: Callable[[int, int, int, torch.Generator], tuple]   # (batch, height, width, generator) -> tensors
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: Callable[[], tuple]
    multiple: int = 1                             # image height / width must be a multiple of this
    min_size: int = 1                             # ... and at least this
    role: str = ""
    io: dict = field(default_factory=dict)        # name -> shape description, for the card

    def reference(self, inputs: tuple) -> list[np.ndarray]:
        with torch.no_grad():
            out = self.module(*inputs)
        return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def _image(b, c, h, w, gen):
    return torch.rand(b, c, h, w, generator=gen)


def _dims():
    from torch.export import Dim
    return Dim("batch"), Dim("height"), Dim("width")


def graphs_for(net: nn.Module, arch: Optional[str] = None) -> list[GraphSpec]:
    """The graph(s) that export ``net``; an ``OptionsError`` for networks that are not exportable."""
    from osir.methods.irsde.arch import ConditionalUNet
    from osir.methods.realesrgan import RRDBNet
    from osir.methods.refusion.arch import CompressionUNet, ConditionalNAFNet
    net = net.eval()
    name = type(net).__name__
    if isinstance(net, RRDBNet):
        c, scale = net.conv_first.in_channels, net.scale
        c //= {1: 16, 2: 4}.get(scale, 1)            # scale 1 / 2: pixel-unshuffled input
        multiple = {1: 4, 2: 2}.get(scale, 1)

        def shapes():
            from torch.export import Dim
            b, h, w = _dims()
            if multiple > 1:
                h, w = multiple * Dim("height_over_%d" % multiple), multiple * Dim("width_over_%d" % multiple)
            return ({0: b, 2: h, 3: w},)
        return [GraphSpec("", net, lambda b, h, w, g: (_image(b, c, h, w, g),), ["lq"], ["sr"], shapes,
                          multiple=multiple, role="super-resolution x%d" % scale,
                          io={"lq": f"batch x {c} x H x W", "sr": f"batch x {net.conv_last.out_channels} x "
                              f"{scale}H x {scale}W"})]
    if isinstance(net, ConditionalUNet):
        c = net.init_conv.in_channels // 2
        m = net.size_multiple

        def shapes():
            b, h, w = _dims()
            return ({0: b, 2: h, 3: w}, {0: b, 2: h, 3: w}, {0: b})
        return [GraphSpec("", _PaddedUNet(net), lambda b, h, w, g: (_image(b, c, h, w, g), _image(b, c, h, w, g),
                                                                     _steps(b, g)),
                          ["x_t", "mu", "t"], ["noise"], shapes, min_size=m, role="IR-SDE noise network",
                          io={"x_t": f"batch x {c} x H x W", "mu": f"batch x {c} x H x W (the LQ)",
                              "t": "batch (float time step)", "noise": f"batch x {c} x H x W"})]
    if isinstance(net, ConditionalNAFNet):
        c = net.intro.in_channels // 2
        names = ["x_t", "mu", "t"] + (["lens_info"] if net.use_lens else [])

        def inputs(b, h, w, g):
            base = (_image(b, c, h, w, g), _image(b, c, h, w, g), _steps(b, g))
            return base + ((torch.rand(b, 3, generator=g) * 4,) if net.use_lens else ())

        def shapes():
            b, h, w = _dims()
            return ({0: b, 2: h, 3: w}, {0: b, 2: h, 3: w}, {0: b}) + (({0: b},) if net.use_lens else ())
        io = {"x_t": f"batch x {c} x H x W", "mu": f"batch x {c} x H x W (the condition)",
              "t": "batch (float time step)", "noise": f"batch x {c} x H x W"}
        if net.use_lens:
            io["lens_info"] = "batch x 3 (source lens, target lens, disparity)"
        return [GraphSpec("", _NAFNet(net), inputs, names, ["noise"], shapes, role="Refusion noise network", io=io)]
    if isinstance(net, CompressionUNet):
        c = net.init_conv.in_channels
        levels, m = len(net.encoder), net.pad_multiple
        skip_names = [f"skip{i}" for i in range(2 * levels + 1)]     # h0 (the first conv), two per level
        encoder = _Encoder(net)

        def enc_shapes():
            b, h, w = _dims()
            return ({0: b, 2: h, 3: w},)

        def dec_inputs(b, h, w, g):
            with torch.no_grad():
                return encoder(_image(b, c, h, w, g))

        def dec_shapes():
            from torch.export import Dim
            b, h, w = Dim("batch"), Dim("latent_height"), Dim("latent_width")
            down = levels - 1                      # skips of level i are 2^(levels-1-i) times the latent
            lv = [0] + [i // 2 for i in range(2 * levels)]                 # skip0 = h0 is at level 0
            skips = [{0: b, 2: 2 ** (down - i) * h if down - i else h,
                      3: 2 ** (down - i) * w if down - i else w} for i in lv]
            return ({0: b, 2: h, 3: w}, tuple(skips))          # forward(latent, *skips)
        latent = f"batch x {net.latent_conv.out_channels} x ceil(H/{m})*{m // net.downscale} x ..."
        return [GraphSpec(".encoder", encoder, lambda b, h, w, g: (_image(b, c, h, w, g),), ["image"],
                          ["latent"] + skip_names, enc_shapes, min_size=m, role="latent Refusion compression encoder",
                          io={"image": f"batch x {c} x H x W", "latent": latent,
                              "skip0..": f"the first conv's output, then the encoder features of levels "
                                         f"0..{levels - 1} (two per level)"}),
                GraphSpec(".decoder", _Decoder(net), dec_inputs, ["latent"] + skip_names, ["image"], dec_shapes,
                          min_size=m, role="latent Refusion compression decoder",
                          io={"latent": latent, "skip0..": "the encoder's features (of the LQ)",
                              "image": f"batch x {net.final_conv.out_channels} x ceil(H/{m})*{m} x ceil(W/{m})*{m} "
                                       "(crop to H x W)"})]
    method = ARCH_OF_MODULE.get(name)
    why = NOT_EXPORTABLE.get(method, f"{name} is not one of osir's feed-forward networks")
    raise OptionsError(f"{arch or name} cannot be exported to ONNX: {why}; exportable: RRDBNet (realesrgan, "
                       "realesrnet), ConditionalUNet (irsde), ConditionalNAFNet (refusion, refusion-latent), "
                       "CompressionUNet (refusion-compression)")


def _steps(b: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(1, 100, (b,), generator=gen).float()


# ----------------------------------------------------------------------------- export and check
def _sizes(spec: GraphSpec, check_size: int) -> tuple[tuple[int, int], list[tuple[int, int, int]]]:
    """(export h, w) and the (batch, h, w) of the two checks, all different, valid for ``spec``."""
    m, low = spec.multiple, spec.min_size
    if check_size < low or check_size % m:
        raise OptionsError(f"--check-size {check_size}: this network needs sizes of at least {low}"
                           + (f" and a multiple of {m}" if m > 1 else ""))
    export = (_round_up(max(low, 16) + 8, m), _round_up(max(low, 16), m))       # e.g. 24 x 16
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
    path.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > 1_800_000_000 if hasattr(model, "ByteSize") else False
    onnx.save_model(model, str(path), save_as_external_data=large, location=path.name + ".data" if large else None)
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
    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre))        # shape inference + graph optimisation, as recommended
        quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        pre.unlink(missing_ok=True)
        for extra in out_path.parent.glob(out_path.stem + ".pre*"):
            extra.unlink(missing_ok=True)
    # keep the fp32 graph's symbolic output shapes (shape inference rewrites them as floor(...) expressions)
    fp32, model = onnx.load(str(fp32_path), load_external_data=False), onnx.load(str(out_path))
    for src, dst in zip(list(fp32.graph.input) + list(fp32.graph.output), list(model.graph.input) + list(model.graph.output)):
        dst.type.tensor_type.shape.CopyFrom(src.type.tensor_type.shape)
    onnx.save_model(model, str(out_path))
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
    """Export ``net`` to ``out`` (and ``<stem>.encoder/.decoder.onnx`` for the compression model), check it with
    onnxruntime, write model cards; with ``int8`` also ``<stem>.int8.onnx``.  Returns one record per file."""
    from osir.model_card import write_model_card
    out = Path(out)
    if out.suffix != ".onnx":
        raise OptionsError(f"-o {out}: the output must end in .onnx")
    specs = graphs_for(net, arch)
    arch = arch or type(net).__name__
    if int8 and arch != "RRDBNet":
        raise OptionsError(f"--int8 is for the SR networks (RRDBNet); {arch} is exported in fp32 only (its time "
                           "input and iterated use make post-training int8 a different problem)")
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
        images = calibration_images(calibration, net.scale)
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
                                              "scikit-image " + ",".join(CALIBRATION_PHOTOS) + f" (/{net.scale} bicubic)",
                                              "calibration_images": len(images), "method": "MinMax"},
                                fp32_file=fp32.name, inputs=spec.input_names, outputs=spec.output_names,
                                int8_vs_fp32={"max_abs_difference": diff, "psnr": agreement,
                                              "input": f"smooth {check_size}x{check_size}"})
        records.append({"path": int8_path, "card": card, "max_abs_difference_vs_fp32": diff, "psnr_vs_fp32": agreement})
    return records


# ----------------------------------------------------------------------------- weights -> network
def _model_entry(model: str) -> tuple[str, str, dict]:
    name = model.lower()
    if name in NOT_EXPORTABLE_NAMES or name.split("-")[0] in NOT_EXPORTABLE_NAMES:
        method = NOT_EXPORTABLE_NAMES.get(name) or NOT_EXPORTABLE_NAMES[name.split("-")[0]]
        raise OptionsError(f"--model {model}: cannot be exported to ONNX: {NOT_EXPORTABLE[method]}; exportable: "
                           f"{', '.join(MODELS)}")
    entry = MODELS.get(name) or MODELS.get(name.split("-")[0])
    if entry is None:
        from osir.registry import nearest
        raise OptionsError(f"--model {model}: unknown{nearest(name, list(MODELS))}; exportable: {', '.join(MODELS)}")
    return entry


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
    from osir.engine.checkpoint import describe_mismatch, read_state_dict
    from osir.recognize import recognize
    from osir.registry import ARCHS
    overrides = overrides or {}
    entry = _model_entry(model) if model else None
    try:
        found, failure = recognize(weights), None
    except CheckpointError as err:
        found, failure = None, err
    if found is not None:
        if found.method in NOT_EXPORTABLE or found.arch is None or found.arch == "DACLIPUNet":
            why = NOT_EXPORTABLE.get(found.method, f"it holds {found.method} weights, not one feed-forward network")
            raise OptionsError(f"'{weights}' ({found.method}, {found.arch or 'not one network'}) cannot be exported "
                               f"to ONNX: {why}; exportable: {', '.join(MODELS)}")
        if entry is not None and entry[1] != found.arch:
            raise OptionsError(f"--model {model} expects {entry[1]} weights, but '{weights}' holds {found.arch} "
                               f"({found.method}); leave --model out or name the right one")
        method, arch, run_options = found.method, found.arch, found.run_options   # the file's method, not the name's
        if not overrides:
            return LoadedNetwork(found.build_network(), method, arch, dict(found.hyper_parameters), run_options)
        hp, state = {**found.hyper_parameters, **overrides}, found.state_dict
    elif entry is not None:
        (method, arch, defaults), run_options = entry, None
        hp, state = {**defaults, **overrides}, read_state_dict(weights)
    else:
        raise CheckpointError(f"{failure} (name the architecture with --model: {', '.join(MODELS)})") from None
    net = ARCHS.build({"type": arch, **hp}, f"--model {model or arch}")
    diff = describe_mismatch(net.state_dict(), state)
    if diff:
        raise CheckpointError(f"'{weights}' does not fit {arch}({hp}): {diff}"
                              + ("" if overrides else "; give its hyper-parameters with --set key=value"))
    net.load_state_dict(state, strict=True)
    return LoadedNetwork(net.eval(), method, arch, hp, run_options)


def _parse_overrides(items: Sequence[str]) -> dict:
    import yaml
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OptionsError(f"--set {item}: expected key=value (e.g. num_block=6)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="osir export", description="Export a feed-forward network to ONNX.")
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p = sub.add_parser("onnx", help="ONNX graph with dynamic batch / height / width, checked with onnxruntime",
                       description="Export to ONNX, check against PyTorch with onnxruntime, write a model card.")
    p.add_argument("--weights", required=True, help="weights file (official release or osir's own)")
    p.add_argument("--model", help=f"architecture when the weights do not say: {', '.join(MODELS)} "
                                   "(checked against the recognised one otherwise)")
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
