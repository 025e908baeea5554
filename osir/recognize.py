"""Checkpoint recognition: the osir method, network and hyper-parameters of a weights file, read from its
keys and shapes alone (``recognize``).  ``python -m osir.recognize W.pth`` prints them; ``--convert
out.safetensors`` writes the weights in osir's layout with a model card next to them.

RRDBNet files (Real-ESRGAN / Real-ESRNet / ESRGAN in the old or the new key layout, bare or under
``params_ema`` / ``params``) are recognised by spandrel and mapped to osir's ``RRDBNet`` (basicsr's).  The
networks spandrel does not know, IR-SDE's ``ConditionalUNet``, Refusion's ``ConditionalNAFNet``, latent
Refusion's ``CompressionUNet``, DA-CLIP's ``DACLIPUNet`` (universal / wild IR), the DA-CLIP ViT and
OSEDiff's ``osediff.pkl``, are recognised by osir: a few keys give the hyper-parameters, and the network
built from them (on the meta device, so nothing is allocated) must have exactly the file's keys and shapes.
What weights cannot tell (IR-SDE's lambda, T, the sampler, ...) comes from the run's ``options.yml`` when
the file sits in an osir run's ``models/`` folder, else from the release settings (``options/*.yml``).
Files are read without executing pickled code.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from osir.engine.checkpoint import CheckpointError, describe_mismatch, read_weights_file, unwrap_state_dict
from osir.registry import OptionsError

__all__ = ["Recognized", "recognize", "main"]


@dataclass
class Recognized:
    """What ``recognize`` found in a weights file."""

    method: str                       # osir method registry name ("RealESRGAN", "IRSDE", "Refusion", ...)
    arch: Optional[str]               # osir arch registry name of the network; None: not one arch network
    hyper_parameters: dict            # the arch's constructor options (for arch None: what the file tells)
    network: str                      # the method's network these weights belong to ("g", "l", "daclip", ...)
    state_dict: dict                  # tensors keyed as osir's network expects (official layouts converted)
    detector: str                     # "spandrel" or "osir"
    path: str
    settings: dict = field(default_factory=dict)    # method options besides the network (release / run values)
    needs: dict = field(default_factory=dict)       # method options only the user can give -> why
    notes: list = field(default_factory=list)       # hyper-parameters the weights cannot tell, conversions
    settings_source: str = ""                        # where ``settings`` come from (release options file / run)
    run_options: Optional[dict] = None               # the osir run's options.yml, when the file sits in its models/
    converted: bool = False           # the file's keys differ from osir's: load ``state_dict``, not the file
    network_option: Optional[str] = "network"       # the method option holding the arch spec

    def build_network(self) -> torch.nn.Module:
        """The arch built from ``hyper_parameters`` with ``state_dict`` loaded strictly, in eval mode."""
        if self.arch is None:
            need = f" (it needs {', '.join(self.needs)})" if self.needs else ""
            raise OptionsError(f"'{self.path}' holds {self.method} weights, not one network: build the method "
                               f"with build_method(recognized.method_options(...)){need}")
        from osir.registry import ARCHS
        net = ARCHS.build({"type": self.arch, **self.hyper_parameters}, f"{self.arch}")
        diff = describe_mismatch(net.state_dict(), self.state_dict)
        if diff:
            raise CheckpointError(f"'{self.path}' does not fit {self.arch}({self.hyper_parameters}): {diff}")
        net.load_state_dict(self.state_dict, strict=True)
        return net.eval()

    def method_options(self, pretrained: bool = True, **method_options) -> dict:
        """A resolved options tree (``osir.options.Options``) that ``build_method`` builds for inference:
        the method with its network spec and ``settings``, ``method_options`` on top (e.g.
        ``sd_path=...`` for OSEDiff, ``daclip_path=...`` for DA-CLIP universal IR).  With ``pretrained``,
        ``path.pretrained`` names the file when it loads as it is (otherwise load ``state_dict`` into
        ``method.networks[network]``, see ``load_into``).  A needed option that is not given is an
        ``OptionsError`` naming it."""
        from osir.options import Options, validate
        missing = [k for k in self.needs if method_options.get(k) is None]
        if missing:
            raise OptionsError("; ".join(f"method.{k}: {self.needs[k]}" for k in missing))
        method = {"type": self.method, **self.settings}
        if self.arch is not None and self.network_option:
            method[self.network_option] = {"type": self.arch, **self.hyper_parameters}
        method.update(method_options)
        # files the method loads itself (release_path: osediff.pkl, daclip_ViT-*.pt) are not path.pretrained
        by_path = pretrained and not self.converted and self.settings.get("release_path") != self.path
        files = {self.network: self.path} if by_path else {}
        raw = {"name": f"recognized_{Path(self.path).stem}", "method": method,
               "path": {"pretrained": files, "strict_load": True}}
        tile = TILES.get(self.method)
        if tile:
            raw["tile"] = dict(tile)
        return validate(raw, Options)

    def load_into(self, method) -> None:
        """Load ``state_dict`` strictly into ``method.networks[network]`` (for converted layouts, whose file
        ``path.pretrained`` cannot name)."""
        net = method.networks[self.network]
        diff = describe_mismatch(net.state_dict(), self.state_dict)
        if diff:
            raise CheckpointError(f"'{self.path}' does not fit network '{self.network}': {diff}")
        net.load_state_dict(self.state_dict, strict=True)

    def describe(self) -> str:
        lines = [f"file:     {self.path}", f"method:   {self.method}", f"arch:     {self.arch or '-'}",
                 f"network:  {self.network}", f"detector: {self.detector}", "hyper-parameters:"]
        lines += [f"  {k}: {v}" for k, v in self.hyper_parameters.items()]
        if self.settings:
            lines.append(f"method settings ({self.settings_source or 'release defaults'}):")
            lines += [f"  {k}: {v}" for k, v in self.settings.items()]
        if self.needs:
            lines.append("needs:")
            lines += [f"  {k}: {v}" for k, v in self.needs.items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


class _NoMatch(Exception):
    """A candidate does not fit the file (the message says why)."""


# Tiling the options files set for inference (LQ pixels): options/realesrnet.yml, options/test/irsde.yml.
TILES = {"RealESRGAN": {"size": 512, "overlap": 32}, "IRSDE": {"size": 1024, "overlap": 64}}

# What the weights cannot tell, as released.  IR-SDE (options/irsde/_base.yml, the release's train.yml):
# T 100, cosine schedule, eps 0.005, posterior sampling; lambda (max_sigma) depends on the task: 10 for
# deraining / deblurring / SR (the default here), 30 inpainting, 70 denoising.
IRSDE_SETTINGS = {"max_sigma": 10, "T": 100, "schedule": "cosine", "eps": 0.005, "sampler": "posterior"}
# Refusion (options/refusion/_base.yml, the release's train.yml): lambda 50, T 100, cosine, eps 0.005, reverse SDE.
REFUSION_SETTINGS = {"max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005, "sampler": "sde"}
# DA-CLIP universal IR (options/daclip_uir.yml): lambda 50, T 100, posterior sampling, DA-CLIP on ViT-B-32;
# wild IR (options/wild_ir.yml): the same with ViT-L-14 and 20 sampling steps.
DACLIP_UIR_SETTINGS = {"max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005, "sampler": "posterior"}


# ----------------------------------------------------------------------------- reading
def _read(path: Path):
    """(payload, state dict of tensors or None, notes): the file as read, and its tensors unwrapped
    (``osir.engine.checkpoint.unwrap_state_dict``); osediff.pkl's payload has non-tensor entries too."""
    if not path.is_file():
        raise CheckpointError(f"weights file not found: '{path}'")
    payload = read_weights_file(path)
    state, notes = unwrap_state_dict(payload)
    return payload, (state or None), notes


