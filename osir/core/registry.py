"""Registries: a YAML ``type:`` names a registered class or function; its other keys are the
constructor's arguments.

This module imports nothing of osir: implementations register themselves by decorator when they
are imported, and the installed Python entry points tell each registry ``R`` where its entries
live: an entry ``Name = package.module`` of the group ``osir.<R.group>`` says that importing
``package.module`` registers ``Name``.  The module is imported only when a name is asked for, so
``python -m osir.metrics`` never imports diffusers or open_clip, and a method whose optional
dependency is missing is reported when it is used.  osir declares its own entries in
``setup.py``; a package outside osir registers a method the same way::

    entry_points={"osir.methods": ["MyMethod = mypackage.method"], "osir.archs": ["MyNet = mypackage.arch"]}
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import Any, Callable


class OptionsError(ValueError):
    """An option is unknown, mistyped or missing. The message names the key path."""


def nearest(name: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or ''."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry:
    """Maps names to classes or factory functions, registered directly or lazily (a module to
    import the first time the name is asked for)."""

    def __init__(self, kind: str, group: str, provided: tuple[str, ...] = ()):
        self.kind = kind
        self.group = group         # entry-point group: osir.<group>
        self.provided = provided   # constructor arguments the code supplies, not the options
        self._entries: dict[str, Callable] = {}
        self._lazy: dict[str, str] = {}

    def register(self, obj: Callable | None = None, *, name: str | None = None):
        """Use as ``@REG.register()`` / ``@REG.register(name='x')`` or ``REG.register(cls)``."""
        def add(o):
            key = name or o.__name__
            if key in self._entries and self._entries[key] is not o:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = o
            return o
        return add(obj) if obj is not None else add

    def register_lazy(self, name: str, module: str) -> None:
        """``name`` is registered by importing ``module`` (done when the name is first used)."""
        if name not in self._entries:
            self._lazy.setdefault(name, module)

    def get(self, name: str, key_path: str = "type") -> Callable:
        discover()
        if name not in self._entries and name in self._lazy:
            module = self._lazy[name]
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as err:
                missing = (err.name or "").split(".")[0]
                if missing == module.split(".")[0]:   # the entry point's own package is gone: stale metadata
                    raise OptionsError(f"{key_path}: {self.kind} '{name}' is registered by '{module}', which cannot "
                                       f"be imported ({err}); reinstall the package that declares it") from None
                raise OptionsError(f"{key_path}: {self.kind} '{name}' "
                                   f"{missing_package(err) or f'cannot be imported ({err})'}") from None
            if name not in self._entries:
                raise KeyError(f"importing '{module}' did not register {self.kind} '{name}'")
        if name not in self._entries:
            names = self.names()
            raise OptionsError(
                f"{key_path}: unknown {self.kind} '{name}'{nearest(name, names)}; "
                f"registered: {', '.join(names) or '(none: is osir installed? pip install -e .)'}")
        return self._entries[name]

    def build(self, spec: dict, key_path: str = "", **extra: Any):
        """Instantiate ``spec['type']`` with the remaining keys (plus ``extra``)."""
        if not isinstance(spec, dict) or "type" not in spec:
            raise OptionsError(f"{key_path or self.kind}: expected a mapping with a 'type' key")
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        entry = self.get(spec["type"], f"{key_path}.type" if key_path else "type")
        try:
            return entry(**kwargs, **extra)
        except ValueError as err:
            if type(err) is not ValueError:   # OptionsError, or a more specific error that names its file
                raise
            raise OptionsError(f"{key_path or self.kind}: {err}") from None   # a constructor refused a value

    def names(self) -> list[str]:
        discover()
        return sorted(set(self._entries) | set(self._lazy))

    def __contains__(self, name: str) -> bool:
        discover()
        return name in self._entries or name in self._lazy

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names())})"


#: import name -> pip name, for the "not installed" message (where they differ)
PIP_NAMES = {"open_clip": "open-clip-torch", "cv2": "opencv-python-headless", "skimage": "scikit-image",
             "lion_pytorch": "lion-pytorch", "yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn",
             "clip": "openai-clip", "pkg_resources": "setuptools", "google": "protobuf"}
#: import name -> the osir extra that installs it (setup.py's extras_require, with the versions osir needs);
#: the core install has every other package
EXTRAS = {"gradio": "web", "onnx": "export", "onnxscript": "export", "onnxruntime": "export"}


def missing_package(err: ModuleNotFoundError) -> str | None:
    """'needs the package 'X', which is not installed (pip install Y)' for an optional dependency that is
    missing, Y the osir extra that has it (``EXTRAS``: ``"osir[web]"``) or its pip name (``PIP_NAMES``);
    None when the missing module is osir's own (a bug, not something to install) or unnamed.  Every command
    reports a missing package with it (``osir.core.cli.run``, ``osir <command>`` importing the command's
    module, the registries' lazy imports)."""
    missing = (err.name or "").split(".")[0]
    if not missing or missing == "osir":
        return None
    pip = PIP_NAMES.get(missing, missing)
    if "." in err.name:
        try:
            installed = importlib.util.find_spec(missing) is not None
        except (ImportError, ValueError):
            installed = False
        if installed:       # the package is there, without this module: another version of it
            return (f"needs the module '{err.name}', which the installed '{missing}' does not have "
                    f"(another version: pip install --upgrade {pip})")
    if missing in EXTRAS:
        pip = f'"osir[{EXTRAS[missing]}]"'
    return f"needs the package '{missing}', which is not installed (pip install {pip})"


ARCHS = Registry("arch", "archs")
METHODS = Registry("method", "methods")
DATASETS = Registry("dataset", "datasets")
DEGRADATIONS = Registry("degradation", "degradations")                   # per-sample, in dataset workers
BATCH_DEGRADATIONS = Registry("batch degradation", "batch_degradations")  # whole batches on the device
LOSSES = Registry("loss", "losses")
METRICS = Registry("metric", "metrics")
SAMPLERS = Registry("sampler", "samplers")
OPTIMIZERS = Registry("optimizer", "optimizers", provided=("params",))
SCHEDULERS = Registry("scheduler", "schedulers", provided=("optimizer",))
PROMPTS = Registry("prompt extractor", "prompts")     # text prompts per image (OSEDiff, DAPE)
CARDS = Registry("method card", "cards")              # osir.core.card.MethodCard per method folder
ZERO_SHOT_SAMPLERS = Registry("zero-shot sampler", "zeroshot_samplers")   # p(x | y) with a prior and an operator
#: the files a registered class reads, by the class's registered name (``osir.core.files.DeclaredFiles``), from
#: light modules: the preflight reads them without importing the classes (or torch)
FILES = Registry("files declaration", "files")
#: where users get a public data set an options file names (``source:``; ``osir.data.sources.DataSource``),
#: registered by the method folder whose authors' README links it
DATA_SOURCES = Registry("data source", "data_sources")
ALL = (ARCHS, METHODS, DATASETS, DEGRADATIONS, BATCH_DEGRADATIONS, LOSSES, METRICS, SAMPLERS, OPTIMIZERS,
       SCHEDULERS, PROMPTS, CARDS, ZERO_SHOT_SAMPLERS, FILES, DATA_SOURCES)


_discovered = False


def discover(refresh: bool = False) -> None:
    """Register every installed entry point lazily (once per process, or again with ``refresh``)."""
    global _discovered
    if refresh or not _discovered:
        _discovered = True
        installed = entry_points()          # read once: one scan of the installed packages, not one per group
        for registry in ALL:
            for entry in installed.select(group=f"osir.{registry.group}"):
                registry.register_lazy(entry.name, entry.value.split(":")[0])
