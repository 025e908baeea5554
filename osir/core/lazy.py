"""Lazy package attributes (PEP 562): a method package exposes its classes without importing them (and
torch) when only its card, plain data, is read."""
from __future__ import annotations

import importlib


def lazy_attributes(package: str, modules: tuple[str, ...]):
    """A module ``__getattr__`` for ``package`` that looks a missing name up in its ``modules``, imported on
    first use: ``__getattr__ = lazy_attributes(__name__, ("arch", "method"))``."""
    def __getattr__(name: str):
        for module in modules:
            found = getattr(importlib.import_module(f"{package}.{module}"), name, None)
            if found is not None:
                return found
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
