"""The ADM U-Net (Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021, Sec. 3;
the improved-DDPM U-Net of Nichol & Dhariwal 2021 with the paper's changes), written from the paper and from the
released checkpoints' key layouts, so that the published unconditional priors load as they are:

* DPS's FFHQ 256x256 prior ``ffhq_10m.pt`` (Chung et al. 2023), 93,563,910 parameters;
* guided-diffusion's ImageNet 256x256 unconditional prior ``256x256_diffusion_uncond.pt``, 552,814,086 parameters.

Both predict the noise eps and the learned-variance interpolation (Nichol & Dhariwal 2021, eq. 15:
Sigma = exp(v log beta_t + (1 - v) log beta~_t)) as 6 output channels [eps, o]; the releases' sampler reads
v = (o + 1) / 2, o in [-1, 1] (beta~_t clipped at t = 0 to beta~_1, as its log is -inf there).  Images are in
[-1, 1], the linear beta schedule runs 1e-4..0.02 over 1000 steps; ``forward(x, t)`` takes integer steps in
[0, 1000).

The network, as the releases build it (module names follow their state dicts, so no key is converted):

* time embedding: e(t) = [cos(t w_0..w_{d/2-1}), sin(t w_0..w_{d/2-1})] with w_i = 10000^(-i / (d/2)) and
  d = model width (cosines first, unlike Vaswani et al.'s sines first; ``timestep_embedding``), then
  Linear(d, 4d), SiLU, Linear(4d, 4d); a class-conditional model adds a learned class embedding;
* residual block: h = conv3x3(SiLU(GN(x))); with scale-shift norm (the paper's "adaptive group normalization",
  AdaGN(h, y) = y_s GN(h) + y_b, with y_s = 1 + scale) [scale, shift] = Linear(SiLU(emb)) and
  h = conv3x3(Dropout(SiLU(GN(h) (1 + scale) + shift))); without it
  h = conv3x3(Dropout(SiLU(GN(h + Linear(SiLU(emb)))))); output skip(x) + h, skip = identity, or a 1x1 conv
  when the width changes.  GN is GroupNorm with 32 groups;
* down/up-sampling: with ``resblock_updown`` (the paper's "BigGAN residual blocks for up/downsampling") a residual
  block that average-pools 2x2 (or repeats nearest-neighbour 2x) both branches, the residual branch after its
  first GN+SiLU and before its first conv; otherwise a stride-2 3x3 conv (``op``) or nearest 2x + 3x3 conv (``conv``);
* attention (at the feature-map sides in ``attention_resolutions``): x + proj(MultiHeadAttention(qkv(GN(x)))) over
  the H*W positions, softmax(q^T k / sqrt(c)) v per head; ``num_head_channels`` fixes the head width (the paper's
  64 channels per head) and overrides ``num_heads``.  qkv is a 1x1 conv with 3C outputs whose channel order is a
  fact of the release: the "legacy" order (both releases, ``use_new_attention_order=False``) holds, per head,
  that head's q, k and v one after the other; the new order holds all heads' q, then all k, then all v;
* the U-Net: an input 3x3 conv; per level ``num_res_blocks`` residual blocks (each with attention when the level's
  side is listed) and a down-sampling block except at the last level; a middle residual block, attention,
  residual block; the decoder mirrors the encoder with ``num_res_blocks + 1`` blocks per level, each fed its
  input concatenated (first) with the matching encoder activation (second), and an up-sampling block at the end of
  every level but the first; output GN, SiLU, 3x3 conv.  The last conv of every residual block, every attention
  projection and the output conv are zero-initialised (so a freshly built network outputs exactly 0).

Hand-written because no installed library has this network (diffusers' ``UNet2DModel`` uses other module
names and another attention layout, and the releases ship only guided-diffusion's code).  Only what the releases
need is supported: 2-D images, fp32, no gradient checkpointing (``use_fp16`` / ``use_checkpoint`` are refused).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from osir.core.checkpoint import describe_mismatch, load_torch_file
from osir.core.errors import CheckpointError
from osir.core.registry import ARCHS

#: the class count of a class-conditional ADM (ImageNet); both releases here are unconditional
NUM_CLASSES = 1000

#: channel multipliers guided-diffusion's ``create_model`` picks for ``channel_mult=""`` by image size
DEFAULT_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}

#: the linear beta schedule both releases were trained with (Ho et al. 2020): betas = linspace(1e-4, 0.02, 1000)
LINEAR_SCHEDULE = {"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_steps": 1000}

#: the released unconditional priors: their ``create_model`` flags (ADMUNet's arguments), where they are published
ADM_RELEASES = {
    "ffhq_10m": {
        "file": "ffhq_10m.pt",
        "page": "https://github.com/DPS2022/diffusion-posterior-sampling",
        # the DPS README's "Download pretrained checkpoint" link (a Google Drive folder; no direct file URL)
        "download": "https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh?usp=sharing",
        "description": "ADM FFHQ 256x256 unconditional prior released with DPS (Chung et al., ICLR 2023)",
        "constructor": {"image_size": 256, "num_channels": 128, "num_res_blocks": 1, "channel_mult": "",
                        "learn_sigma": True, "class_cond": False, "use_checkpoint": False,
                        "attention_resolutions": 16, "num_heads": 4, "num_head_channels": 64,
                        "num_heads_upsample": -1, "use_scale_shift_norm": True, "dropout": 0.0,
                        "resblock_updown": True, "use_fp16": False, "use_new_attention_order": False},
        "num_parameters": 93_563_910,
        "schedule": LINEAR_SCHEDULE,
    },
    "256x256_diffusion_uncond": {
        "file": "256x256_diffusion_uncond.pt",
        "page": "https://github.com/openai/guided-diffusion",
        "download": "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
        "description": "ADM ImageNet 256x256 unconditional prior (Dhariwal & Nichol 2021)",
        "constructor": {"image_size": 256, "num_channels": 256, "num_res_blocks": 2, "channel_mult": "",
                        "learn_sigma": True, "class_cond": False, "use_checkpoint": False,
                        "attention_resolutions": "32,16,8", "num_heads": 4, "num_head_channels": 64,
                        "num_heads_upsample": -1, "use_scale_shift_norm": True, "dropout": 0.0,
                        "resblock_updown": True, "use_fp16": False, "use_new_attention_order": False},
        "num_parameters": 552_814_086,
        "schedule": LINEAR_SCHEDULE,
    },
}


def parse_channel_mult(channel_mult: Union[str, Sequence[float]], image_size: int) -> tuple[float, ...]:
    """The width multiplier of each level: ``""`` is the release default for ``image_size``
    (``DEFAULT_CHANNEL_MULT``), ``"1,1,2"`` or a sequence gives them."""
    if isinstance(channel_mult, str):
        if not channel_mult.strip():
            if image_size not in DEFAULT_CHANNEL_MULT:
                raise ValueError(f"channel_mult '' has no default for image_size {image_size} "
                                 f"(defaults exist for {sorted(DEFAULT_CHANNEL_MULT)}); give the multipliers")
            return DEFAULT_CHANNEL_MULT[image_size]
        channel_mult = [float(m) for m in channel_mult.split(",")]
    mults = tuple(int(m) if float(m).is_integer() else float(m) for m in channel_mult)
    if not mults or any(m <= 0 for m in mults):
        raise ValueError(f"channel_mult must be positive multipliers, got {channel_mult!r}")
    return mults


def parse_attention_resolutions(attention_resolutions: Union[int, str, Sequence[int]]) -> tuple[int, ...]:
    """The feature-map sides (in pixels) that get attention: ``16``, ``"32,16,8"`` or a sequence; ``""`` none."""
    if isinstance(attention_resolutions, bool):
        raise ValueError(f"attention_resolutions must be sides in pixels, got {attention_resolutions!r}")
    if isinstance(attention_resolutions, int):
        return (attention_resolutions,)
    if isinstance(attention_resolutions, str):
        return tuple(int(r) for r in attention_resolutions.split(",") if r.strip())
    return tuple(int(r) for r in attention_resolutions)


def adm_arguments(manifest_constructor: dict) -> dict:
    """ADMUNet's arguments for a release's ``create_model`` flags (as in ``ADM_RELEASES`` or a checkpoint
    manifest), in canonical form: ``channel_mult`` and ``attention_resolutions`` resolved to tuples.  The names
    are the release's own, so ``ADMUNet(**flags)`` works too; this only makes the resolved values explicit."""
    arguments = dict(manifest_constructor)
    unknown = sorted(set(arguments) - set(ADM_ARGUMENT_NAMES))
    if unknown:
        raise ValueError(f"unknown ADM argument(s) {', '.join(unknown)}; ADMUNet takes {', '.join(ADM_ARGUMENT_NAMES)}")
    image_size = int(arguments.get("image_size", 256))
    arguments["channel_mult"] = parse_channel_mult(arguments.get("channel_mult", ""), image_size)
    arguments["attention_resolutions"] = parse_attention_resolutions(arguments.get("attention_resolutions", "16"))
    return arguments


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """ADM's sinusoidal embedding of (possibly fractional) steps ``t`` (shape (N,)): (N, dim) with
    [cos(t w_i)]_i then [sin(t w_i)]_i, w_i = max_period^(-i / (dim // 2)); a zero column pads an odd ``dim``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def group_norm(channels: int) -> nn.GroupNorm:
    """ADM's normalisation: GroupNorm with 32 groups (eps 1e-5)."""
    if channels % 32:
        raise ValueError(f"ADM normalises with 32 groups: a width of {channels} channels is not a multiple of 32")
    return nn.GroupNorm(32, channels)


