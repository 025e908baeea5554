"""Recognising Real-ESRGAN weights (the card's detector ``rrdbnet``): RRDBNet files (Real-ESRGAN /
Real-ESRNet / ESRGAN, in the old or the new key layout, bare or under ``params_ema`` / ``params``) are
recognised by spandrel's ESRGAN architecture and mapped onto osir's ``RRDBNet`` (basicsr's).  Written here
only as the mapping from spandrel's descriptor to basicsr's constructor and key order."""
from __future__ import annotations

from pathlib import Path

import torch

from osir.core.recognition import NoMatch, Recognized, release_tile


def rrdbnet(state: dict, path: Path) -> Recognized:
    """RRDBNet through spandrel's ESRGAN architecture (old / new / BSRGAN key layouts)."""
    import spandrel
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise NoMatch("spandrel recognises no architecture in these keys") from None
    except Exception as err:   # an architecture's keys matched but its loading failed
        raise NoMatch(f"spandrel failed to load it: {type(err).__name__}: {_first_line(err)}") from None
    arch_id = descriptor.architecture.id
    if arch_id != "ESRGAN":
        raise NoMatch(f"spandrel recognises {descriptor.architecture.name} ({', '.join(descriptor.tags)}), "
                      "which no osir method runs")
    spandrel_hp = descriptor.model.hyperparameters     # in_nc, out_nc, num_filters, num_blocks, scale, plus, ...
    if spandrel_hp["plus"]:
        raise NoMatch("spandrel recognises ESRGAN+ (conv1x1 in the dense blocks), which osir's RRDBNet is not")
    if spandrel_hp["scale"] != 4:
        raise NoMatch(f"spandrel recognises an ESRGAN with x{spandrel_hp['scale']} upsampling convolutions; osir's "
                      "RRDBNet (basicsr) always upsamples x4 (x2 / x1 through pixel-unshuffle)")
    spandrel_state = descriptor.model.state_dict()
    # basicsr's RRDBNet: pixel-unshuffle for x2 / x1 inside (conv_first takes 4x / 16x the channels); spandrel's
    # descriptor gives the image channels and the overall scale
    hp = {"num_in_ch": descriptor.input_channels, "num_out_ch": descriptor.output_channels, "scale": descriptor.scale,
          "num_feat": spandrel_hp["num_filters"], "num_block": spandrel_hp["num_blocks"],
          "num_grow_ch": 32}   # spandrel's RRDB has a fixed growth of 32 channels (a file with another fails there)
    from osir.core.checkpoint import describe_mismatch
    from osir.core.registry import ARCHS
    with torch.device("meta"):
        expected = ARCHS.build({"type": "RRDBNet", **hp}, "RRDBNet").state_dict()
    converted = bool(describe_mismatch(expected, state))
    if converted:   # old-arch keys (model.0, model.1.sub.*): the same tensors in basicsr's module order
        tensors = list(spandrel_state.values())
        pairs = list(zip(expected.items(), tensors))
        if len(tensors) != len(expected) or any(e.shape != t.shape for (_, e), t in pairs):
            raise NoMatch(f"spandrel's ESRGAN {hp} does not map onto basicsr's RRDBNet tensor by tensor")
        state = {k: t for (k, _), t in pairs}
    return Recognized("RealESRGAN", "RRDBNet", hp, "g", state, "spandrel", str(path),
                      settings={"scale": hp["scale"]}, converted=converted, tile=release_tile("RealESRGAN"),
                      settings_source="scale from the weights; L1 only at inference, no loss networks needed",
                      notes=[f"spandrel: {descriptor.architecture.name} ({', '.join(descriptor.tags)})"]
                      + (["old ESRGAN key layout converted to basicsr's RRDBNet keys"] if converted else []))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 200 else line[:200] + "..."
