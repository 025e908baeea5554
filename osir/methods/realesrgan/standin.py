"""Real-ESRGAN's stand-in for benchmarks (``MethodCard.standin``; ``python -m osir.bench efficiency``):
the perceptual loss is training only, so without its VGG19 file (``method.vgg_path``) it is turned off
(``perceptual_weight`` 0) and the generator is measured as usual.  Hand-written bookkeeping of osir's own
options."""
from __future__ import annotations

from pathlib import Path


def standins(method_options: dict, scratch: Path, seed: int) -> list[str]:
    """Turn off a perceptual loss whose VGG file is missing (``method_options`` changed in place)."""
    m = method_options
    if isinstance(m.get("vgg_path"), str) and not Path(m["vgg_path"]).exists() and m.get("perceptual_weight"):
        m["perceptual_weight"] = 0.0
        return [f"method.vgg_path: '{m['vgg_path']}' not found: perceptual loss off (training only)"]
    return []
