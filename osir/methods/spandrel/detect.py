"""Recognising any weights file spandrel loads as an image-to-image model (the card's detector
``spandrel_model``, tried after every osir detector).  spandrel detects the architecture from the keys and
builds it; this module only turns its descriptor into an ``osir.core.recognition.Recognized`` (method
``SpandrelModel``, which loads the file itself through ``method.weights``)."""
from __future__ import annotations

from pathlib import Path

from osir.core.recognition import Recognized


def spandrel_model(payload, path: Path) -> Recognized:
    """The file's contents (``payload``, unwrapped by spandrel) as one of spandrel's image models; ``NoMatch``
    saying why not (see ``osir.methods.spandrel.method.image_model``)."""
    from osir.methods.spandrel.method import hyper_parameters, image_model
    descriptor = image_model(payload)
    hp = hyper_parameters(descriptor)
    notes = [f"spandrel: {hp['architecture']} ({', '.join(hp['tags']) or 'no tags'}), {descriptor.purpose} "
             f"x{descriptor.scale}; inference only"]
    if descriptor.purpose == "FaceSR":
        notes.append("a face restoration model: it expects aligned face crops, not whole photos")
    if descriptor.input_channels == 1:
        notes.append("a grey network: it is fed the image's BT.601 luma")
    for precision, supported in (("fp16", descriptor.supports_half), ("bf16", descriptor.supports_bfloat16)):
        if not supported:
            notes.append(f"{precision}: not supported by {hp['architecture']} (spandrel); --precision {precision} "
                         "runs it in fp32")
    return Recognized("SpandrelModel", None, hp, "g", descriptor.model.state_dict(), "spandrel", str(path),
                      settings={"weights": str(path)},
                      settings_source="the file itself: SpandrelModel loads it through spandrel (method.weights)",
                      notes=notes,
                      unconvertible="spandrel loads the file as it is (method.weights): there is no osir layout "
                                    "to convert it to")
