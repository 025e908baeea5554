"""Registries: a YAML ``type:`` names a registered class or function; its other keys are the
constructor's arguments.  Shared parts and methods register by decorator; nothing here knows
about a particular method."""
from __future__ import annotations

import difflib
from typing import Any, Callable


class OptionsError(ValueError):
    """An option is unknown, mistyped or missing. The message names the key path."""


def nearest(name: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or ''."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry:
    """Maps names to classes or factory functions."""

    def __init__(self, kind: str, provided: tuple[str, ...] = ()):
        self.kind = kind
        self.provided = provided   # constructor arguments the code supplies, not the options
        self._entries: dict[str, Callable] = {}

    def register(self, obj: Callable | None = None, *, name: str | None = None):
        """Use as ``@REG.register()`` / ``@REG.register(name='x')`` or ``REG.register(cls)``."""
        def add(o):
            key = name or o.__name__
            if key in self._entries and self._entries[key] is not o:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = o
            return o
        return add(obj) if obj is not None else add

    def get(self, name: str, key_path: str = "type") -> Callable:
        if name not in self._entries:
            raise OptionsError(
                f"{key_path}: unknown {self.kind} '{name}'{nearest(name, self._entries)}; "
                f"registered: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def build(self, spec: dict, key_path: str = "", **extra: Any):
        """Instantiate ``spec['type']`` with the remaining keys (plus ``extra``)."""
        if not isinstance(spec, dict) or "type" not in spec:
            raise OptionsError(f"{key_path or self.kind}: expected a mapping with a 'type' key")
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        return self.get(spec["type"], f"{key_path}.type" if key_path else "type")(**kwargs, **extra)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names())})"


ARCHS = Registry("arch")
METHODS = Registry("method")
DATASETS = Registry("dataset")
DEGRADATIONS = Registry("degradation")          # per-sample, in dataset workers
BATCH_DEGRADATIONS = Registry("batch degradation")  # whole batches on the training device
LOSSES = Registry("loss")
METRICS = Registry("metric")
SAMPLERS = Registry("sampler")
OPTIMIZERS = Registry("optimizer", provided=("params",))
SCHEDULERS = Registry("scheduler", provided=("optimizer",))


def load_builtin() -> None:
    """Import every built-in module that registers entries (not at import time of this module)."""
    import osir.data.datasets  # noqa: F401
    import osir.degradations  # noqa: F401
    import osir.engine.optim  # noqa: F401
    import osir.metrics.suite  # noqa: F401
    import osir.methods  # noqa: F401
