"""Recognising OSEDiff's release file (the card's detector ``osediff_pkl``, a ``payload`` detector: an
osediff.pkl is a dict of LoRA state dicts and module-name lists, not one state dict of tensors).  The LoRA
ranks and target counts are read from it; the base model (Stable Diffusion 2.1-base) is not in the file."""
from __future__ import annotations

from pathlib import Path

from osir.core.recognition import NoMatch, Recognized

#: the module-name lists an osediff.pkl holds besides its two state dicts
OSEDIFF_LISTS = ("vae_lora_encoder_modules", "unet_lora_encoder_modules", "unet_lora_decoder_modules",
                 "unet_lora_others_modules")


def osediff_pkl(payload, path: Path) -> Recognized:
    """OSEDiff's osediff.pkl: LoRA of SD 2.1-base's UNet and VAE encoder."""
    if not isinstance(payload, dict) or "state_dict_unet" not in payload:
        raise NoMatch("not a dict with 'state_dict_unet'")
    missing = [k for k in (*OSEDIFF_LISTS, "state_dict_vae") if k not in payload]
    if missing:
        raise NoMatch(f"an osediff.pkl needs {', '.join(missing)}")
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
                             "merge_lora: true as options/test/osediff.yml"], network_option=None,
                      unconvertible="osediff.pkl is loaded by the OSEDiff method as it is (method.release_path); "
                                    "it has no single-network osir layout to convert to")
