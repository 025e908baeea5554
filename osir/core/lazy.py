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


class LazyModule:
    """A module imported on its first attribute access, after the modules of ``before`` (e.g. the basicsr shim
    ``osir._compat``): a module that uses basicsr in its functions only imports nothing heavy when it is
    imported for its options (preflight and ``--help`` stay light).  ``importlib.util.LazyLoader`` cannot run
    a shim first, hence this small proxy."""

    def __init__(self, name: str, before: tuple[str, ...] = ()):
        self._name, self._before, self._module = name, before, None

    def __getattr__(self, attribute: str):
        if self._module is None:
            for module in self._before:
                importlib.import_module(module)
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module else ''}>"


def basicsr_module(name: str) -> LazyModule:
    """``basicsr.<name>``, imported (after osir's torchvision shim) when first used."""
    return LazyModule(f"basicsr.{name}", ("osir._compat",))