def zeroed(module: nn.Module) -> nn.Module:
    """``module`` with all parameters set to 0 (ADM's zero-initialised output layers)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding (scale-shift GN or additive); ``down`` / ``up`` resample
    both branches by 2 (average pooling / nearest neighbour)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: Optional[int] = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm, self.up, self.down = use_scale_shift_norm, up, down
        self.in_layers = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(group_norm(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm, act, conv = self.in_layers
        h = conv(self.resample(act(norm(x))))
        x = self.resample(x)
        emb_out = self.emb_layers(emb)[:, :, None, None]
        out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = out_rest(out_norm(h + emb_out))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions of a feature map, pre-GN and residual: x + proj(attn(qkv(GN(x)))).
    ``legacy_order``: qkv's channels hold per head [q, k, v]; otherwise [all q, all k, all v]."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, legacy_order: bool = True):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels do not split into heads of {num_head_channels} channels")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"{channels} channels do not split into {self.num_heads} heads")
        self.legacy_order = legacy_order
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zeroed(nn.Conv1d(channels, channels, 1))

    def split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of shape (B, heads, positions, head width) from qkv (B, 3C, positions)."""
        batch, width, length = qkv.shape
        head_width = width // (3 * self.num_heads)
        if self.legacy_order:
            parts = qkv.reshape(batch, self.num_heads, 3, head_width, length).unbind(dim=2)
        else:
            parts = qkv.reshape(batch, 3, self.num_heads, head_width, length).unbind(dim=1)
        return tuple(p.transpose(-1, -2) for p in parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        flat = x.reshape(batch, channels, -1)
        q, k, v = self.split_heads(self.qkv(self.norm(flat)))
        attended = F.scaled_dot_product_attention(q, k, v)              # softmax(q k^T / sqrt(c)) v per head
        attended = attended.transpose(-1, -2).reshape(batch, channels, -1)   # heads stacked along channels
        return (flat + self.proj_out(attended)).reshape(batch, channels, *spatial)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (ADM without ``resblock_updown``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 convolution (ADM without ``resblock_updown``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EmbeddedSequence(nn.ModuleList):
    """Layers applied in turn; residual blocks also get the time embedding (the release's block containers,
    indexed like its state dict: ``input_blocks.<i>.<j>``)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


#: ADMUNet's arguments: guided-diffusion's ``create_model`` flags, as the releases give them
ADM_ARGUMENT_NAMES = ("image_size", "num_channels", "num_res_blocks", "channel_mult", "learn_sigma", "class_cond",
                      "use_checkpoint", "attention_resolutions", "num_heads", "num_head_channels",
                      "num_heads_upsample", "use_scale_shift_norm", "dropout", "resblock_updown", "use_fp16",
                      "use_new_attention_order")


@ARCHS.register(name="ADMUNet")
class ADMUNet(nn.Module):
    """The ADM U-Net of guided-diffusion / DPS, built from the release's ``create_model`` flags (the defaults are
    ``create_model``'s; the released priors' flags are ``ADM_RELEASES[name]['constructor']``).

    Args:
        image_size: the training image side; with ``channel_mult=""`` it picks the widths, and the
            attention levels are those whose feature-map side (image_size / 2^level) is in ``attention_resolutions``.
            Inputs of other sizes work when their sides are multiples of ``size_multiple``.
        num_channels: the base width C (level widths are C * multiplier; the time embedding is 4C wide).
        num_res_blocks: residual blocks per encoder level (the decoder has one more per level).
        channel_mult: width multipliers per level: ``""`` (release default for ``image_size``), ``"1,1,2,2,4,4"`` or
            a sequence.
        learn_sigma: 6 output channels (eps, then the variance interpolation v) instead of 3 (eps).
        class_cond: add a learned embedding of an ImageNet class label (``forward(x, t, y)``).
        use_checkpoint: gradient checkpointing; only False is supported.
        attention_resolutions: feature-map sides with self-attention: ``16``, ``"32,16,8"`` or a sequence.
        num_heads: attention heads, when ``num_head_channels`` is -1.
        num_head_channels: channels per attention head (heads = width / this); -1 uses ``num_heads``.
        num_heads_upsample: heads in the decoder's attention when ``num_head_channels`` is -1 (-1: ``num_heads``).
        use_scale_shift_norm: condition residual blocks by GN(h)(1 + scale) + shift (AdaGN) instead of adding.
        dropout: dropout before each residual block's last conv.
        resblock_updown: resample with residual blocks instead of a strided conv / nearest + conv.
        use_fp16: half-precision body; only False is supported (the network runs in fp32).
        use_new_attention_order: qkv channels as [all q, all k, all v] instead of per head [q, k, v].
    """

    def __init__(self, image_size: int, num_channels: int, num_res_blocks: int,
                 channel_mult: Union[str, Sequence[float]] = "", learn_sigma: bool = False, class_cond: bool = False,
                 use_checkpoint: bool = False, attention_resolutions: Union[int, str, Sequence[int]] = "16",
                 num_heads: int = 1, num_head_channels: int = -1, num_heads_upsample: int = -1,
                 use_scale_shift_norm: bool = False, dropout: float = 0.0, resblock_updown: bool = False,
                 use_fp16: bool = False, use_new_attention_order: bool = False):
        super().__init__()
        if use_checkpoint:
            raise ValueError("ADMUNet: use_checkpoint=True (gradient checkpointing) is not supported; use False "
                             "(the released weights do not depend on it)")
        if use_fp16:
            raise ValueError("ADMUNet: use_fp16=True is not supported; the network runs in fp32 (the released "
                             "weights load the same)")
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        mults = parse_channel_mult(channel_mult, image_size)
        attention_sides = parse_attention_resolutions(attention_resolutions)
        self.image_size, self.model_channels = image_size, num_channels
        self.channel_mult, self.attention_resolutions = mults, attention_sides
        self.out_channels = 6 if learn_sigma else 3
        self.num_classes = NUM_CLASSES if class_cond else None
        self.size_multiple = 2 ** (len(mults) - 1)
        attention_ds = {image_size // side for side in attention_sides}   # the release's test: ds in image_size // res
        emb_channels = 4 * num_channels
        legacy = not use_new_attention_order

        def attention(width: int, heads: int) -> AttentionBlock:
            return AttentionBlock(width, heads, num_head_channels, legacy_order=legacy)

        def res_block(width_in: int, width_out: int, **resample) -> ResBlock:
            return ResBlock(width_in, emb_channels, dropout, width_out, use_scale_shift_norm, **resample)

        self.time_embed = nn.Sequential(nn.Linear(num_channels, emb_channels), nn.SiLU(),
                                        nn.Linear(emb_channels, emb_channels))
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, emb_channels)

        width = int(mults[0] * num_channels)
        self.input_blocks = nn.ModuleList([EmbeddedSequence([nn.Conv2d(3, width, 3, padding=1)])])
        skip_widths, ds = [width], 1
        for level, mult in enumerate(mults):
            for _ in range(num_res_blocks):
                layers = [res_block(width, int(mult * num_channels))]
                width = int(mult * num_channels)
                if ds in attention_ds:
                    layers.append(attention(width, num_heads))
                self.input_blocks.append(EmbeddedSequence(layers))
                skip_widths.append(width)
            if level != len(mults) - 1:
                down = res_block(width, width, down=True) if resblock_updown else Downsample(width)
                self.input_blocks.append(EmbeddedSequence([down]))
                skip_widths.append(width)
                ds *= 2

        self.middle_block = EmbeddedSequence([res_block(width, width), attention(width, num_heads),
                                              res_block(width, width)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(width + skip_widths.pop(), int(mult * num_channels))]
                width = int(mult * num_channels)
                if ds in attention_ds:
                    layers.append(attention(width, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res_block(width, width, up=True) if resblock_updown else Upsample(width))
                    ds //= 2
                self.output_blocks.append(EmbeddedSequence(layers))

        self.out = nn.Sequential(group_norm(width), nn.SiLU(),
                                 zeroed(nn.Conv2d(int(mults[0] * num_channels), self.out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: Union[torch.Tensor, int, float],
                y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """eps (and v, with ``learn_sigma``) for images ``x`` (N, 3, H, W) in [-1, 1] at steps ``t`` (a number or
        (N,) tensor; integer steps for the releases); ``y`` (N,) class labels for a class-conditional model."""
        if x.shape[-1] % self.size_multiple or x.shape[-2] % self.size_multiple:
            raise ValueError(f"ADMUNet: input sides {tuple(x.shape[-2:])} must be multiples of {self.size_multiple} "
                             f"(the network halves them {len(self.channel_mult) - 1} times)")
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("ADMUNet: give class labels y exactly when the model is class-conditional")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def load_adm(path: Union[str, Path], **constructor) -> ADMUNet:
    """An ADMUNet built from ``constructor`` (the release's flags, e.g. ``ADM_RELEASES['ffhq_10m']['constructor']``)
    holding the weights of ``path``, a plain state dict read with ``torch.load(weights_only=True)`` on the CPU (no
    pickled code runs), in eval mode.  Keys and shapes must agree exactly; otherwise, or when the file is missing,
    unreadable, not a plain state dict or holds NaN/Inf, a one-line ``CheckpointError`` names the file and what
    differs.  The network is built on the meta device and takes the file's tensors (as fp32), so the weights are
    held in memory once."""
    path = Path(path)
    payload = load_torch_file(path, "ADM weights")
    if not isinstance(payload, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in payload.items()):
        if isinstance(payload, dict):
            entries = ", ".join(str(k) for k, v in payload.items() if not torch.is_tensor(v))
            what = f"a dict with entries that are not tensors: {entries[:120]}"
        else:
            what = f"a {type(payload).__name__}"
        raise CheckpointError(f"ADM weights '{path}' are not a plain state dict of tensors (found {what})")
    with torch.device("meta"):
        network = ADMUNet(**constructor)
    diff = describe_mismatch(network.state_dict(), payload)
    if diff:
        flags = ", ".join(f"{k}={constructor[k]!r}" for k in ("num_channels", "num_res_blocks", "channel_mult",
                                                               "attention_resolutions") if k in constructor)
        raise CheckpointError(f"ADM weights '{path}' do not fit ADMUNet({flags}): {diff}")
    network.load_state_dict(own_storage_fp32(payload), strict=True, assign=True)
    return network.eval()


def own_storage_fp32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as fp32 tensors that each own their storage: a file whose tensors are views of one storage
    would otherwise leave the network's parameters aliasing each other (``load_state_dict(assign=True)`` takes
    the tensors as they are); a plain release keeps its tensors without a copy."""
    users: dict[int, int] = {}
    for tensor in state.values():
        if tensor.numel():
            ptr = tensor.untyped_storage().data_ptr()
            users[ptr] = users.get(ptr, 0) + 1
    out = {}
    for key, tensor in state.items():
        tensor = tensor.to(torch.float32)
        shared = tensor.numel() and (users.get(tensor.untyped_storage().data_ptr(), 0) > 1
                                     or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size())
        out[key] = tensor.clone(memory_format=torch.contiguous_format) if shared else tensor
    return out
