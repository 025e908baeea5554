"""Recognising a released ADM prior (the card's detector ``adm_prior``): a state dict with ADM's keys whose keys
and shapes are exactly those of a release in ``adm.ADM_RELEASES`` (DPS's FFHQ 256, guided-diffusion's ImageNet 256
unconditional) is that release's prior, restored by ``ZeroShot`` with its defaults (task, sampler, steps: what
the weights cannot tell; ``--set method.task=...``, ``--sampler``, ``--steps`` choose them)."""
from __future__ import annotations

from pathlib import Path

from osir.core.recognition import NoMatch, Recognized, need, verify


def adm_prior(state: dict, path: Path) -> Recognized:
    """An ADM U-Net of a released configuration (``ADMUNet``)."""
    from osir.methods.zeroshot.adm import ADM_RELEASES
    need(state, "time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight")
    width = state["input_blocks.0.0.weight"].shape[0]
    tried = []
    for name, release in ADM_RELEASES.items():
        if release["constructor"]["num_channels"] != width:
            tried.append(f"{name}: width {release['constructor']['num_channels']}, the file's {width}")
            continue
        try:
            verify("ADMUNet", release["constructor"], state)
        except NoMatch as why:
            tried.append(f"{name}: {why}")
            continue
        return Recognized("ZeroShot", "ADMUNet", dict(release["constructor"]), "prior", state, "osir", str(path),
                          network_option="prior",
                          notes=[f"{release['description']} ({release['file']})"],
                          settings_source="not in the weights: the task, the sampler and its steps are ZeroShot's "
                                          "defaults (--set method.task=..., --sampler, --steps)")
    raise NoMatch("an ADM U-Net, but not of a released configuration (" + "; ".join(tried) + ")")