def _indices(state: dict, prefix: str) -> list[int]:
    """The distinct integers following ``prefix`` in the keys (``downs.`` -> [0, 1, 2, 3])."""
    found = set()
    for key in state:
        if key.startswith(prefix):
            head = key[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def _need(state: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise _NoMatch(f"no {', '.join(repr(k) for k in missing)}")


def _verify(arch: str, hp: dict, state: dict) -> None:
    """The arch built from ``hp`` on the meta device has exactly the keys and shapes of ``state``."""
    from osir.registry import ARCHS
    try:
        with torch.device("meta"):
            net = ARCHS.build({"type": arch, **hp}, arch)
    except (ValueError, TypeError, RuntimeError) as err:
        raise _NoMatch(f"the hyper-parameters read from the keys ({hp}) do not build: {err}") from None
    diff = describe_mismatch(net.state_dict(), state, limit=3)
    if diff:
        raise _NoMatch(f"keys read as {hp} but {diff}")


def _levels(state: dict, prefix: str) -> list[int]:
    levels = _indices(state, prefix)
    if levels != list(range(len(levels))) or not levels:
        raise _NoMatch(f"no consecutive '{prefix}<level>' keys")
    return levels


# ----------------------------------------------------------------------------- candidates
def _rrdbnet(state: dict, path: Path) -> Recognized:
    """RRDBNet through spandrel's ESRGAN architecture (old / new / BSRGAN key layouts)."""
    import spandrel
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise _NoMatch("spandrel recognises no architecture in these keys") from None
    except Exception as err:   # an architecture's keys matched but its loading failed
        raise _NoMatch(f"spandrel failed to load it: {type(err).__name__}: {_first_line(err)}") from None
    arch_id = descriptor.architecture.id
    if arch_id != "ESRGAN":
        raise _NoMatch(f"spandrel recognises {descriptor.architecture.name} ({', '.join(descriptor.tags)}), "
                       "which no osir method runs")
    spandrel_hp = descriptor.model.hyperparameters     # in_nc, out_nc, num_filters, num_blocks, scale, plus, ...
    if spandrel_hp["plus"]:
        raise _NoMatch("spandrel recognises ESRGAN+ (conv1x1 in the dense blocks), which osir's RRDBNet is not")
    if spandrel_hp["scale"] != 4:
        raise _NoMatch(f"spandrel recognises an ESRGAN with x{spandrel_hp['scale']} upsampling convolutions; osir's "
                       "RRDBNet (basicsr) always upsamples x4 (x2 / x1 through pixel-unshuffle)")
    spandrel_state = descriptor.model.state_dict()
    # basicsr's RRDBNet: pixel-unshuffle for x2 / x1 inside (conv_first takes 4x / 16x the channels); spandrel's
    # descriptor gives the image channels and the overall scale
    hp = {"num_in_ch": descriptor.input_channels, "num_out_ch": descriptor.output_channels, "scale": descriptor.scale,
          "num_feat": spandrel_hp["num_filters"], "num_block": spandrel_hp["num_blocks"],
          "num_grow_ch": 32}   # spandrel's RRDB has a fixed growth of 32 channels (a file with another fails there)
    from osir.registry import ARCHS
    with torch.device("meta"):
        expected = ARCHS.build({"type": "RRDBNet", **hp}, "RRDBNet").state_dict()
    converted = bool(describe_mismatch(expected, state))
    if converted:   # old-arch keys (model.0, model.1.sub.*): the same tensors in basicsr's module order
        tensors = list(spandrel_state.values())
        pairs = list(zip(expected.items(), tensors))
        if len(tensors) != len(expected) or any(e.shape != t.shape for (_, e), t in pairs):
            raise _NoMatch(f"spandrel's ESRGAN {hp} does not map onto basicsr's RRDBNet tensor by tensor")
        state = {k: t for (k, _), t in pairs}
    return Recognized("RealESRGAN", "RRDBNet", hp, "g", state, "spandrel", str(path),
                      settings={"scale": hp["scale"]}, converted=converted,
                      settings_source="scale from the weights; L1 only at inference, no loss networks needed",
                      notes=[f"spandrel: {descriptor.architecture.name} ({', '.join(descriptor.tags)})"]
                      + (["old ESRGAN key layout converted to basicsr's RRDBNet keys"] if converted else []))


def _conditional_unet(state: dict, path: Path) -> Recognized:
    """IR-SDE's noise network."""
    _need(state, "init_conv.weight", "time_mlp.1.weight", "final_conv.weight")
    conditioning = [k for k in state
                    if k.startswith(("prompt", "text_mlp.", "downsample.")) or "transformer_blocks" in k]
    if conditioning:
        raise _NoMatch(f"it has DA-CLIP conditioning keys ({conditioning[0]}, ...)")
    init = state["init_conv.weight"]
    if init.ndim != 4 or tuple(init.shape[-2:]) != (7, 7):
        raise _NoMatch(f"init_conv.weight is {tuple(init.shape)}, not a 7x7 convolution")
    depth = len(_levels(state, "downs."))
    attn = [i for i in range(depth) if f"downs.{i}.2.fn.fn.to_qkv.weight" in state]
    attn += [depth] if "mid_attn.fn.fn.to_qkv.weight" in state else []
    hp = {"in_nc": init.shape[1] // 2, "out_nc": state["final_conv.weight"].shape[0], "nf": init.shape[0],
          "depth": depth, "attn_levels": None if attn == list(range(depth + 1)) else attn}
    _verify("ConditionalUNet", hp, state)
    return Recognized("IRSDE", "ConditionalUNet", hp, "g", state, "osir", str(path), settings=dict(IRSDE_SETTINGS),
                      settings_source="not in the weights: IR-SDE's deraining / deblurring / SR release values, "
                                      "options/irsde/_base.yml; inpainting used max_sigma 30, denoising 70 with T 1000")


def _conditional_nafnet(state: dict, path: Path) -> Recognized:
    """Refusion's noise network (pixel space, latent space with 8 channels, bokeh with lens_info)."""
    _need(state, "intro.weight", "ending.weight", "time_mlp.1.weight")
    intro = state["intro.weight"]
    width, img_channel = intro.shape[0], intro.shape[1] // 2
    levels = len(_levels(state, "downs."))
    hp = {"img_channel": img_channel, "width": width,
          "enc_blk_nums": [len(_indices(state, f"encoders.{i}.")) for i in range(levels)],
          "middle_blk_num": len(_indices(state, "middle_blks.")),
          "dec_blk_nums": [len(_indices(state, f"decoders.{i}.")) for i in range(levels)],
          # the global skip has no parameters: the latent release (8-channel latents) has it, pixel Refusion not
          "global_skip": img_channel != 3, "lens_info": "cam_mlp.0.weight" in state}
    _verify("ConditionalNAFNet", hp, state)
    notes = [f"global_skip: {str(hp['global_skip']).lower()} is not in the weights (it has no parameters); "
             "the release uses it for the latent network only"]
    settings, needs, method = dict(REFUSION_SETTINGS), {}, "Refusion"
    if hp["lens_info"]:
        settings["condition_keys"] = ["lens_info"]         # options/refusion/bokeh_stage2.yml
        notes.append("lens_info: the bokeh network reads the batch's lens_info (source lens, target lens, disparity)")
    if img_channel != 3:
        method = "LatentRefusion"
        hp_compression = {"type": "CompressionUNet", "in_ch": 3, "out_ch": 3, "ch": 8, "ch_mult": [4, 8, 8, 16],
                          "embed_dim": img_channel}
        settings["compression"] = hp_compression       # the release's latent-dehazing compression model
        needs["compression_path"] = ("latent Refusion needs the stage-1 compression model (the release's "
                                     "latent-dehazing.pth or a stage-1 run's net_l_*.safetensors)")
    return Recognized(method, "ConditionalNAFNet", hp, "g", state, "osir", str(path), settings=settings,
                      needs=needs, notes=notes,
                      settings_source="not in the weights: Refusion's release values, options/refusion/_base.yml"
                                      + (" and latent_stage2.yml" if img_channel != 3 else ""))


def _compression_unet(state: dict, path: Path) -> Recognized:
    """Latent Refusion's stage-1 compression model."""
    _need(state, "init_conv.weight", "latent_conv.weight", "post_latent_conv.weight", "final_conv.weight")
    init = state["init_conv.weight"]
    ch = init.shape[0]
    levels = _levels(state, "encoder.")
    _need(state, *[f"encoder.{i}.3.weight" for i in levels])
    widths = [state[f"encoder.{i}.3.weight"].shape[0] for i in levels]
    if any(w % ch for w in widths):
        raise _NoMatch(f"level widths {widths} are not multiples of the first conv's {ch} channels")
    hp = {"in_ch": init.shape[1], "out_ch": state["final_conv.weight"].shape[0], "ch": ch,
          "ch_mult": [w // ch for w in widths], "embed_dim": state["latent_conv.weight"].shape[0]}
    _verify("CompressionUNet", hp, state)
    return Recognized("RefusionCompression", "CompressionUNet", hp, "l", state, "osir", str(path),
                      notes=["restoring with it alone rebuilds the input through the latent (stage 1); latent "
                             "Refusion uses it as method.compression_path"])


def _daclip_unet(state: dict, path: Path) -> Recognized:
    """DA-CLIP's universal-IR noise network (and wild IR's half-resolution one)."""
    _need(state, "init_conv.weight", "time_mlp.1.weight", "final_conv.weight")
    degra = "prompt" in state
    cross_key = re.compile(r"downs\.(\d+)\.2\.fn\.fn\.transformer_blocks\.")
    cross = sorted({int(m.group(1)) for k in state if (m := cross_key.match(k))})
    image = cross != [] or any(k.startswith("mid_attn.fn.fn.transformer_blocks.") for k in state)
    half = "downsample.weight" in state
    if not (degra or image or half):
        raise _NoMatch("no DA-CLIP conditioning (prompt, cross-attention) and no half-resolution keys")
    init = state["init_conv.weight"]
    nf = init.shape[0]
    levels = _levels(state, "downs.")
    _need(state, *[f"downs.{i}.3.weight" for i in levels])
    context = None
    if degra:
        _need(state, "text_mlp.0.weight")
        context = state["text_mlp.0.weight"].shape[1]
    else:
        key = next((k for k in state if k.endswith("attn2.to_k.weight")), None)
        context = state[key].shape[1] if key else 512
    hp = {"in_nc": init.shape[1] // 2, "out_nc": state["final_conv.weight"].shape[0], "nf": nf,
          "ch_mult": [state[f"downs.{i}.3.weight"].shape[0] // nf for i in levels], "context_dim": context,
          "use_degra_context": degra, "use_image_context": image,
          "cross_attention_levels": cross or [len(levels) - 1], "scale": 0.5 if half else 1.0}
    _verify("DACLIPUNet", hp, state)
    settings = dict(DACLIP_UIR_SETTINGS)
    needs = {}
    if degra or image:
        wild = context == 768
        settings["clip_model"] = "ViT-L-14" if wild else "ViT-B-32"
        if wild:
            settings["sample_steps"] = 20           # options/wild_ir.yml
        needs["daclip_path"] = (f"the network is conditioned on DA-CLIP's embeddings: give the DA-CLIP weights "
                                f"({'wild-daclip_ViT-L-14.pt' if wild else 'daclip_ViT-B-32.pt'} or a stage-1 run's "
                                "net_daclip_*.safetensors)")
    else:
        settings["use_daclip"] = False
    source = "options/wild_ir.yml" if context == 768 else "options/daclip_uir.yml"
    return Recognized("DACLIPUIR", "DACLIPUNet", hp, "g", state, "osir", str(path), settings=settings, needs=needs,
                      settings_source=f"not in the weights: the release's values, {source}")


def _daclip_vit(state: dict, path: Path) -> Recognized:
    """DA-CLIP's CLIP with its controller (the release's daclip_ViT-*.pt, or an osir stage-1 run's weights)."""
    _need(state, "visual_control.conv1.weight", "visual_control.transformer.zero_modules.0.weight")
    hp = {"controller_layers": len(_indices(state, "visual_control.transformer.zero_modules."))}
    settings: dict = {}
    notes = []
    if "clip.visual.conv1.weight" in state:         # the whole model: the CLIP's shapes give its config
        config = _clip_config(state)
        hp.update(config)
        name = _open_clip_name(config)
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


def _clip_config(state: dict) -> dict:
    """open_clip's CLIP config from a DA-CLIP state dict's shapes (heads cannot be read)."""
    conv = state["clip.visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    grid = math.isqrt(state["clip.visual.positional_embedding"].shape[0] - 1)
    mlp = state["clip.visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width
    tokens = state["clip.token_embedding.weight"]
    return {"embed_dim": state["clip.visual.proj"].shape[1],
            "vision_cfg": {"image_size": grid * patch, "patch_size": patch, "width": width, "mlp_ratio": mlp,
                           "layers": len(_indices(state, "clip.visual.transformer.resblocks."))},
            "text_cfg": {"context_length": state["clip.positional_embedding"].shape[0], "vocab_size": tokens.shape[0],
                         "width": tokens.shape[1], "layers": len(_indices(state, "clip.transformer.resblocks."))}}


def _open_clip_name(config: dict) -> Optional[str]:
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


OSEDIFF_LISTS = ("vae_lora_encoder_modules", "unet_lora_encoder_modules", "unet_lora_decoder_modules",
                 "unet_lora_others_modules")


def _osediff(payload, path: Path) -> Recognized:
    """OSEDiff's osediff.pkl: LoRA of SD 2.1-base's UNet and VAE encoder."""
    if not isinstance(payload, dict) or "state_dict_unet" not in payload:
        raise _NoMatch("not a dict with 'state_dict_unet' (osediff.pkl)")
    missing = [k for k in (*OSEDIFF_LISTS, "state_dict_vae") if k not in payload]
    if missing:
        raise _NoMatch(f"an osediff.pkl needs {', '.join(missing)}")
    unet, vae = payload["state_dict_unet"], payload["state_dict_vae"]
    rank = int(payload.get("rank_unet") or next(v.shape[0] for k, v in unet.items() if ".lora_A." in k))
    hp = {"lora_rank": rank, "vae_lora_rank": int(payload.get("rank_vae") or rank),
          **{f"{k.removesuffix('_modules')}_targets": len(set(payload[k])) for k in OSEDIFF_LISTS},  # names repeat
          "trains_unet_conv_in": "conv_in.base_layer.weight" in unet}
    key = next((k for k in unet if ".attn2.to_k.lora_A." in k), None)
    if key:
        hp["cross_attention_dim"] = int(unet[key].shape[1])    # 1024: SD 2.x's OpenCLIP-H text encoder
    state = {f"unet.{k}": v for k, v in unet.items()} | {f"vae.{k}": v for k, v in vae.items()}
    return Recognized("OSEDiff", None, hp, "unet", state, "osir", str(path),
                      settings={"release_path": str(path), "lora_rank": rank, "merge_lora": True},
                      needs={"sd_path": "osediff.pkl holds LoRA weights for Stable Diffusion 2.1-base: give a local "
                                        "SD 2.1-base diffusers folder"},
                      notes=["lora_alpha 8 (scale 2 at rank 4) is the release's, not in the file",
                             "merge_lora: true as options/test/osediff.yml"], network_option=None)


CANDIDATES: list[tuple[str, Callable]] = [
    ("RRDBNet (spandrel)", _rrdbnet),
    ("ConditionalUNet (IR-SDE)", _conditional_unet),
    ("ConditionalNAFNet (Refusion)", _conditional_nafnet),
    ("CompressionUNet (latent Refusion)", _compression_unet),
    ("DACLIPUNet (DA-CLIP universal / wild IR)", _daclip_unet),
    ("DA-CLIP ViT", _daclip_vit),
]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 200 else line[:200] + "..."


def recognize(path: str | Path) -> Recognized:
    """The method, arch and hyper-parameters of the weights file ``path``; a ``CheckpointError`` naming the
    file when it cannot be read, or listing every candidate tried and why it did not match."""
    path = Path(path)
    payload, state, read_notes = _read(path)
    tried = []
    if state is None:
        try:
            found = _osediff(payload, path)
        except _NoMatch as why:
            raise CheckpointError(f"'{path}' holds no state dict of tensors and is not an osediff.pkl "
                                  f"({why})") from None
    else:
        found = None
        for name, detect in CANDIDATES:
            try:
                found = detect(state, path)
                break
            except _NoMatch as why:
                tried.append(f"{name}: {why}")
        if found is None:
            tried.append("OSEDiff (osediff.pkl): not a dict with 'state_dict_unet'")
            sample = ", ".join(list(state)[:3])
            raise CheckpointError(f"'{path}': no known layout matches its {len(state)} tensors ({sample}, ...); "
                                  f"tried: {'; '.join(tried)}")
    found.notes[:0] = read_notes
    _apply_run_options(found, path)
    return found


# ----------------------------------------------------------------------------- an osir run's options
RUN_FILE = re.compile(r"net_(?P<name>.+?)(?P<ema>_ema)?_(?P<iter>\d+|latest)\.safetensors")


def _apply_run_options(found: Recognized, path: Path) -> None:
    """For ``<run>/models/net_<name>_*.safetensors``: the method settings of ``<run>/options.yml`` when its
    network spec has the recognised arch (what the weights cannot tell, e.g. lambda, comes from the run)."""
    match = RUN_FILE.fullmatch(path.name)
    options_file = path.parent.parent / "options.yml"
    if not match or path.parent.name != "models" or not options_file.is_file():
        return
    import yaml
    try:
        run_options = yaml.safe_load(options_file.read_text(encoding="utf-8")) or {}
        method = dict(run_options.get("method") or {})
    except (OSError, yaml.YAMLError, AttributeError):
        found.notes.append(f"'{options_file}' is not readable: release settings are used")
        return
    if found.arch is None:                      # a DA-CLIP stage-1 run: its CLIP settings
        if found.method == "DACLIP" and method.pop("type", None) == "DACLIP" and match["name"] == "daclip":
            found.settings, found.settings_source = method, f"the run's {options_file}"
            found.run_options = run_options
        return
    key = "network"
    if match["name"] == "l" and found.arch == "CompressionUNet" and method.get("type") == "LatentRefusion":
        return                                  # stage 2 holds a frozen compression model: keep RefusionCompression
    spec = method.get(key)
    if not isinstance(spec, dict) or spec.get("type") != found.arch or "type" not in method:
        return
    differ = [k for k, v in found.hyper_parameters.items() if k in spec and _plainify(spec[k]) != _plainify(v)]
    if differ:
        found.notes.append(f"'{options_file}' gives {', '.join(f'{k}={spec[k]!r}' for k in differ)}, the weights "
                           "differ: the weights' values are kept")
    for k, v in spec.items():                   # values the weights cannot tell (e.g. global_skip)
        if k != "type" and k not in differ:
            found.hyper_parameters[k] = v
    found.notes = [n for n in found.notes if n.split(":", 1)[0] not in spec]   # 'global_skip: not in the weights'
    found.method, found.network = method.pop("type"), match["name"]
    method.pop(key, None)
    found.settings = method
    found.needs = {k: v for k, v in found.needs.items() if not method.get(k)}
    found.settings_source = f"the run's {options_file}"
    found.run_options = run_options


def _plainify(value):
    return list(value) if isinstance(value, tuple) else value


# ----------------------------------------------------------------------------- command line
def convert(found: Recognized, out: str | Path) -> Path:
    """Write ``found.state_dict`` as osir's safetensors (atomically) and its model card; the card's path."""
    from osir.engine.checkpoint import save_state_dict
    from osir.model_card import write_model_card
    out = Path(out)
    if out.suffix != ".safetensors":
        raise OptionsError(f"--convert: the output is a .safetensors file, got '{out}'")
    if found.method == "OSEDiff":
        raise OptionsError("--convert: osediff.pkl is loaded by the OSEDiff method as it is (method.release_path); "
                           "it has no single-network osir layout to convert to")
    if out.resolve() == Path(found.path).resolve():
        raise OptionsError(f"--convert: '{out}' is the input file")
    save_state_dict(found.state_dict, out)
    spec = {"type": found.arch, **found.hyper_parameters} if found.arch else None
    return write_model_card(out, method=found.method, hyper_parameters=found.hyper_parameters, source=found.path,
                            options=found.run_options,
                            arch=found.arch, network=found.network, detector=found.detector,
                            method_settings=found.settings, network_spec=spec, notes=found.notes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osir.recognize", description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help="a weights file (official release or osir's safetensors)")
    parser.add_argument("--convert", metavar="OUT.safetensors",
                        help="write the weights in osir's layout there, with a model card next to it")
    args = parser.parse_args(argv)

    def body() -> int:
        found = recognize(args.weights)
        print(found.describe())
        if args.convert:
            card = convert(found, args.convert)
            print(f"wrote {args.convert} and {card}")
        return 0

    from osir.cli import run
    return run("osir recognize", body)


if __name__ == "__main__":
    sys.exit(main())
