"""Recognising IR-SDE weights (the card's detector ``conditional_unet``): a few keys give the noise
network's hyper-parameters, and the network built from them must have exactly the file's keys and shapes
(``osir.core.recognition.verify``).  What the weights cannot tell (lambda, T, the sampler) is the
irsde-deraining release's (``releases/irsde-deraining.yml``)."""
from __future__ import annotations

from pathlib import Path

from osir.core.recognition import NoMatch, Recognized, levels, need, release_settings, release_tile, verify

#: the release whose settings are assumed for weights that cannot tell them
DEFAULT_RELEASE = "irsde-deraining"


def conditional_unet(state: dict, path: Path) -> Recognized:
    """IR-SDE's noise network (``ConditionalUNet``)."""
    need(state, "init_conv.weight", "time_mlp.1.weight", "final_conv.weight")
    conditioning = [k for k in state
                    if k.startswith(("prompt", "text_mlp.", "downsample.")) or "transformer_blocks" in k]
    if conditioning:
        raise NoMatch(f"it has DA-CLIP conditioning keys ({conditioning[0]}, ...)")
    init = state["init_conv.weight"]
    if init.ndim != 4 or tuple(init.shape[-2:]) != (7, 7):
        raise NoMatch(f"init_conv.weight is {tuple(init.shape)}, not a 7x7 convolution")
    depth = len(levels(state, "downs."))
    attn = [i for i in range(depth) if f"downs.{i}.2.fn.fn.to_qkv.weight" in state]
    attn += [depth] if "mid_attn.fn.fn.to_qkv.weight" in state else []
    hp = {"in_nc": init.shape[1] // 2, "out_nc": state["final_conv.weight"].shape[0], "nf": init.shape[0],
          "depth": depth, "attn_levels": None if attn == list(range(depth + 1)) else attn}
    verify("ConditionalUNet", hp, state)
    settings = release_settings(DEFAULT_RELEASE)
    settings = {"max_sigma": settings.pop("max_sigma"), **settings}     # lambda first, as restore's note shows it
    return Recognized("IRSDE", "ConditionalUNet", hp, "g", state, "osir", str(path),
                      settings=settings, tile=release_tile("IRSDE"),
                      settings_source=f"not in the weights: IR-SDE's deraining release values (--model "
                                      f"{DEFAULT_RELEASE}); the other releases differ (osir restore --list-models)")
