"""ONNX graphs of Refusion's networks for ``osir export onnx`` (named in the card's ``exports``).

``nafnet_graphs``: the noise network (``ConditionalNAFNet``), inputs ``x_t``, ``mu`` (the condition: the LQ
image or latent), ``t`` (float, one step per batch element, as the samplers call it), plus ``lens_info``
(B x 3) for the bokeh NAFNet; output ``noise``.

``compression_graphs``: latent Refusion's ``CompressionUNet`` as two files, ``<stem>.encoder.onnx``
(``image`` -> ``latent``, ``skip0``..) and ``<stem>.decoder.onnx`` (``latent``, ``skip0``.. -> ``image`` at
the padded size, a multiple of 2^levels: crop it to the LQ's size).  Two graphs, not one, because latent
Refusion runs the whole reverse SDE between them and decodes the *sampled* latent with the LQ's skips; a
single graph could only rebuild its own input.  The encoder pads its input to a multiple of 2^levels inside
``encode`` behind a Python ``if``; the exported encoder pads first (the same reflect pad), so the graph holds
for every size of at least that multiple.

Both are exported in fp32 only (post-training int8 of a network called at every time step, or of a latent
space the SDE was trained on, is another problem).
"""
from __future__ import annotations

import torch
from torch import nn

from osir.inference.onnx_graphs import GraphSpec, dynamic_dims, image_input, pad_to, time_steps


class NAFNetGraph(nn.Module):
    """The NAFNet with ``lens_info`` as a positional input (given only to the bokeh network)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_t, mu, t, lens_info=None):
        return self.net(x_t, mu, t, lens_info) if lens_info is not None else self.net(x_t, mu, t)


class Encoder(nn.Module):
    """``image`` -> (latent, *skips), padded first."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image):
        z, skips = self.net.encode(pad_to(image, self.net.pad_multiple))
        return (z, *skips)


class Decoder(nn.Module):
    """(latent, *skips) -> image at the padded size."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, latent, *skips):
        return self.net.decode(latent, list(skips))


def nafnet_graphs(net: nn.Module) -> list[GraphSpec]:
    """The single (``x_t``, ``mu``, ``t`` [, ``lens_info``]) -> ``noise`` graph."""
    c = net.intro.in_channels // 2
    names = ["x_t", "mu", "t"] + (["lens_info"] if net.use_lens else [])

    def inputs(b, h, w, g):
        base = (image_input(b, c, h, w, g), image_input(b, c, h, w, g), time_steps(b, g))
        return base + ((torch.rand(b, 3, generator=g) * 4,) if net.use_lens else ())

    def shapes():
        b, h, w = dynamic_dims()
        return ({0: b, 2: h, 3: w}, {0: b, 2: h, 3: w}, {0: b}) + (({0: b},) if net.use_lens else ())
    io = {"x_t": f"batch x {c} x H x W", "mu": f"batch x {c} x H x W (the condition)",
          "t": "batch (float time step)", "noise": f"batch x {c} x H x W"}
    if net.use_lens:
        io["lens_info"] = "batch x 3 (source lens, target lens, disparity)"
    return [GraphSpec("", NAFNetGraph(net), inputs, names, ["noise"], shapes, role="Refusion noise network", io=io)]


def compression_graphs(net: nn.Module) -> list[GraphSpec]:
    """The ``.encoder`` and ``.decoder`` graphs of the compression U-Net."""
    c = net.init_conv.in_channels
    levels, m = len(net.encoder), net.pad_multiple
    skip_names = [f"skip{i}" for i in range(2 * levels + 1)]     # h0 (the first conv), two per level
    encoder = Encoder(net)

    def enc_shapes():
        b, h, w = dynamic_dims()
        return ({0: b, 2: h, 3: w},)

    def dec_inputs(b, h, w, g):
        with torch.no_grad():
            return encoder(image_input(b, c, h, w, g))

    def dec_shapes():
        from torch.export import Dim
        b, h, w = Dim("batch"), Dim("latent_height"), Dim("latent_width")
        down = levels - 1                      # skips of level i are 2^(levels-1-i) times the latent
        lv = [0] + [i // 2 for i in range(2 * levels)]                 # skip0 = h0 is at level 0
        skips = [{0: b, 2: 2 ** (down - i) * h if down - i else h,
                  3: 2 ** (down - i) * w if down - i else w} for i in lv]
        return ({0: b, 2: h, 3: w}, tuple(skips))          # forward(latent, *skips)
    latent = f"batch x {net.latent_conv.out_channels} x ceil(H/{m})*{m // net.downscale} x ..."
    return [GraphSpec(".encoder", encoder, lambda b, h, w, g: (image_input(b, c, h, w, g),), ["image"],
                      ["latent"] + skip_names, enc_shapes, min_size=m, role="latent Refusion compression encoder",
                      io={"image": f"batch x {c} x H x W", "latent": latent,
                          "skip0..": f"the first conv's output, then the encoder features of levels "
                                     f"0..{levels - 1} (two per level)"}),
            GraphSpec(".decoder", Decoder(net), dec_inputs, ["latent"] + skip_names, ["image"], dec_shapes,
                      min_size=m, role="latent Refusion compression decoder",
                      io={"latent": latent, "skip0..": "the encoder's features (of the LQ)",
                          "image": f"batch x {net.final_conv.out_channels} x ceil(H/{m})*{m} x ceil(W/{m})*{m} "
                                   "(crop to H x W)"})]
