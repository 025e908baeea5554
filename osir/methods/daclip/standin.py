"""DA-CLIP's stand-ins for benchmarks (``MethodCard.standin``; ``python -m osir.bench efficiency``):
latency, MACs and memory do not depend on the weights' values, so a missing DA-CLIP file
(``method.release_path`` of the stage-1 DA-CLIP, ``method.daclip_path`` of universal IR) is dropped and the
encoder keeps random initial weights; universal IR then builds it from open_clip's config of
``method.clip_model`` (its architecture, no weights), unless ``method.clip_config`` is given.
Hand-written bookkeeping of osir's own options."""
from __future__ import annotations

from pathlib import Path


def standins(method_options: dict, scratch: Path, seed: int) -> list[str]:
    """Drop the missing files of ``method_options`` (changed in place); the notes say what was replaced."""
    m, notes = method_options, []
    if isinstance(m.get("release_path"), str) and not Path(m["release_path"]).exists():
        notes.append(f"method.release_path: '{m['release_path']}' not found: random initial weights")
        m["release_path"] = None
    if isinstance(m.get("daclip_path"), str) and not Path(m["daclip_path"]).exists():
        notes.append(f"method.daclip_path: '{m['daclip_path']}' not found: random DA-CLIP weights")
        m["daclip_path"] = None
        if m.get("clip_config") is None and m.get("use_daclip", True):
            import open_clip
            config = open_clip.get_model_config(m.get("clip_model", "ViT-B-32"))
            if config is not None:
                m["clip_config"] = config
                notes[-1] += f" (open_clip's {m.get('clip_model', 'ViT-B-32')} architecture)"
    return notes
