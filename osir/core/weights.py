"""Serving local pretrained files to libraries that would download them, and reading them as
weights only.

Libraries read weight files with ``torch.load(..., weights_only=False)`` (pyiqa's
``load_pretrained_network`` and CLIP-IQA+ context, torch hub's ``load_state_dict_from_url`` under
torchvision's ``weights.get_state_dict``), which unpickles arbitrary objects, so a crafted ``.pth``
would run code.  ``weights_only_loads`` makes every ``torch.load`` inside its block weights-only:
torch's own switch ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` (read by ``torch.load`` at every call, and
overriding an explicit ``weights_only=False``) set for the block, plus a wrapper of ``torch.load``
that turns a refusal into osir's one-line ``CheckpointError`` naming the file.  Hand-written: no
library offers a scoped weights-only mode.  Both are restored when the block ends.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path

import torch

from osir.core.checkpoint import CheckpointError, check_finite_weights, pickled_code_refusal

_FORCE, _FORCE_NO = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def _reason(err: BaseException) -> str:
    """The line of torch's error that says what is wrong with the file (not its general advice)."""
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(advice)] or lines
    return lines[0] if lines else type(err).__name__


@contextlib.contextmanager
def weights_only_loads():
    """Within the block every ``torch.load`` (a library's included) reads weights only (tensors,
    containers, numbers: the ``weights_only=True`` unpickler), whatever ``weights_only`` its caller
    passes; a file holding other pickled objects (or unreadable, or with NaN/Inf tensors) is a
    ``CheckpointError`` naming it, and nothing in it runs.  Nested blocks are allowed."""
    if getattr(torch.load, "_osir_weights_only", False):     # an enclosing block already holds it
        yield
        return
    saved_env = {key: os.environ.get(key) for key in (_FORCE, _FORCE_NO)}
    original = torch.load

    def load(f, *args, **kwargs):
        kwargs.pop("weights_only", None)
        name = f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "a file object")
        if isinstance(name, (str, os.PathLike)) and Path(name).is_symlink():
            name = os.path.realpath(name)              # a link of a temporary hub folder: the user's file
        try:
            payload = original(f, *args, weights_only=True, **kwargs)
        except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
            raise CheckpointError(pickled_code_refusal(name, err) or
                                  f"cannot read '{name}' as a weights-only torch file: {_reason(err)}") from None
        return check_finite_weights(payload, name)

    load._osir_weights_only = True
    os.environ[_FORCE] = "1"
    os.environ.pop(_FORCE_NO, None)     # torch refuses both switches at once
    torch.load = load
    try:
        yield
    finally:
        torch.load = original
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def local_torchvision_weights(weights: str, path: str | None):
    """Within the block, torchvision's ``weights`` (e.g. ``'VGG19_Weights.IMAGENET1K_V1'``) load from
    the local file ``path`` instead of downloading: a temporary torch-hub folder holds a link named
    as torchvision expects, so the user's own cache is neither read nor written.  Libraries such as
    basicsr (VGG perceptual loss) and pyiqa (LPIPS backbones) ask torchvision for these weights;
    every file read in the block is read weights only (``weights_only_loads``)."""
    if path is None:
        with weights_only_loads():
            yield
        return
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights file not found: '{path}'")
    import torchvision.models as tvm
    url = tvm.get_weight(weights).url
    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as hub, weights_only_loads():
        (Path(hub) / "checkpoints").mkdir()
        os.symlink(os.path.abspath(path), Path(hub) / "checkpoints" / os.path.basename(url))
        torch.hub.set_dir(hub)
        try:
            yield
        finally:
            torch.hub.set_dir(old)
