"""Recognising Refusion weights (the card's detectors ``conditional_nafnet`` and ``compression_unet``): a
few keys give the network's hyper-parameters, and the network built from them must have exactly the
file's keys and shapes (``osir.core.recognition.verify``).  What the weights cannot tell (lambda, T, the
sampler, the compression model of latent Refusion) is the refusion-deraining / refusion-dehazing
release's (``releases/*.yml``)."""
from __future__ import annotations

from pathlib import Path

from osir.core.recognition import NoMatch, Recognized, indices, levels, need, release_settings, verify

#: the releases whose settings are assumed for weights that cannot tell them: pixel / latent Refusion
PIXEL_RELEASE, LATENT_RELEASE = "refusion-deraining", "refusion-dehazing"


def conditional_nafnet(state: dict, path: Path) -> Recognized:
    """Refusion's noise network (pixel space, latent space with 8 channels, bokeh with lens_info)."""
    need(state, "intro.weight", "ending.weight", "time_mlp.1.weight")
    intro = state["intro.weight"]
    width, img_channel = intro.shape[0], intro.shape[1] // 2
    depth = len(levels(state, "downs."))
    hp = {"img_channel": img_channel, "width": width,
          "enc_blk_nums": [len(indices(state, f"encoders.{i}.")) for i in range(depth)],
          "middle_blk_num": len(indices(state, "middle_blks.")),
          "dec_blk_nums": [len(indices(state, f"decoders.{i}.")) for i in range(depth)],
          # the global skip has no parameters: the latent release (8-channel latents) has it, pixel Refusion not
          "global_skip": img_channel != 3, "lens_info": "cam_mlp.0.weight" in state}
    verify("ConditionalNAFNet", hp, state)
    notes = [f"global_skip: {str(hp['global_skip']).lower()} is not in the weights (it has no parameters); "
             "the release uses it for the latent network only"]
    latent = img_channel != 3
    settings, needs = release_settings(LATENT_RELEASE if latent else PIXEL_RELEASE), {}
    if hp["lens_info"]:
        settings["condition_keys"] = ["lens_info"]         # options/refusion/bokeh_stage2.yml
        notes.append("lens_info: the bokeh network reads the batch's lens_info (source lens, target lens, disparity)")
    if latent:       # the release's latent-dehazing compression model, on the file's latent channels
        settings["compression"] = {**settings["compression"], "embed_dim": img_channel}
        needs["compression_path"] = ("latent Refusion needs the stage-1 compression model (the release's "
                                     "latent-dehazing.pth or a stage-1 run's net_l_*.safetensors)")
    return Recognized("LatentRefusion" if latent else "Refusion", "ConditionalNAFNet", hp, "g", state, "osir",
                      str(path), settings=settings, needs=needs, notes=notes,
                      settings_source=f"not in the weights: Refusion's release values (--model "
                                      f"{LATENT_RELEASE if latent else PIXEL_RELEASE})")


def compression_unet(state: dict, path: Path) -> Recognized:
    """Latent Refusion's stage-1 compression model (``CompressionUNet``)."""
    need(state, "init_conv.weight", "latent_conv.weight", "post_latent_conv.weight", "final_conv.weight")
    init = state["init_conv.weight"]
    ch = init.shape[0]
    found = levels(state, "encoder.")
    need(state, *[f"encoder.{i}.3.weight" for i in found])
    widths = [state[f"encoder.{i}.3.weight"].shape[0] for i in found]
    if any(w % ch for w in widths):
        raise NoMatch(f"level widths {widths} are not multiples of the first conv's {ch} channels")
    hp = {"in_ch": init.shape[1], "out_ch": state["final_conv.weight"].shape[0], "ch": ch,
          "ch_mult": [w // ch for w in widths], "embed_dim": state["latent_conv.weight"].shape[0]}
    verify("CompressionUNet", hp, state)
    return Recognized("RefusionCompression", "CompressionUNet", hp, "l", state, "osir", str(path),
                      notes=["restoring with it alone rebuilds the input through the latent (stage 1); latent "
                             "Refusion uses it as method.compression_path"])
