"""Latent Refusion's stand-in for benchmarks (``MethodCard.standin``; ``python -m osir.bench efficiency``):
latency, MACs and memory do not depend on the weights' values, so a missing stage-1 compression model
(``method.compression_path``) is replaced by a file of the ``method.compression`` architecture with random
initial weights (seeded), written to the scratch folder: the method loads it like the real one.  The
pixel-space Refusion needs no stand-in.  Hand-written bookkeeping of osir's own options."""
from __future__ import annotations

from pathlib import Path


def standins(method_options: dict, scratch: Path, seed: int) -> list[str]:
    """Replace a missing ``compression_path`` of ``method_options`` (changed in place); the notes say so."""
    m = method_options
    if "compression_path" not in m or "compression" not in m or \
            (isinstance(m["compression_path"], str) and Path(m["compression_path"]).is_file()):
        return []
    import torch
    from safetensors.torch import save_file

    from osir.core.registry import ARCHS
    torch.manual_seed(seed)
    model = ARCHS.build(m["compression"], "method.compression")
    scratch.mkdir(parents=True, exist_ok=True)
    file = scratch / "random_compression.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(file))
    note = f"method.compression_path: '{m['compression_path']}' not found: random compression model"
    m["compression_path"] = str(file)
    return [note]
