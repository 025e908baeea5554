"""ONNX graph of IR-SDE's noise network (``ConditionalUNet``) for ``osir export onnx`` (named in the card's
``exports``).

Inputs ``x_t``, ``mu`` (the condition: the LQ image) and ``t`` (float, one step per batch element, as the
samplers call the network), output ``noise``; exported in fp32 only (post-training int8 of a network called
at every time step is another problem).  The U-Net reflect-pads its input to a multiple of 2^depth inside
``forward`` behind a Python ``if``, which ``torch.export`` would fix to the branch of the example size; the
exported module pads first (the same reflect pad, to a size the network then sees as a multiple), so the graph
is one for every size of at least 2^depth (below that PyTorch switches to replicate padding).
"""
from __future__ import annotations

from torch import nn

from osir.inference.onnx_graphs import GraphSpec, dynamic_dims, image_input, pad_to, time_steps


class PaddedUNet(nn.Module):
    """The U-Net with its reflect padding done before it (the same values for sizes >= 2^depth)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_t, mu, t):
        h, w = x_t.shape[-2:]
        m = self.net.size_multiple
        return self.net(pad_to(x_t, m), pad_to(mu, m), t)[..., :h, :w]


def graphs(net: nn.Module) -> list[GraphSpec]:
    """The single (``x_t``, ``mu``, ``t``) -> ``noise`` graph."""
    c = net.init_conv.in_channels // 2
    m = net.size_multiple

    def shapes():
        b, h, w = dynamic_dims()
        return ({0: b, 2: h, 3: w}, {0: b, 2: h, 3: w}, {0: b})
    return [GraphSpec("", PaddedUNet(net), lambda b, h, w, g: (image_input(b, c, h, w, g), image_input(b, c, h, w, g),
                                                                time_steps(b, g)),
                      ["x_t", "mu", "t"], ["noise"], shapes, min_size=m, role="IR-SDE noise network",
                      io={"x_t": f"batch x {c} x H x W", "mu": f"batch x {c} x H x W (the LQ)",
                          "t": "batch (float time step)", "noise": f"batch x {c} x H x W"})]
