"""DA-CLIP's universal-IR noise network (Luo et al., ICLR 2024): IR-SDE's conditional U-Net with the
DA-CLIP embeddings as conditions, module names as the release file ``universal-ir.pth``.

* Degradation embedding -> a prompt added to the time embedding: softmax(text_mlp(e_deg)) over the
  time_dim features, times a learned prompt vector, through ``prompt_mlp``.
* Content embedding -> cross-attention: at the deepest level (encoder and decoder) and in the middle
  block a spatial transformer (one block: self-attention, cross-attention to the single content token,
  GEGLU feed-forward; head size 32) replaces the linear attention.  It is diffusers' ``Transformer2DModel``
  (its key names are the release's); the other levels keep IR-SDE's linear attention.
* Level widths ``nf * ch_mult`` (the release: [1, 2, 4, 8], so the first level keeps ``nf``); the input
  is reflect-padded at the bottom / right to a multiple of 2^levels, as the release's ``check_image_size``
  (universal and wild IR alike: the wild network's extra stride-2 convolution plus the levels' levels-1
  downsamplings halve the image ``levels`` times).  ``use_degra_context`` / ``use_image_context`` switch
  the conditions off (single-task training); without image context every level uses linear attention.
* ``scale: 0.5`` is the wild-IR network (Luo et al., CVPR-W 2024, ``wild-ir.pth``): the U-Net runs at half
  resolution, a stride-2 convolution after the first convolution (``downsample``) and a nearest x2
  upsample + convolution (``upsample``) before the final concatenation with the full-resolution features.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from osir.methods.irsde.arch import (ChannelLayerNorm, LinearAttention, ResBlock, SinusoidalPosEmb,
                                     conditional_input)
from osir.core.registry import ARCHS

HEAD_SIZE = 32


class ContextAttention(nn.Module):
    """x + fn(LN(x), context): IR-SDE's pre-norm residual around linear attention or a spatial
    transformer (keys ``fn.norm.g``, ``fn.fn.*``)."""

    def __init__(self, dim: int, context_dim: Optional[int]):
        super().__init__()
        self.fn = nn.Module()
        self.fn.norm = ChannelLayerNorm(dim)
        if context_dim:
            from diffusers import Transformer2DModel
            self.fn.fn = Transformer2DModel(num_attention_heads=dim // HEAD_SIZE, attention_head_dim=HEAD_SIZE,
                                            in_channels=dim, cross_attention_dim=context_dim, norm_num_groups=32,
                                            activation_fn="geglu", attention_bias=False)
        else:
            self.fn.fn = LinearAttention(dim)
        self.cross = bool(context_dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.fn.norm(x)
        if self.cross:
            y = self.fn.fn(y, encoder_hidden_states=context, return_dict=False)[0]
        else:
            y = self.fn.fn(y)
        return x + y


@ARCHS.register()
class DACLIPUNet(nn.Module):
    """``forward(x_t, mu, t, degradation=None, content=None) -> predicted noise``."""

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, ch_mult: Sequence[int] = (1, 2, 4, 8),
                 context_dim: int = 512, use_degra_context: bool = True, use_image_context: bool = True,
                 cross_attention_levels: Sequence[int] = (3,), scale: float = 1.0):
        super().__init__()
        if scale not in (1.0, 0.5):
            raise ValueError(f"scale must be 1 (universal IR) or 0.5 (wild IR, half resolution), got {scale}")
        self.depth, self.half = len(ch_mult), scale == 0.5
        self.size_multiple = 2 ** len(ch_mult)           # the release's check_image_size, wild IR too
        self.use_degra, self.use_image = use_degra_context, use_image_context
        time_dim = 4 * nf
        self.init_conv = nn.Conv2d(2 * in_nc, nf, 7, padding=3, bias=False)
        if self.half:
            self.downsample = nn.Conv2d(nf, nf, 4, 2, 1)
            self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, padding=1))
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(nf), nn.Linear(nf, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        if use_degra_context:
            self.prompt = nn.Parameter(torch.rand(1, time_dim))
            self.text_mlp = nn.Sequential(nn.Linear(context_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            self.prompt_mlp = nn.Linear(time_dim, time_dim)
        dims = [nf] + [nf * m for m in ch_mult]
        cross = context_dim if use_image_context else None
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i in range(self.depth):
            d_in, d_out, last = dims[i], dims[i + 1], i == self.depth - 1
            context = cross if i in cross_attention_levels else None
            self.downs.append(nn.ModuleList([
                ResBlock(d_in, d_in, time_dim), ResBlock(d_in, d_in, time_dim), ContextAttention(d_in, context),
                nn.Conv2d(d_in, d_out, 3, padding=1, bias=False) if last else nn.Conv2d(d_in, d_out, 4, 2, 1)]))
            self.ups.insert(0, nn.ModuleList([
                ResBlock(d_out + d_in, d_out, time_dim), ResBlock(d_out + d_in, d_out, time_dim),
                ContextAttention(d_out, context),
                nn.Conv2d(d_out, d_in, 3, padding=1, bias=False) if i == 0 else
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(d_out, d_in, 3, padding=1))]))
        mid = dims[-1]
        self.mid_block1 = ResBlock(mid, mid, time_dim)
        self.mid_attn = ContextAttention(mid, cross)
        self.mid_block2 = ResBlock(mid, mid, time_dim)
        self.final_res_block = ResBlock(2 * nf, nf, time_dim)
        self.final_conv = nn.Conv2d(nf, out_nc, 3, padding=1)

    def forward(self, xt: torch.Tensor, mu: torch.Tensor, t, degradation: Optional[torch.Tensor] = None,
                content: Optional[torch.Tensor] = None) -> torch.Tensor:
        h, w = xt.shape[-2:]
        x, t = conditional_input(xt, mu, t, self.size_multiple)
        x = self.init_conv(x)
        skip0 = x
        if self.half:
            x = self.downsample(x)
        temb = self.time_mlp(t)
        if self.use_degra and degradation is not None:
            temb = temb + self.prompt_mlp(torch.softmax(self.text_mlp(degradation.to(temb.dtype)), dim=1) * self.prompt)
        if self.use_image and content is None:
            raise ValueError("this network cross-attends to the DA-CLIP content embedding: pass content, or build "
                             "it with use_image_context: false")
        context = content[:, None].to(x.dtype) if self.use_image else None
        skips = []
        for block1, block2, attn, down in self.downs:
            x = block1(x, temb)
            skips.append(x)
            x = attn(block2(x, temb), context)
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, temb), context), temb)
        for block1, block2, attn, up in self.ups:
            x = block1(torch.cat([x, skips.pop()], dim=1), temb)
            x = attn(block2(torch.cat([x, skips.pop()], dim=1), temb), context)
            x = up(x)
        if self.half:
            x = self.upsample(x)
        x = self.final_res_block(torch.cat([x, skip0], dim=1), temb)
        return self.final_conv(x)[..., :h, :w]
