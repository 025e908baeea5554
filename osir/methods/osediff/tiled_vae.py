"""Tiled encoding and decoding with a diffusers ``AutoencoderKL`` whose GroupNorms normalise with the
statistics of the whole image: the result is the whole-image pass's (to float rounding) while the
compute device holds one tile at a time.

Why hand-written: diffusers' VAE tiling (``AutoencoderKL.enable_tiling``) runs every tile through the
whole encoder or decoder on its own and blends the overlaps, so each tile's GroupNorms use the tile's
own statistics and the mid-block attention sees one tile: colour and contrast change from tile to tile.
The OSEDiff release tiles its VAE with Li Yi's "tiled VAE" (its ``my_utils/vaehook.py``), which halts
every tile at each GroupNorm until all tiles have reached it and then normalises them with statistics
pooled over the tiles.  No dependency offers that for diffusers' modules; this module implements the idea exactly:

* the encoder and decoder run stage by stage: ``conv_in``; each ResnetBlock2D as two stages split at
  its second GroupNorm; each down- or upsampler; the mid-block attention; the output head
  (GroupNorm, SiLU, ``conv_out``).  Between stages every activation map waits whole on ``store`` (the
  host's memory by default) and a stage runs tile by tile on the compute device;
* a tile is its core plus a halo of ``HALO`` pixels at the stage's input resolution, more than the
  stage's 3 x 3 convolutions reach, so every core is computed exactly as in the whole-image pass;
* each GroupNorm's mean and variance are pooled over the tile cores (every pixel once), per tile with
  ``torch.var_mean`` and across tiles with Chan et al.'s parallel update in float64;
* the mid-block attention runs on the whole map (at the latent resolution: 1/64 of the pixels for
  SD's VAE), as in the whole-image pass.

Memory: the compute device holds one tile (plus the whole latent map for the attention, whose cost grows
with the square of the latent area through diffusers' SDPA attention); ``store`` holds two or three whole
activation maps (about 6 GB at a 2048 x 2048 output in fp32, 24 GB at 4096 x 4096).

The release's version differs in three ways (osir's README lists them): its pooled variance is the
mean of the per-tile variances (the spread between the tile means is left out), taken over tiles that
include their padding; its padding (32 image pixels for the encoder, 11 latents for the decoder) is
smaller than the networks' receptive fields; its attention sees one tile.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

#: halo of every tile, in pixels of the stage's input (even, so stride-2 stages stay on their grid)
HALO = 2


class GroupStats:
    """Per-sample, per-group mean and variance of an activation map, gathered tile by tile."""

    def __init__(self, groups: int):
        self.groups = groups
        self.count = 0
        self.mean: Optional[torch.Tensor] = None          # B x G, float64
        self.m2: Optional[torch.Tensor] = None            # sum of squared deviations, B x G, float64

    def add(self, x: torch.Tensor) -> None:
        grouped = x.detach().float().unflatten(1, (self.groups, -1))
        var, mean = torch.var_mean(grouped, dim=(2, 3, 4), correction=0)
        n = grouped[0, 0].numel()
        mean, m2 = mean.double(), var.double() * n
        if self.count == 0:
            self.mean, self.m2, self.count = mean, m2, n
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def normalise(self, x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
        """``norm(x)`` with the gathered statistics instead of ``x``'s own (computed in float32, as
        autocast runs GroupNorm)."""
        if norm.num_groups != self.groups:
            raise ValueError(f"statistics of {self.groups} groups cannot normalise a {norm.num_groups}-group norm")
        mean = self.mean.to(x.device, torch.float32)[:, :, None, None, None]
        rstd = torch.rsqrt(self.m2 / self.count + norm.eps).to(x.device, torch.float32)[:, :, None, None, None]
        out = ((x.float().unflatten(1, (self.groups, -1)) - mean) * rstd).flatten(1, 2)
        if norm.affine:
            out = out * norm.weight.float()[None, :, None, None] + norm.bias.float()[None, :, None, None]
        return out if torch.is_autocast_enabled(x.device.type) else out.to(x.dtype)


def cuts(length: int, limit: int, align: int = 1) -> list[tuple[int, int]]:
    """[start, end) of the fewest near-equal parts of at most about ``limit`` that split ``length``,
    the boundaries multiples of ``align``."""
    parts = max(1, math.ceil(length / limit))
    edges = sorted({min(length, round(i * length / parts / align) * align) for i in range(parts + 1)} | {0, length})
    return list(zip(edges[:-1], edges[1:]))


class _Tiler:
    """Runs stages on tiles whose cores follow one grid, fixed at the input resolution and scaled
    with the maps, and keeps the maps whole on ``store``."""

    def __init__(self, size: tuple[int, int], limit: int, align: int, device, store):
        self.size, self.device, self.store = size, device, store
        self.grid = [cuts(n, limit, align) for n in size]

    def _cuts(self, axis: int, length: int) -> list[tuple[int, int]]:
        base = self.size[axis]
        out = []
        for a, b in self.grid[axis]:
            if (a * length) % base or (b * length) % base:
                raise ValueError(f"tiled VAE: tile boundary {a} of {base} is off the {length}-pixel grid")
            out.append((a * length // base, b * length // base))
        return out

    def local(self, fn: Callable, inputs: list[torch.Tensor], up: int = 1, down: int = 1,
              groups: Optional[int] = None) -> tuple[torch.Tensor, Optional[GroupStats]]:
        """``fn`` (of maps of the inputs' size, to a map ``up / down`` times as large, each output pixel
        depending on the inputs within ``HALO`` input pixels) on tiles; the statistics of ``groups``
        groups of the output when its consumer normalises it."""
        h, w = inputs[0].shape[-2:]
        stats = GroupStats(groups) if groups else None
        out = None
        for oy0, oy1 in self._cuts(0, h * up // down):
            iy0, iy1 = max(0, oy0 * down // up - HALO), min(h, -(-oy1 * down // up) + HALO)
            for ox0, ox1 in self._cuts(1, w * up // down):
                ix0, ix1 = max(0, ox0 * down // up - HALO), min(w, -(-ox1 * down // up) + HALO)
                tile = fn(*[x[..., iy0:iy1, ix0:ix1].to(self.device) for x in inputs])
                dy, dx = iy0 * up // down, ix0 * up // down
                core = tile[..., oy0 - dy:oy1 - dy, ox0 - dx:ox1 - dx]
                if stats is not None:
                    stats.add(core)
                if out is None:
                    out = torch.empty(*tile.shape[:2], h * up // down, w * up // down, dtype=tile.dtype,
                                      device=self.store)
                out[..., oy0:oy1, ox0:ox1] = core.to(self.store)
        return out, stats

    def whole(self, fn: Callable, x: torch.Tensor, groups: Optional[int] = None):
        out = fn(x.to(self.device))
        stats = None
        if groups:
            stats = GroupStats(groups)
            stats.add(out)
        return out.to(self.store), stats


def _check_resnet(block: nn.Module, name: str) -> None:
    plain = (getattr(block, "time_emb_proj", None) is None and getattr(block, "upsample", None) is None
             and getattr(block, "downsample", None) is None and isinstance(block.norm1, nn.GroupNorm)
             and isinstance(block.norm2, nn.GroupNorm))
    if not plain:
        raise NotImplementedError(f"tiled VAE: {name} is not a plain ResnetBlock2D (GroupNorm, no time "
                                  "embedding, no resampling inside)")


def _steps(net: nn.Module, decoder: bool) -> list[tuple[str, nn.Module]]:
    """The network as (kind, module) steps: conv, resnet, down, up, attn, head."""
    from diffusers.models.resnet import ResnetBlock2D
    steps: list[tuple[str, nn.Module]] = [("conv", net.conv_in)]
    mid = net.mid_block
    middle: list[tuple[str, nn.Module]] = [("resnet", mid.resnets[0])]
    for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
        middle += ([("attn", attn)] if attn is not None else []) + [("resnet", resnet)]
    blocks = net.up_blocks if decoder else net.down_blocks
    sampled: list[tuple[str, nn.Module]] = []
    for i, block in enumerate(blocks):
        if getattr(block, "attentions", None):
            raise NotImplementedError(f"tiled VAE: block {i} has attention; only DownEncoderBlock2D / "
                                      "UpDecoderBlock2D are supported")
        sampled += [("resnet", r) for r in block.resnets]
        sampled += [("up" if decoder else "down", s) for s in (block.upsamplers if decoder else block.downsamplers)
                    or []]
    steps += middle + sampled if decoder else sampled + middle
    if not isinstance(net.conv_norm_out, nn.GroupNorm):
        raise NotImplementedError("tiled VAE: conv_norm_out is not a GroupNorm (e.g. a spatial norm)")
    steps.append(("head", net))
    for kind, module in steps:
        if kind == "resnet":
            if not isinstance(module, ResnetBlock2D):
                raise NotImplementedError(f"tiled VAE: {type(module).__name__} is not a ResnetBlock2D")
            _check_resnet(module, type(module).__name__)
        if kind != "attn":
            for m in (module.conv_in, module.conv_out) if kind == "head" else module.modules():
                if isinstance(m, nn.Conv2d) and (max(m.kernel_size) > 3 or max(m.dilation) > 1):
                    raise NotImplementedError(f"tiled VAE: a {m.kernel_size} convolution reaches past the halo")
    return steps


def _norm_of(step: Optional[tuple[str, nn.Module]]) -> Optional[int]:
    """Groups of the GroupNorm the step applies first to its input (its statistics are gathered while
    that input is made), or None."""
    if step is None:
        return None
    kind, module = step
    return module.norm1.num_groups if kind == "resnet" else module.conv_norm_out.num_groups if kind == "head" else None


def run(net: nn.Module, x: torch.Tensor, limit: int, decoder: bool, store=None) -> torch.Tensor:
    """``net(x)`` for diffusers' VAE ``Encoder`` or ``Decoder`` ``net``: whole when both sides of ``x``
    are at most ``limit``, else on tiles of about ``limit`` (input pixels) with whole-image GroupNorm
    statistics.  ``store``: where the whole activation maps wait between stages (default: the CPU)."""
    h, w = x.shape[-2:]
    if max(h, w) <= limit:
        return net(x)
    steps = _steps(net, decoder)
    factor = 2 ** sum(kind == "down" for kind, _ in steps)
    if h % factor or w % factor:
        raise ValueError(f"tiled VAE encoder: the image sides ({h} x {w}) must be multiples of {factor}")
    device = x.device
    tiler = _Tiler((h, w), limit, factor, device, torch.device("cpu") if store is None else store)
    with torch.no_grad():
        return _run_steps(tiler, net, steps, x).to(device)


def _run_steps(tiler: _Tiler, net: nn.Module, steps: list, x: torch.Tensor) -> torch.Tensor:
    act = net.conv_act
    stats = None
    for i, (kind, module) in enumerate(steps):
        groups = _norm_of(steps[i + 1] if i + 1 < len(steps) else None)
        if kind == "conv":
            x, stats = tiler.local(module, [x], groups=groups)
        elif kind in ("down", "up"):
            x, stats = tiler.local(module, [x], *((2, 1) if kind == "up" else (1, 2)), groups=groups)
        elif kind == "attn":
            x, stats = tiler.whole(module, x, groups)
        elif kind == "resnet":
            x, stats = _resnet(tiler, module, x, stats, groups)
        else:
            s = stats
            x, stats = tiler.local(lambda t: module.conv_out(act(s.normalise(t, module.conv_norm_out))), [x])
    return x


def _resnet(tiler: _Tiler, block: nn.Module, x: torch.Tensor, stats: GroupStats, groups: Optional[int]):
    """A ResnetBlock2D as two tiled stages split at norm2 (whose statistics the first gathers)."""
    def first(t):
        return block.conv1(block.nonlinearity(stats.normalise(t, block.norm1)))
    h, h_stats = tiler.local(first, [x], groups=block.norm2.num_groups)

    def second(t, skip):
        t = block.conv2(block.dropout(block.nonlinearity(h_stats.normalise(t, block.norm2))))
        if block.conv_shortcut is not None:
            skip = block.conv_shortcut(skip)
        return (skip + t) / block.output_scale_factor
    return tiler.local(second, [h, x], groups=groups)


def encode(vae: nn.Module, x: torch.Tensor, limit: int, store=None):
    """``vae.encode(x).latent_dist`` with the encoder tiled above ``limit`` pixels (see ``run``)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    moments = run(vae.encoder, x, limit, decoder=False, store=store)
    if getattr(vae, "quant_conv", None) is not None:
        moments = vae.quant_conv(moments)
    return DiagonalGaussianDistribution(moments)


def decode(vae: nn.Module, z: torch.Tensor, limit: int, store=None) -> torch.Tensor:
    """``vae.decode(z).sample`` with the decoder tiled above ``limit`` latents (see ``run``)."""
    if getattr(vae, "post_quant_conv", None) is not None:
        z = vae.post_quant_conv(z)
    return run(vae.decoder, z, limit, decoder=True, store=store)
