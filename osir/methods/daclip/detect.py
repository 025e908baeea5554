"""Recognising DA-CLIP weights (the card's detectors ``daclip_unet`` and ``daclip_vit``): the universal /
wild IR noise network is read from a few keys and must rebuild with exactly the file's keys and shapes
(``osir.core.recognition.verify``); the DA-CLIP model's CLIP configuration is read from its shapes
(``clip_config``) and named after the open_clip model with those shapes (``open_clip_name``).  What the
weights cannot tell (lambda, T, the sampler, the CLIP) is the daclip-uir / wild-ir release's
(``releases/*.yml``)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

from osir.core.recognition import Recognized, NoMatch, indices, levels, need, release_settings, verify

#: the releases whose settings are assumed for weights that cannot tell them (wild IR: a 768-wide context)
UNIVERSAL_RELEASE, WILD_RELEASE = "daclip-uir", "wild-ir"
WILD_CONTEXT = 768                   # ViT-L-14's embedding width, the wild IR release's context


def daclip_unet(state: dict, path: Path) -> Recognized:
    """DA-CLIP's universal-IR noise network (and wild IR's half-resolution one), ``DACLIPUNet``."""
    need(state, "init_conv.weight", "time_mlp.1.weight", "final_conv.weight")
    degra = "prompt" in state
    cross_key = re.compile(r"downs\.(\d+)\.2\.fn\.fn\.transformer_blocks\.")
    cross = sorted({int(m.group(1)) for k in state if (m := cross_key.match(k))})
    image = cross != [] or any(k.startswith("mid_attn.fn.fn.transformer_blocks.") for k in state)
    half = "downsample.weight" in state
    if not (degra or image or half):
        raise NoMatch("no DA-CLIP conditioning (prompt, cross-attention) and no half-resolution keys")
    init = state["init_conv.weight"]
    nf = init.shape[0]
    found = levels(state, "downs.")
    need(state, *[f"downs.{i}.3.weight" for i in found])
    if degra:
        need(state, "text_mlp.0.weight")
        context = state["text_mlp.0.weight"].shape[1]
    else:
        key = next((k for k in state if k.endswith("attn2.to_k.weight")), None)
        context = state[key].shape[1] if key else 512
    hp = {"in_nc": init.shape[1] // 2, "out_nc": state["final_conv.weight"].shape[0], "nf": nf,
          "ch_mult": [state[f"downs.{i}.3.weight"].shape[0] // nf for i in found], "context_dim": context,
          "use_degra_context": degra, "use_image_context": image,
          "cross_attention_levels": cross or [len(found) - 1], "scale": 0.5 if half else 1.0}
    verify("DACLIPUNet", hp, state)
    wild = context == WILD_CONTEXT
    release = WILD_RELEASE if wild else UNIVERSAL_RELEASE
    needs = {}
    if degra or image:
        settings = release_settings(release)        # with the release's CLIP (and wild IR's 20 steps)
        needs["daclip_path"] = (f"the network is conditioned on DA-CLIP's embeddings: give the DA-CLIP weights "
                                f"({'wild-daclip_ViT-L-14.pt' if wild else 'daclip_ViT-B-32.pt'} or a stage-1 run's "
                                "net_daclip_*.safetensors)")
    else:            # no DA-CLIP embeddings: the universal release's SDE, without its CLIP
        settings = {**release_settings(UNIVERSAL_RELEASE, without=("clip_model", "sample_steps")), "use_daclip": False}
    return Recognized("DACLIPUIR", "DACLIPUNet", hp, "g", state, "osir", str(path), settings=settings, needs=needs,
                      settings_source=f"not in the weights: the release's values (--model {release})")


def daclip_vit(state: dict, path: Path) -> Recognized:
    """DA-CLIP's CLIP with its controller (the release's daclip_ViT-*.pt, or an osir stage-1 run's weights)."""
    need(state, "visual_control.conv1.weight", "visual_control.transformer.zero_modules.0.weight")
    hp = {"controller_layers": len(indices(state, "visual_control.transformer.zero_modules."))}
    settings: dict = {}
    notes = []
    if "clip.visual.conv1.weight" in state:         # the whole model: the CLIP's shapes give its config
        config = clip_config(state)
        hp.update(config)
        name = open_clip_name(config)
        if name:
            settings["clip_model"] = name
            notes.append(f"the shapes are open_clip's {name}")
        else:
            settings["clip_config"] = config
            notes.append("no open_clip model has these shapes: clip_config is read from them; attention heads are "
                         "not in the weights (open_clip's defaults: head_width 64, text heads 8)")
        if path.suffix != ".safetensors":       # the release file, loaded by the method; osir's: path.pretrained
            settings["release_path"] = str(path)
    else:
        notes.append("the controller only (a stage-1 run with a CLIP file): the CLIP comes from its clip_checkpoint")
    return Recognized("DACLIP", None, hp, "daclip", state, "osir", str(path), settings=settings,
                      notes=notes + ["DA-CLIP recognises degradations; it restores nothing itself (DACLIPUIR uses it "
                                     "as method.daclip_path)"], network_option=None)


def clip_config(state: dict) -> dict:
    """open_clip's CLIP config from a DA-CLIP state dict's shapes (heads cannot be read)."""
    conv = state["clip.visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = math.isqrt(state["clip.visual.positional_embedding"].shape[0] - 1)
    mlp = state["clip.visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width
    tokens = state["clip.token_embedding.weight"]
    return {"embed_dim": state["clip.visual.proj"].shape[1],
            "vision_cfg": {"image_size": grid * patch, "patch_size": patch, "width": width, "mlp_ratio": mlp,
                           "layers": len(indices(state, "clip.visual.transformer.resblocks."))},
            "text_cfg": {"context_length": state["clip.positional_embedding"].shape[0], "vocab_size": tokens.shape[0],
                         "width": tokens.shape[1], "layers": len(indices(state, "clip.transformer.resblocks."))}}


def open_clip_name(config: dict) -> Optional[str]:
    """The open_clip model name whose config has these shapes (the plain names first)."""
    import open_clip

    def shapes(cfg):
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if not isinstance(v.get("image_size", 224), int) or "timm_model_name" in v or "hf_model_name" in t:
            return None
        return (cfg.get("embed_dim"), v.get("image_size", 224), v.get("patch_size", 16), v.get("width", 768),
                float(v.get("mlp_ratio", 4.0)), v.get("layers", 12), t.get("context_length", 77),
                t.get("vocab_size", 49408), t.get("width", 512), t.get("layers", 12))

    wanted = shapes(config)
    names = [n for n in open_clip.list_models() if shapes(open_clip.get_model_config(n) or {}) == wanted]
    preferred = [n for n in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14") if n in names]
    return (preferred or sorted(names, key=len) or [None])[0]
