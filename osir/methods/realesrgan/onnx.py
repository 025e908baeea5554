"""ONNX graph of Real-ESRGAN's generator (``RRDBNet``) for ``osir export onnx`` (named in the card's ``exports``).

One graph, input ``lq`` (B x C x H x W), output ``sr`` (B x C x sH x sW).  At scales 1 and 2 the network
pixel-unshuffles its input, so H and W must be multiples of 4 / 2: the dynamic height and width are declared
as such multiples.  ``--int8`` is offered (static QDQ calibrated on photos downscaled by the scale: what an
SR network is fed).
"""
from __future__ import annotations

from torch import nn

from osir.inference.onnx_graphs import GraphSpec, dynamic_dims, image_input
from osir.methods.realesrgan.method import PIXEL_UNSHUFFLE


def graphs(net: nn.Module) -> list[GraphSpec]:
    """The single ``lq`` -> ``sr`` graph of a basicsr ``RRDBNet``."""
    scale = net.scale
    multiple = PIXEL_UNSHUFFLE.get(scale, 1)
    c = net.conv_first.in_channels // multiple ** 2       # scale 1 / 2: the input is pixel-unshuffled

    def shapes():
        from torch.export import Dim
        b, h, w = dynamic_dims()
        if multiple > 1:
            h, w = multiple * Dim("height_over_%d" % multiple), multiple * Dim("width_over_%d" % multiple)
        return ({0: b, 2: h, 3: w},)
    return [GraphSpec("", net, lambda b, h, w, g: (image_input(b, c, h, w, g),), ["lq"], ["sr"], shapes,
                      multiple=multiple, role="super-resolution x%d" % scale,
                      io={"lq": f"batch x {c} x H x W",
                          "sr": f"batch x {net.conv_last.out_channels} x {scale}H x {scale}W"},
                      calibration_scale=scale)]
