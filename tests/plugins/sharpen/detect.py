"""Recognising ``SharpenNet`` weights (the card's detector): the head convolution gives the image channels
and features, the ``body.<i>`` keys the number of blocks; the network built from them on the meta device
must have exactly the file's keys and shapes (``osir.core.recognition.verify``)."""
from __future__ import annotations

from pathlib import Path

from osir.core.recognition import NoMatch, Recognized, indices, need, release_tile, verify


def sharpen_net(state: dict, path: Path) -> Recognized:
    """A ``SharpenNet`` state dict (``head.*``, ``body.<i>.{0,2}.*``, ``tail.*``)."""
    need(state, "head.weight", "head.bias", "tail.weight", "tail.bias")
    head = state["head.weight"]
    if head.ndim != 4:
        raise NoMatch(f"head.weight is {tuple(head.shape)}, not a convolution's weight")
    blocks = indices(state, "body.")
    if blocks != list(range(len(blocks))):
        raise NoMatch(f"body blocks {blocks} are not 0, 1, ...")
    hp = {"channels": int(head.shape[1]), "features": int(head.shape[0]), "blocks": len(blocks)}
    verify("SharpenNet", hp, state)
    return Recognized("Sharpen", "SharpenNet", hp, "g", state, "osir", str(path), tile=release_tile("Sharpen"),
                      settings_source="the network is the whole method: nothing else to tell")
