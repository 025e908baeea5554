"""LoRA for OSEDiff (Wu et al., "One-Step Effective Diffusion Network for Real-World Image
Super-Resolution", NeurIPS 2024) through peft: which modules of Stable Diffusion 2.1-base's VAE
encoder and UNet get rank-4 LoRA, and the UNet's split into three named adapters as in the release's
``osediff.pkl`` (``default_encoder``: down blocks + conv_in, ``default_decoder``: up blocks + conv_out,
``default_others``: the rest), all active at once.

The targets are the convolutions and linear projections of residual blocks, samplers, attention
(q, k, v, out), transformer projections (proj_in / proj_out) and feed-forward layers, plus conv_in /
conv_out; never time embeddings or normalisation layers.  In the VAE only the encoder and quant_conv.
"""
from __future__ import annotations

from torch import nn

#: last name parts of the targeted layers
_TARGET_NAMES = {"conv", "conv1", "conv2", "conv_shortcut", "conv_in", "conv_out", "proj_in", "proj_out",
                 "to_q", "to_k", "to_v"}
#: dotted endings of the targeted layers
_TARGET_ENDINGS = ("to_out.0", "ff.net.0.proj", "ff.net.2")
#: the transformer layers among them (the UNet's; SD's VAE has none)
_TRANSFORMER_TARGETS = ("proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
#: the name patterns that select the VAE's targets: the 10 of osir's patterns a VAE layer can carry
VAE_PATTERNS = tuple(sorted((_TARGET_NAMES | set(_TARGET_ENDINGS)) - set(_TRANSFORMER_TARGETS)))
UNET_ADAPTERS = ("default_encoder", "default_decoder", "default_others")
VAE_ADAPTER = "default_encoder"


def _is_target(name: str, module: nn.Module) -> bool:
    if not isinstance(module, (nn.Conv2d, nn.Linear)) or "time_emb" in name or "norm" in name:
        return False
    return name.rsplit(".", 1)[-1] in _TARGET_NAMES or name.endswith(_TARGET_ENDINGS)


def vae_targets(vae: nn.Module) -> list[str]:
    """LoRA targets of the VAE: its encoder's layers and quant_conv (the decoder stays frozen as is)."""
    return [n for n, m in vae.named_modules()
            if (n.startswith("encoder.") and _is_target(n, m)) or (n == "quant_conv" and isinstance(m, nn.Conv2d))]


def release_vae_list(modules: list[str]) -> list[str]:
    """``vae_lora_encoder_modules`` as the release's ``osediff.pkl`` holds it, for the VAE targets
    ``modules`` (in module order): the release lists a module once for every pattern of
    ``VAE_PATTERNS`` its name contains (``encoder.conv_in`` holds 'conv_in' and 'conv': twice) and
    ``quant_conv``, which it selects by a separate test made once per pattern, once for every pattern:
    65 entries for SD 2.1-base's 32 modules.  peft builds one LoRA layer per distinct name, so the
    repeats change nothing but the list."""
    out = []
    for name in modules:
        count = len(VAE_PATTERNS) if name == "quant_conv" else sum(p in name for p in VAE_PATTERNS)
        out += [name] * max(count, 1)
    return out


def unet_targets(unet: nn.Module) -> dict[str, list[str]]:
    """LoRA targets of the UNet, split into the release's three adapters."""
    groups = {name: [] for name in UNET_ADAPTERS}
    for n, m in unet.named_modules():
        if not _is_target(n, m):
            continue
        if n.startswith("down_blocks") or n == "conv_in":
            groups["default_encoder"].append(n)
        elif n.startswith("up_blocks") or n == "conv_out":
            groups["default_decoder"].append(n)
        else:
            groups["default_others"].append(n)
    return groups


def add_lora(model: nn.Module, targets: dict[str, list[str]], rank: int = 4, alpha: float = 8.0) -> nn.Module:
    """Inject one peft LoRA adapter per entry of ``targets`` (Gaussian A, zero B, scale alpha / rank) and
    make all of them active together; only the LoRA weights require gradients."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer
    for adapter, modules in targets.items():
        config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=modules)
        inject_adapter_in_model(config, model, adapter_name=adapter)
    names = list(targets)
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.set_adapter([a for a in names if a in module.lora_A])
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return model


def merge_and_unload(model: nn.Module, adapters: tuple[str, ...]) -> nn.Module:
    """Merge ``adapters`` (where a layer has them) into each LoRA layer's base weights and put the
    plain base layer back in its place, dropping every other adapter (peft's ``merge`` per layer;
    peft's own unload needs a PeftModel, which these injected adapters are not)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        wanted = [a for a in adapters if a in layer.lora_A]
        if wanted:
            layer.merge(adapter_names=wanted)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())
    model.requires_grad_(False)
    return model
