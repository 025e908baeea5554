"""Refusion's networks (Luo et al., "Refusion: Enabling Large-Size Realistic Image Restoration with
Latent-Space Diffusion Models", CVPR-W NTIRE 2023), written from the paper and the key / shape
layouts of the release checkpoints (module names follow them, so the pixel and latent-dehazing release
files load as they are; the bokeh NAFNet's time MLP is named differently, see options/refusion/bokeh_stage2.yml).

``ConditionalNAFNet``: NAFNet (Chen et al., ECCV 2022) as a noise network ``forward(x_t, mu, t)``.
Input cat(x_t - mu, mu); the integer step t through a sinusoidal embedding of dimension ``width``, a
Linear to 8 x width, a SimpleGate and a Linear (the time embedding, 4 x width); every block maps it through
SimpleGate + Linear to (shift, scale) for its attention branch and its FFN branch and modulates
``LN(x) (1 + scale) + shift``; the branches enter the residual stream scaled by beta / gamma, which
start at zero.  The input is zero-padded at the bottom / right to a multiple of 2^levels and the
output cropped back (the padded area enters the channel attention's global pooling).  With
``global_skip`` (the latent variant) the intro features are added before the ending conv
(``ending(x + intro)``, as the release's latent-dehazing ``ConditionalNAFNet.forward``; the skip has no
parameters, so strict loading cannot tell: checked by running that code on the same random weights in
the release layout, max difference 6e-6 at outputs of magnitude 11).  With
``lens_info`` (bokeh) a second embedding of three scalars (source lens, target lens, disparity)
scales / shifts every block's FFN gate.

``CompressionUNet``: the latent model: a U-Net whose encoder maps the image (reflect-padded to a
multiple of 16) to an 8-channel latent at 1/8 resolution plus its skip features; the decoder takes a
latent and skips, so the LQ's skips can decode the GT's latent.  Residual blocks and linear attention
as IR-SDE's U-Net, without the time embedding; attention on the deepest level only.  The first skip is
the output of the first conv, ``h0``, and the decoder ends with ``final_conv(x + h0)``: this connection
has no weights, so a state dict cannot show it (without it the release's latent-dehazing weights load
strictly and decode wrongly); it was read in the release's ``UNet.decode``
(``codes/config/unet-latent/models/modules/UNet_arch.py``) and checked by running that code on the same
random weights in the release layout (latent and decoded image equal to 1e-7).  ``decode`` is a
pure function of its inputs (the output size is an argument, not state left by ``encode``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from osir.methods.irsde.arch import Block, ChannelLayerNorm, LinearAttention, PreNorm, Residual, SinusoidalPosEmb
from osir.core.registry import ARCHS


class SimpleGate(nn.Module):
    """NAFNet's gate: split the channels in two halves and multiply them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """A NAFNet block modulated by the time embedding (and optionally the lens embedding)."""

    def __init__(self, c: int, time_dim: int, lens_info: bool = False):
        super().__init__()
        self.mlp = nn.Sequential(SimpleGate(), nn.Linear(time_dim // 2, c * 4))
        self.cam_mlp = nn.Sequential(SimpleGate(), nn.Linear(time_dim // 2, c * 2)) if lens_info else None
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.gate = SimpleGate()
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1, self.norm2 = ChannelLayerNorm(c), ChannelLayerNorm(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor, temb: torch.Tensor, lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        shift_att, scale_att, shift_ffn, scale_ffn = self.mlp(temb)[:, :, None, None].chunk(4, dim=1)
        h = self.norm1(x) * (1 + scale_att) + shift_att
        h = self.gate(self.conv2(self.conv1(h)))
        h = self.conv3(h * self.sca(h))
        y = x + h * self.beta
        h = self.gate(self.conv4(self.norm2(y) * (1 + scale_ffn) + shift_ffn))
        if self.cam_mlp is not None:
            lens_scale, lens_shift = self.cam_mlp(lens)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + lens_scale) + lens_shift
        return y + self.conv5(h) * self.gamma


@ARCHS.register()
class ConditionalNAFNet(nn.Module):
    """Refusion's noise network ``forward(x_t, mu, t, lens_info=None) -> predicted noise``.

    Args:
        img_channel: image (or latent) channels; width: channels of the first level.
        enc_blk_nums, middle_blk_num, dec_blk_nums: blocks per level (the release: [1, 1, 1, 28], 1,
            [1, 1, 1, 1]).
        global_skip: add the intro features before the ending conv (the latent release).
        lens_info: condition on three lens scalars (bokeh), given as ``lens_info`` (B x 3).
    """

    def __init__(self, img_channel: int = 3, width: int = 64, enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
                 middle_blk_num: int = 1, dec_blk_nums: Sequence[int] = (1, 1, 1, 1), global_skip: bool = False,
                 lens_info: bool = False):
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(f"enc_blk_nums {list(enc_blk_nums)} and dec_blk_nums {list(dec_blk_nums)} "
                             "must have the same number of levels")
        self.global_skip, self.use_lens = global_skip, lens_info
        time_dim = 4 * width
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(width), nn.Linear(width, 2 * time_dim), SimpleGate(),
                                      nn.Linear(time_dim, time_dim))
        self.cam_mlp = (nn.Sequential(nn.Linear(3 * width, 2 * time_dim), SimpleGate(), nn.Linear(time_dim, time_dim))
                        if lens_info else None)
        self.lens_embedding = SinusoidalPosEmb(width) if lens_info else None
        self.intro = nn.Conv2d(2 * img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan, time_dim, lens_info) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan, time_dim, lens_info) for _ in range(middle_blk_num)])
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan, time_dim, lens_info) for _ in range(num)]))
        self.size_multiple = 2 ** len(enc_blk_nums)

    @staticmethod
    def _run(blocks: nn.Sequential, x, temb, lens):
        for block in blocks:
            x = block(x, temb, lens)
        return x

    def forward(self, xt: torch.Tensor, mu: torch.Tensor, t, lens_info: Optional[torch.Tensor] = None) -> torch.Tensor:
        h, w = xt.shape[-2:]
        if not torch.is_tensor(t) or t.dim() == 0:
            t = torch.full((xt.shape[0],), float(t), device=xt.device)
        temb = self.time_mlp(t)
        lens = None
        if self.use_lens:
            if lens_info is None:
                raise ValueError("this ConditionalNAFNet is conditioned on lens_info (B x 3), which the batch lacks")
            lens_info = lens_info.to(xt.device).reshape(xt.shape[0], 3)
            lens = self.cam_mlp(torch.cat([self.lens_embedding(lens_info[:, i]) for i in range(3)], dim=1))
        m = self.size_multiple
        x = F.pad(torch.cat([xt - mu, mu], dim=1), (0, (m - w % m) % m, 0, (m - h % m) % m))   # zeros
        x = intro = self.intro(x)
        skips = []
        for blocks, down in zip(self.encoders, self.downs):
            x = self._run(blocks, x, temb, lens)
            skips.append(x)
            x = down(x)
        x = self._run(self.middle_blks, x, temb, lens)
        for blocks, up in zip(self.decoders, self.ups):
            x = self._run(blocks, up(x) + skips.pop(), temb, lens)
        if self.global_skip:
            x = x + intro
        return self.ending(x)[..., :h, :w]


