"""ONNX graph of ``SharpenNet`` for ``osir export onnx`` (named in the card's ``exports``): one graph, input
``lq`` (B x C x H x W, any size), output ``restored`` of the same shape; fp32 only (not a super-resolution
network: no ``--int8`` calibration scale)."""
from __future__ import annotations

from torch import nn

from osir.inference.onnx_graphs import GraphSpec, dynamic_dims, image_input


def graphs(net: nn.Module) -> list[GraphSpec]:
    c = net.head.in_channels

    def shapes():
        b, h, w = dynamic_dims()
        return ({0: b, 2: h, 3: w},)
    return [GraphSpec("", net, lambda b, h, w, g: (image_input(b, c, h, w, g),), ["lq"], ["restored"], shapes,
                      role="sharpening x1", io={"lq": f"batch x {c} x H x W", "restored": f"batch x {c} x H x W"})]
