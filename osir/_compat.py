"""Compatibility shims for third-party packages, imported before them.

basicsr 1.4.2 (the current PyPI release) does
``from torchvision.transforms.functional_tensor import rgb_to_grayscale``;
torchvision 0.17 renamed that module to ``_functional_tensor`` and later releases
removed the old name, so importing basicsr fails with ModuleNotFoundError.
We alias the old module name to the new module (same function, same behaviour)
instead of copying any basicsr code.  Import this module, not basicsr, first:
``from osir._compat import basicsr``.
"""
import importlib
import sys

if "torchvision.transforms.functional_tensor" not in sys.modules:
    try:
        importlib.import_module("torchvision.transforms.functional_tensor")
    except ModuleNotFoundError:
        sys.modules["torchvision.transforms.functional_tensor"] = importlib.import_module(
            "torchvision.transforms._functional_tensor")

import basicsr  # noqa: E402  (must come after the alias above)

__all__ = ["basicsr"]