class PlainResBlock(nn.Module):
    """IR-SDE's residual block without the time embedding: two 3x3 conv + SiLU, 1x1 shortcut (in place
    without gradients, so whole large images keep fewer full-size maps)."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.block1, self.block2 = Block(dim, dim_out), Block(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1, bias=False) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = not torch.is_grad_enabled()
        h = F.silu(self.block1.proj(x), inplace=inplace)
        h = F.silu(self.block2.proj(h), inplace=inplace)
        return h.add_(self.res_conv(x)) if inplace else h + self.res_conv(x)


class UpsampleConv(nn.Sequential):
    """Nearest x2 upsampling then a 3x3 conv (keys ``1.weight`` / ``1.bias`` as the release).  Without
    gradients it runs as four 2x2 convolutions on the low-resolution input, one per output phase, written
    into the output: the same values without the 4x-sized upsampled map."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, dim_out, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        conv = self[1]
        w = conv.weight                                     # out x in x 3 x 3, taps dy, dx in (-1, 0, 1)
        # output row 2i uses input rows (i-1, i) with taps (w[-1], w[0] + w[1]); row 2i+1 rows (i, i+1)
        # with taps (w[-1] + w[0], w[1]); the same for columns
        rows = [torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2), torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2)]
        b, _, h, wd = x.shape
        out = x.new_empty(b, w.shape[0], 2 * h, 2 * wd)
        padded = F.pad(x, (1, 1, 1, 1))
        for a in (0, 1):
            for c in (0, 1):
                k = rows[a]                                 # out x in x 2 x 3
                k = torch.stack([k[..., 0], k[..., 1] + k[..., 2]], -1) if c == 0 else \
                    torch.stack([k[..., 0] + k[..., 1], k[..., 2]], -1)
                out[..., a::2, c::2] = F.conv2d(padded[..., a:a + h + 1, c:c + wd + 1], k, conv.bias)
        return out


