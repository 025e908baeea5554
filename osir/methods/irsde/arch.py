"""IR-SDE's conditional U-Net noise network (Luo et al., ICML 2023, Sec. 4 / appendix), written
from the paper's description and the official checkpoint's key layout.

Input cat(x_t - mu, mu); sinusoidal time embedding (Vaswani et al. 2017) through an MLP; per level
two residual blocks whose first conv is modulated by a time scale/shift, linear attention
(Shen et al. 2021) in a pre-norm residual, and a strided-conv downsample; the decoder mirrors it
with skip concatenations and nearest-neighbour upsampling.  As in the official network's
``check_image_size``, the input is reflect-padded at the bottom/right to a multiple of 2^depth and the
output cropped back (linear attention is global, so the padding changes every output pixel).  Module names follow the official state dict,
so its ``*.pth`` files load without key conversion.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from osir.core.registry import ARCHS


class SinusoidalPosEmb(nn.Module):
    """Transformer sinusoidal embedding of a (fractional) time step: [sin(t w_k), cos(t w_k)]."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000) / (half - 1)))
        args = t.float()[:, None] * freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW map, with a gain and no bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x):
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn, self.norm = fn, ChannelLayerNorm(dim)

    def forward(self, x):
        return self.fn(self.norm(x))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


class LinearAttention(nn.Module):
    """Efficient attention (Shen et al. 2021): softmax(q) over features, softmax(k) over positions,
    context = k v^T, cost linear in the number of pixels."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, h * w) for t in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, h, w))


class Block(nn.Module):
    """3x3 conv (no bias), optional time scale/shift, SiLU."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, padding=1, bias=False)
        self.act = nn.SiLU()

    def forward(self, x, scale_shift=None):
        x = self.proj(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


class ResBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out * 2))
        self.block1, self.block2 = Block(dim, dim_out), Block(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1, bias=False) if dim != dim_out else nn.Identity()

    def forward(self, x, time_emb):
        scale_shift = self.mlp(time_emb)[:, :, None, None].chunk(2, dim=1)
        h = self.block2(self.block1(x, scale_shift))
        return h + self.res_conv(x)


def conditional_input(xt: torch.Tensor, mu: torch.Tensor, t, multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The U-Net's input cat(x_t - mu, mu), reflect-padded at the bottom / right to ``multiple``
    (replicate where the image is too small), and the step ``t`` as one value per batch element."""
    h, w = xt.shape[-2:]
    pad = (0, (multiple - w % multiple) % multiple, 0, (multiple - h % multiple) % multiple)
    x = torch.cat([xt - mu, mu], dim=1)
    if any(pad):
        x = F.pad(x, pad, mode="reflect" if min(h, w) > max(pad) else "replicate")
    if not torch.is_tensor(t) or t.dim() == 0:
        t = torch.full((x.shape[0],), float(t), device=x.device)
    return x, t


def _attention(dim: int, on: bool) -> nn.Module:
    return Residual(PreNorm(dim, LinearAttention(dim))) if on else nn.Identity()


@ARCHS.register()
class ConditionalUNet(nn.Module):
    """IR-SDE noise network ``forward(x_t, mu, t) -> predicted noise``.

    Args:
        in_nc, out_nc: image channels.
        nf: width of the first level; level i has nf * 2^i channels (i = 0..depth).
        depth: number of levels; the input is reflect-padded to a multiple of 2^depth.
        attn_levels: levels (0 = full resolution) that get linear attention; ``None`` (the
            official network) puts it on every level and the middle.  Levels without attention
            have no attention weights, so such networks do not load official checkpoints.
    """

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, depth: int = 4,
                 attn_levels: Optional[list[int]] = None):
        super().__init__()
        self.depth, self.size_multiple = depth, 2 ** depth
        attn = set(range(depth + 1)) if attn_levels is None else set(attn_levels)
        time_dim = nf * 4
        self.init_conv = nn.Conv2d(in_nc * 2, nf, 7, padding=3, bias=False)
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(nf), nn.Linear(nf, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        dims = [nf * 2 ** i for i in range(depth + 1)]
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == depth - 1
            self.downs.append(nn.ModuleList([
                ResBlock(d_in, d_in, time_dim), ResBlock(d_in, d_in, time_dim), _attention(d_in, i in attn),
                nn.Conv2d(d_in, d_out, 3, padding=1, bias=False) if last else nn.Conv2d(d_in, d_out, 4, 2, 1)]))
        mid = dims[-1]
        self.mid_block1 = ResBlock(mid, mid, time_dim)
        self.mid_attn = _attention(mid, depth in attn)
        self.mid_block2 = ResBlock(mid, mid, time_dim)
        for i, (d_in, d_out) in enumerate(reversed(list(zip(dims[:-1], dims[1:])))):
            level, last = depth - 1 - i, i == depth - 1
            self.ups.append(nn.ModuleList([
                ResBlock(d_out + d_in, d_out, time_dim), ResBlock(d_out + d_in, d_out, time_dim),
                _attention(d_out, level in attn),
                nn.Conv2d(d_out, d_in, 3, padding=1, bias=False) if last else
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(d_out, d_in, 3, padding=1))]))
        self.final_res_block = ResBlock(nf * 2, nf, time_dim)
        self.final_conv = nn.Conv2d(nf, out_nc, 3, padding=1)

    def forward(self, xt: torch.Tensor, mu: torch.Tensor, t) -> torch.Tensor:
        h, w = xt.shape[-2:]
        x, t = conditional_input(xt, mu, t, self.size_multiple)
        x = self.init_conv(x)
        skip0 = x
        temb = self.time_mlp(t)
        skips = []
        for block1, block2, attn, down in self.downs:
            x = block1(x, temb)
            skips.append(x)
            x = attn(block2(x, temb))
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, temb)), temb)
        for block1, block2, attn, up in self.ups:
            x = block1(torch.cat([x, skips.pop()], dim=1), temb)
            x = attn(block2(torch.cat([x, skips.pop()], dim=1), temb))
            x = up(x)
        x = self.final_res_block(torch.cat([x, skip0], dim=1), temb)
        return self.final_conv(x)[..., :h, :w]
