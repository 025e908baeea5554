"""DA-CLIP (Luo et al., "Controlling Vision-Language Models for Multi-Task Image Restoration", ICLR 2024)
as a wrapper around stock open_clip (3.x): nothing of open_clip is copied or patched.

A frozen CLIP gives the *content* embedding; a *controller*, a trainable copy of the image tower, gives
the *degradation* embedding and steers the frozen tower: the controller's block j output, through a
zero-initialised Linear(width, width) (with bias, on every token), is added to the frozen tower's
stream after its block L-1-j (so the last addition, from controller block 0, comes after the frozen
tower's last block, before ``ln_post``).  Both towers pool the class token, then ``ln_post``, then the
projection; the embeddings are returned unnormalised.  The controller starts as an exact copy of the
image tower with zero linears, so at initialisation the content embedding equals plain CLIP's.  This
differs from the release, as a fix: its ``initial_controller`` pairs the two towers' parameter lists in
order, which the controller's extra zero linears shift, so the frozen tower's ``ln_post`` gain and bias
are copied into the first zero linear (the gain broadcast over its rows) and the controller's own
``ln_post`` keeps its construction-time values (1, 0); its content embedding at the start is then not
plain CLIP's (checked by running the release's code on a small CLIP).

Module names follow the release file ``daclip_ViT-B-32.pt`` (``clip.*``; ``visual.*``, an alias of
``clip.visual``; ``visual_control.*`` with ``transformer.transformer.resblocks.*`` and
``transformer.zero_modules.*``; ``logit_scale``), so it loads, and saves, as released.
"""
from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from torch import nn

from osir.core.checkpoint import CheckpointError, describe_mismatch, load_torch_file, torch_load_reason


def image_tokens(tower: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The token sequence entering a ViT's blocks (B x 1 + grid^2 x width, batch first): patch embedding,
    class token, positional embedding, ``ln_pre`` (open_clip's VisionTransformer attributes)."""
    x = tower.conv1(image.to(tower.conv1.weight.dtype)).flatten(2).transpose(1, 2)
    cls = tower.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + tower.positional_embedding.to(x.dtype)
    return tower.ln_pre(x)


def pooled_embedding(tower: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class token -> ``ln_post`` -> projection."""
    return tower.ln_post(x[:, 0]) @ tower.proj


class ControlBlocks(nn.Module):
    """The controller's blocks (``transformer``: a copy of open_clip's Transformer) and one zero-initialised
    Linear per block (``zero_modules``)."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = copy.deepcopy(transformer)
        width = self.transformer.resblocks[0].ln_1.normalized_shape[0]
        self.zero_modules = nn.ModuleList(nn.Linear(width, width) for _ in self.transformer.resblocks)
        for linear in self.zero_modules:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the controller's last hidden state, each block's output through its zero linear)."""
        controls = []
        for block, zero in zip(self.transformer.resblocks, self.zero_modules):
            x = block(x)
            controls.append(zero(x))
        return x, controls


class Controller(nn.Module):
    """A trainable copy of an open_clip ``VisionTransformer`` (patch / class / positional embedding,
    ``ln_pre``, blocks, ``ln_post``, ``proj``) with zero linears after its blocks."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        for name in ("conv1", "ln_pre", "ln_post"):
            setattr(self, name, copy.deepcopy(getattr(visual, name)))
        for name in ("class_embedding", "positional_embedding", "proj"):
            setattr(self, name, nn.Parameter(getattr(visual, name).detach().clone()))
        self.transformer = ControlBlocks(visual.transformer)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the degradation embedding, the controls for the frozen tower)."""
        x, controls = self.transformer(image_tokens(self, image))
        return pooled_embedding(self, x), controls


class DACLIP(nn.Module):
    """DA-CLIP around an open_clip ``CLIP`` (frozen): ``encode_image(image) -> (content, degradation)``."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip
        self.visual = clip.visual                       # the release's alias (duplicate keys)
        self.visual_control = Controller(clip.visual)
        self.logit_scale = nn.Parameter(clip.logit_scale.detach().clone())
        self.clip.requires_grad_(False)

    def encode_image(self, image: torch.Tensor, control: bool = True):
        """(content, degradation) embeddings, unnormalised; ``control=False``: plain CLIP's image
        embedding (no degradation embedding)."""
        visual = self.clip.visual
        x = image_tokens(visual, image)
        if not control:
            for block in visual.transformer.resblocks:
                x = block(x)
            return pooled_embedding(visual, x), None
        degradation, controls = self.visual_control(image)
        for block in visual.transformer.resblocks:
            x = block(x) + controls.pop()
        return pooled_embedding(visual, x), degradation

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(image)


def build_clip(model_name: str, checkpoint: Optional[str] = None, **overrides) -> nn.Module:
    """An open_clip model of ``model_name`` (e.g. 'ViT-B-32'), random or from a local checkpoint file
    (open_clip's own loader; nothing is downloaded)."""
    import open_clip
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CheckpointError(f"CLIP checkpoint not found: '{checkpoint}'")
    try:
        return open_clip.create_model(model_name, pretrained=checkpoint, **overrides)
    except (RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError) as err:
        if checkpoint is None:
            raise
        raise CheckpointError(f"cannot load the CLIP checkpoint '{checkpoint}' into open_clip's {model_name}: "
                              f"{torch_load_reason(err)}") from None   # truncated, not weights-only, another model


def load_release(model: DACLIP, path: str | Path) -> None:
    """Load ``daclip_ViT-B-32.pt`` as released (a plain state dict, read with weights_only); other keys or
    shapes are refused, naming them."""
    state = load_torch_file(path, "DA-CLIP checkpoint")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    diff = describe_mismatch(model.state_dict(), state)
    if diff:
        raise CheckpointError(f"'{path}' is not a DA-CLIP checkpoint of this architecture: {diff}")
    model.load_state_dict(state, strict=True)