@ARCHS.register()
class CompressionUNet(nn.Module):
    """Latent Refusion's compression model: ``encode(x) -> (z, skips)``, ``decode(z, skips, size)``.

    Args:
        in_ch, out_ch: image channels; ch: width of the first conv; ch_mult: level widths in units of
            ``ch`` (the release: 8, [4, 8, 8, 16]); embed_dim: latent channels.
        The latent is 2^(levels - 1) times smaller than the image (x8 for four levels); the image is
        reflect-padded to a multiple of 2^levels (16).
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ch: int = 8, ch_mult: Sequence[int] = (4, 8, 8, 16),
                 embed_dim: int = 8):
        super().__init__()
        dims = [ch] + [ch * m for m in ch_mult]
        levels = len(ch_mult)
        self.downscale, self.pad_multiple = 2 ** (levels - 1), 2 ** levels
        self.init_conv = nn.Conv2d(in_ch, ch, 3, padding=1, bias=False)
        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == levels - 1
            self.encoder.append(nn.ModuleList([
                PlainResBlock(d_in, d_in), PlainResBlock(d_in, d_in),
                Residual(PreNorm(d_in, LinearAttention(d_in))) if last else nn.Identity(),
                nn.Conv2d(d_in, d_out, 3, padding=1, bias=False) if last else nn.Conv2d(d_in, d_out, 4, 2, 1)]))
        for i, (d_in, d_out) in enumerate(reversed(list(zip(dims[:-1], dims[1:])))):
            last = i == levels - 1
            self.decoder.append(nn.ModuleList([
                PlainResBlock(d_out + d_in, d_out), PlainResBlock(d_out + d_in, d_out),
                Residual(PreNorm(d_out, LinearAttention(d_out))) if i == 0 else nn.Identity(),
                nn.Conv2d(d_out, d_in, 3, padding=1, bias=False) if last else
                UpsampleConv(d_out, d_in)]))
        self.latent_conv = nn.Conv2d(dims[-1], embed_dim, 1, bias=False)
        self.post_latent_conv = nn.Conv2d(embed_dim, dims[-1], 1, bias=False)
        self.final_conv = nn.Conv2d(ch, out_ch, 3, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(latent at 1/downscale of the padded size, the skip features the decoder reads: the first
        conv's output ``h0``, then two per level)."""
        h, w = x.shape[-2:]
        m = self.pad_multiple
        pad = (0, (m - w % m) % m, 0, (m - h % m) % m)
        if any(pad):
            x = F.pad(x, pad, mode="reflect" if min(h, w) > max(pad) else "replicate")
        x = self.init_conv(x)
        skips = [x]
        for block1, block2, attn, down in self.encoder:
            x = block1(x)
            skips.append(x)
            x = attn(block2(x))
            skips.append(x)
            x = down(x)
        return self.latent_conv(x), skips

    def decode(self, z: torch.Tensor, skips: list[torch.Tensor], size: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """The image of latent ``z`` with the encoder features ``skips`` (not modified), cropped to
        ``size`` (default: the padded size).  Ends with ``final_conv(x + h0)``, ``h0 = skips[0]``."""
        if len(skips) != 2 * len(self.decoder) + 1:
            raise ValueError(f"decode: expected {2 * len(self.decoder) + 1} skip features (h0, then two per level) "
                             f"as encode returns them; got {len(skips)}")
        x = self.post_latent_conv(z)
        stack = list(skips)
        for block1, block2, attn, up in self.decoder:
            x = torch.cat([x, stack.pop()], dim=1)
            x = block1(x)
            x = torch.cat([x, stack.pop()], dim=1)
            x = attn(block2(x))
            x = up(x)
        out = self.final_conv(x + stack.pop())                  # h0: the first conv's output
        return out if size is None else out[..., : size[0], : size[1]]

    def forward(self, x: torch.Tensor, other: Optional[torch.Tensor] = None):
        """``x`` rebuilt from its own latent and skips; with ``other`` (stage 1's training pass, through
        ``forward`` so that DDP synchronises the gradients): (x rebuilt, ``other`` decoded from its latent
        with x's skips, x's latent)."""
        z, skips = self.encode(x)
        rebuilt = self.decode(z, skips, x.shape[-2:])
        if other is None:
            return rebuilt
        return rebuilt, self.decode(self.encode(other)[0], skips, x.shape[-2:]), z
