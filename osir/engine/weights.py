"""Serving local pretrained files to libraries that would download them."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch


@contextlib.contextmanager
def local_torchvision_weights(weights: str, path: str | None):
    """Within the block, torchvision's ``weights`` (e.g. ``'VGG19_Weights.IMAGENET1K_V1'``) load from
    the local file ``path`` instead of downloading: a temporary torch-hub folder holds a link named
    as torchvision expects, so the user's own cache is neither read nor written.  Libraries such as
    basicsr (VGG perceptual loss) and pyiqa (LPIPS backbones) ask torchvision for these weights."""
    if path is None:
        yield
        return
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights file not found: '{path}'")
    import torchvision.models as tvm
    url = tvm.get_weight(weights).url
    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as hub:
        (Path(hub) / "checkpoints").mkdir()
        os.symlink(os.path.abspath(path), Path(hub) / "checkpoints" / os.path.basename(url))
        torch.hub.set_dir(hub)
        try:
            yield
        finally:
            torch.hub.set_dir(old)
