"""OSEDiff's stand-ins for benchmarks (``MethodCard.standin``; ``python -m osir.bench efficiency``):
latency, MACs and memory do not depend on the weights' values, so a missing ``osediff.pkl``
(``method.release_path``) leaves the generator's LoRA at its initial weights, and a prompt extractor whose
files (its ``*_path`` options, e.g. RAM's and DAPE's) are missing is replaced by the empty prompt; the
extractor is then not measured.  Hand-written bookkeeping of osir's own options."""
from __future__ import annotations

from pathlib import Path


def standins(method_options: dict, scratch: Path, seed: int) -> list[str]:
    """Drop the missing files of ``method_options`` (changed in place); the notes say what was replaced."""
    m, notes = method_options, []
    if isinstance(m.get("release_path"), str) and not Path(m["release_path"]).exists():
        notes.append(f"method.release_path: '{m['release_path']}' not found: random initial weights")
        m["release_path"] = None
    prompt = m.get("prompt")
    if isinstance(prompt, dict):
        gone = [f"{k} '{v}'" for k, v in prompt.items() if k.endswith("_path") and isinstance(v, str)
                and not Path(v).exists()]
        if gone:
            m["prompt"] = {"type": "EmptyPrompt"}
            notes.append(f"method.prompt ({prompt.get('type')}): {', '.join(gone)} not found: an empty prompt "
                         "instead (the prompt extractor is not measured)")
    return notes
