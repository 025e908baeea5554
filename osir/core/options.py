"""YAML options: ``_base_`` includes, ``--set key.path=value`` overrides and validation.

One definition gives validation, defaults and documentation: the top-level sections are the
dataclasses below, and every ``type:`` section is checked against the signature (names, type
hints, defaults) of the registered class it names.  Validation runs before any work starts and
fails with the key path and the nearest valid key.  Leaf type checks use pydantic, and so do the
ranges declared with the types (``PositiveInt`` frequencies, batch sizes and iteration counts,
``NonNegativeInt`` workers and overlaps, ``Seed``, ``FolderName``): ``val.freq: 0`` or ``name: .`` is an
options error naming the key, before any work starts.
"""
from __future__ import annotations

import contextvars
import copy
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import reprlib
import sys
import types
import typing
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import yaml
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from osir.core import files
from osir.core.files import AnyPath, FilePath, NeededFile, PathOption
from osir.core.registry import (BATCH_DEGRADATIONS, DATASETS, FILES, METHODS, METRICS, OPTIMIZERS, SCHEDULERS, OptionsError,
                           Registry, nearest)


@dataclass(frozen=True)
class Component:
    """Annotation marker: the value is ``{type: <name in registry>, **constructor kwargs}``.

    ``extra`` is a dataclass whose fields are also allowed in the same mapping (for example the
    loader keys ``batch_size``/``num_workers`` next to a dataset's own arguments)."""
    registry: Registry
    extra: Any = None
    training: bool = False      # only training builds it: its files are not checked for inference
    optional: bool = False      # the run goes on without its files (a metric is skipped)


def component(registry: Registry, extra: Any = None, training: bool = False, optional: bool = False):
    return Annotated[dict, Component(registry, extra, training, optional)]


# ----------------------------------------------------------------------------- schema
#: a random seed numpy accepts (numpy's seeds are 32-bit, non-negative)
Seed = Annotated[int, pydantic.Field(ge=0, lt=2 ** 32)]

FOLDER_NAME_RULE = ("must be one folder name (not empty, no '/' or '\\', not '.' or '..', no leading or trailing "
                    "whitespace, no NUL)")


def _one_folder_name(value: str) -> str:
    """``value`` if it names one folder inside a root (``experiments/<name>``): '.', '..', 'a/b' or ' x'
    would name the root itself, its parent, a sub-folder or a name that differs from what the user sees."""
    if (not value or value in (".", "..") or any(c in value for c in "/\\\0") or value != value.strip()):
        raise ValueError(FOLDER_NAME_RULE)
    return value


#: files the options sections name (checked by ``check_files`` before anything is built)
AccelerateConfigFile = FilePath("an accelerate config file")
WeightsFile = AnyPath("weights of the network")        # a file, or a folder for networks that load from one
TrainingStateFile = FilePath("a training state to resume from")

#: ``name``: the experiment's folder under experiments/, tb_logger/ and results/ (one plain folder name)
FolderName = Annotated[str, pydantic.AfterValidator(_one_folder_name)]


def option(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, help: str):
    """A field of an options section with its description (``help``): the one text that ``--help``, the
    schema listing (``schema_rows`` / ``schema_text``) and the tests read."""
    return field(default=default, default_factory=factory, metadata={"help": help})


class Section(MutableMapping):
    """An options section: a dataclass read by attribute (``opt.train.total_iter``), the typed object the code
    reads (traiNNer-redux's typed options are the model).  It is also a read-write mapping of its fields
    (``opt["train"]["total_iter"]``, ``opt.get("train")``, ``opt["val"].update(freq=3)``, ``dict(opt)``,
    ``opt == {...}``), so code and files written for the plain-dict options of earlier versions keep working, and
    it dumps to YAML as that mapping (``to_dict``; ``yaml.safe_dump`` knows sections, see below; for JSON use
    ``to_dict()``).  A key or attribute the section does not have is refused with the nearest one (a typo is
    never kept silently); a section's keys cannot be removed (set them to None).  Registered specs (``method``,
    datasets, metrics, optimisers, ...) stay mappings: their keys are the registered class's own arguments."""

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))

    def __setattr__(self, name: str, value) -> None:
        if name not in self._names():
            raise AttributeError(f"{type(self).__name__} has no option '{name}'{nearest(name, self._names())}")
        object.__setattr__(self, name, value)

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"{type(self).__name__}: option '{key}' cannot be removed (set it to None)")

    def __getitem__(self, key: str):
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        if key not in self._names():
            raise KeyError(f"{type(self).__name__} has no option '{key}'{nearest(key, self._names())}")
        setattr(self, key, value)

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def to_dict(self) -> dict:
        """The section as plain data (YAML- and JSON-safe), sections inside it included."""
        return {name: _to_plain(getattr(self, name)) for name in self._names()}


def _to_plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


# yaml.safe_dump(options) writes a section as the mapping it replaces (a registration with PyYAML's safe
# dumper, as registries register entries: nothing else changes)
yaml.SafeDumper.add_multi_representer(Section, lambda dumper, section: dumper.represent_dict(section.to_dict()))

#: the options dataclasses: compared as mappings (``Section``), so equal to the dict of the same options
section = dataclass(eq=False)


@section
class LoaderOptions(Section):
    """Data-loader settings that sit next to a dataset's own arguments, and where the set comes from."""
    batch_size: PositiveInt = option(1, help="images per batch, per process")
    num_workers: NonNegativeInt = option(0, help="loader worker processes, per process (0: load in the main one)")
    shuffle: bool = option(True, help="shuffle the order (training loaders only)")
    source: Optional[str] = option(None, help="where users get the set: a name in osir.data.sources (e.g. "
                                              "Rain100H-test) or any text; named when a folder is missing")


@section
class OptimizerExtra(Section):
    """osir's keys next to an optimiser's own arguments."""
    params: Optional[list[str]] = option(None, help="networks or method-given groups it steps (default: its own name)")
    exclude_from_weight_decay: bool = option(False, help="the method's no-decay parameters (gains, biases) get "
                                                         "weight_decay 0")


@section
class EMAOptions(Section):
    """An exponential moving average of a network's trained tensors."""
    decay: float = option(0.999, help="EMA decay per update")
    update_every: PositiveInt = option(1, help="iterations between EMA updates")


@section
class DDPOptions(Section):
    """Passed to torch's DistributedDataParallel (through accelerate)."""
    find_unused_parameters: bool = option(False, help="DDP's find_unused_parameters")
    static_graph: bool = option(False, help="DDP's static_graph")


@section
class TrainOptions(Section):
    """How the method is trained (``osir/train.py``)."""
    total_iter: PositiveInt = option(help="optimiser updates of the run")
    optimizers: dict[str, component(OPTIMIZERS, OptimizerExtra)] = option(
        factory=dict, help="name -> a registered optimiser (type + its arguments, plus params / "
                           "exclude_from_weight_decay)")
    scheduler: Optional[component(SCHEDULERS)] = option(None, help="a registered scheduler, one per optimiser "
                                                                   "with the same settings")
    ema: dict[str, Optional[EMAOptions]] = option(factory=dict, help="network -> EMA of its trained tensors")
    grad_clip: Optional[PositiveFloat] = option(None, help="max gradient norm, per optimiser (null: no clipping)")
    grad_accum_steps: PositiveInt = option(1, help="micro-batches accumulated per optimiser update")
    mixed_precision: Literal["no", "fp16", "bf16"] = option("no", help="autocast precision of training")
    force_cpu: bool = option(False, help="train on the CPU even with a GPU")
    channels_last: bool = option(False, help="networks in channels_last memory format")
    ddp: DDPOptions = option(factory=DDPOptions, help="DistributedDataParallel settings")
    accelerate_config: Optional[AccelerateConfigFile] = option(
        None, help="an accelerate config file (FSDP), see README")


@section
class ValOptions(Section):
    """Validation during training."""
    freq: PositiveInt = option(5000, help="validate every N iterations (and at the end)")
    use_ema: bool = option(True, help="validate with the EMA weights of networks that have them (false: raw weights)")
    save_images: bool = option(True, help="write the restored validation images under visualization/")
    max_images: Optional[PositiveInt] = option(None, help="validate on the first N images of each set (null: all)")


@section
class LoggerOptions(Section):
    """Log file, progress and checkpoints."""
    print_freq: PositiveInt = option(100, help="log the mean losses every N iterations")
    checkpoint_freq: PositiveInt = option(5000, help="save weights and the training state every N iterations")
    tensorboard: bool = option(True, help="write tensorboard scalars under tb_logger/<name>")
    keep_checkpoints: Optional[PositiveInt] = option(None, help="keep only the newest N checkpoints (null: all)")
    progress_bar: bool = option(True, help="show a progress bar")
    reference_seconds_per_iter: Optional[PositiveFloat] = option(
        None, help="seconds per iteration this file took on a reference machine (the README's figure), shown "
                   "beside the run's own rate so a slow machine can be told from a stuck run (null: not shown)")
    reference_machine: Optional[str] = option(None, help="the machine of reference_seconds_per_iter, e.g. "
                                                         "'2 CPU cores'")


@section
class PathOptions(Section):
    """Files the run reads and the roots it writes under."""
    pretrained: dict[str, WeightsFile] = option(
        factory=dict, help="network name -> weights file to start from")
    strict_load: bool = option(True, help="pretrained weights must fit their network exactly")
    resume_state: Optional[TrainingStateFile] = option(
        None, help="a training_states/*.state file to resume from")
    experiments_root: str = option("experiments", help="root of experiments/<name>")
    results_root: str = option("results", help="root of results/<name> (osir/test.py)")
    tb_logger_root: str = option("tb_logger", help="root of tb_logger/<name>")


@section
class TileOptions(Section):
    """Tiled restoration of large images (validation, test, restore)."""
    size: Optional[PositiveInt] = option(None, help="restore images larger than this (LQ pixels) tile by tile "
                                                    "(null: whole images)")
    overlap: NonNegativeInt = option(32, help="overlap of neighbouring tiles (LQ pixels), blended")


@section
class InferenceOptions(Section):
    """Inference settings of osir/test.py."""
    mixed_precision: Literal["no", "fp16", "bf16"] = option("no", help="test.py's precision (training uses "
                                                                       "train.mixed_precision)")


@section
class Options(Section):
    """An options file: the top level."""
    name: FolderName = option(help="the run's folder name: experiments/<name>, tb_logger/<name>, results/<name>")
    method: component(METHODS) = option(help="a registered method (type + its arguments)")
    seed: Seed = option(0, help="the run's seed (weights, data order, noise)")
    imports: list[str] = option(factory=list, help="extra modules to import (they register methods, archs, ...)")
    datasets: dict[str, Optional[component(DATASETS, LoaderOptions)]] = option(
        factory=dict, help="set name -> a registered dataset (type + its arguments, plus loader settings); 'train' "
                           "trains, the others validate / test; null drops a set of a base file")
    degradation: Optional[component(BATCH_DEGRADATIONS)] = option(None, help="a registered batch degradation "
                                                                            "applied to training batches on the device")
    train: Optional[TrainOptions] = option(None, help="training settings (required by osir/train.py)")
    val: ValOptions = option(factory=ValOptions, help="validation settings")
    metrics: dict[str, component(METRICS, optional=True)] = option(factory=dict, help="name -> a registered metric (type + its "
                                                                       "settings)")
    logger: LoggerOptions = option(factory=LoggerOptions, help="logging and checkpoint settings")
    path: PathOptions = option(factory=PathOptions, help="files read and folders written")
    tile: TileOptions = option(factory=TileOptions, help="tiled restoration")
    inference: InferenceOptions = option(factory=InferenceOptions, help="inference settings of osir/test.py")


def _type_text(annotation) -> str:
    """A short name for an option's type (``int > 0``, ``one of no, fp16, bf16``, ``mapping``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        inner, extras = args[0], args[1:]
        if any(isinstance(e, Component) for e in extras):
            return "registered spec"
        for e in extras:
            for m in getattr(e, "metadata", [e]):
                for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<")):
                    if getattr(m, attr, None) is not None:
                        return f"{_type_text(inner)} {sign} {getattr(m, attr)}"
        return _type_text(inner)
    if origin is Union:
        named = [_type_text(a) for a in args if a is not type(None)]
        return " | ".join(named) + (" | null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (dict, list):
        return "mapping" if origin is dict else "list"
    if dataclasses.is_dataclass(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def schema_rows(cls=Options, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) of every option, sections expanded, from the fields' ``help``."""
    rows = []
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.default is not dataclasses.MISSING:
            default = "null" if f.default is None else str(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = "" if dataclasses.is_dataclass(f.default_factory) else repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((key, _type_text(hints[f.name]), default, f.metadata.get("help", "")))
        section = hints[f.name]
        if typing.get_origin(section) is Union:
            section = next((a for a in typing.get_args(section) if dataclasses.is_dataclass(a)), None)
        if dataclasses.is_dataclass(section):
            rows += schema_rows(section, key + ".")
    return rows


def options_help() -> str:
    """The ``--help`` epilog of the commands that read options files (train, test)."""
    return ("options (YAML keys of an options file, or --set key.path=value); a registered spec is 'type:' plus the "
            "entry's own arguments:\n" + schema_text())


def schema_text(cls=Options) -> str:
    """The options of an options file, one per line: key path, type, default and description."""
    rows = schema_rows(cls)
    width = max(len(k) for k, *_ in rows)
    return "\n".join(f"  {k:<{width}}  {desc}  [{typ}{', default ' + d if d and d != '(required)' else ''}"
                     f"{', required' if d == '(required)' else ''}]" for k, typ, d, desc in rows)


#: a command's ``--precision`` -> the method's mixed-precision setting (``inference.mixed_precision``)
PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


# ----------------------------------------------------------------------------- validation
_MISSING = inspect.Parameter.empty


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


@functools.lru_cache(maxsize=None)
def _adapter(annotation):
    try:
        return pydantic.TypeAdapter(annotation)
    except Exception:  # an annotation pydantic cannot check (a tensor type, say): accept
        return None


def _params_of(obj) -> tuple[dict[str, tuple[Any, Any]], bool]:
    """{name: (annotation, default)} of a class's constructor or a function; and **kwargs?"""
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:
        hints = {}
    params, var_kw = {}, False
    for i, (name, p) in enumerate(sig.parameters.items()):
        if inspect.isclass(obj) and i == 0:
            continue  # self
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is not p.VAR_POSITIONAL:
            params[name] = (hints.get(name, Any), p.default)
    return params, var_kw


def _dataclass_params(cls) -> dict[str, tuple[Any, Any]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = _MISSING
        out[f.name] = (hints[f.name], default)
    return out


def _plain(value):
    """A default worth writing into the resolved options (YAML-safe), else None."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return True
    if isinstance(value, (list, tuple, dict)):
        return all(_plain(v) for v in (value.values() if isinstance(value, dict) else value))
    return False


def _check_mapping(value, params, path, allow_extra=False, skip=()):
    if not isinstance(value, dict):
        raise OptionsError(f"{path or 'options'}: expected a mapping, got {type(value).__name__} "
                           f"{short_repr(value)}")
    out = {}
    for key, item in value.items():
        if key in skip:
            out[key] = item
            continue
        if key not in params:
            if allow_extra:
                out[key] = item
                continue
            raise OptionsError(f"{_join(path, key)}: unknown key{nearest(key, params)}; "
                               f"allowed: {', '.join(params) or '(none)'}")
        out[key] = validate(item, params[key][0], _join(path, key))
    for key, (annotation, default) in params.items():
        if key in out:
            continue
        if default is _MISSING:
            raise OptionsError(f"{_join(path, key)}: missing required value")
        if dataclasses.is_dataclass(default):
            out[key] = validate(dataclasses.asdict(default), annotation, _join(path, key))
        elif _plain(default):
            out[key] = list(default) if isinstance(default, tuple) else copy.deepcopy(default)
    return out


#: set by ``check_files_early``: validation records the declared files of the ``type:`` sections without
#: importing their classes (or checking their arguments)
_PATHS_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("osir_paths_only", default=False)


def _record_declared(spec, path: str) -> None:
    """The files ``FILES`` declares for the ``type:`` section ``spec`` at ``path`` and, recursively, for the
    ``type:`` sections among its values (read as they are: no defaults, no class imported)."""
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            for i, item in enumerate(spec):
                _record_declared(item, _join(path, str(i)))
        return
    declared = None
    if isinstance(spec.get("type"), str) and spec["type"] in FILES:
        declared = FILES.get(spec["type"], _join(path, "type"))
        files.record(declared.files(spec, path))
    for key, item in spec.items():
        if isinstance(item, (dict, list)):
            with files.scope(training=declared is not None and key in declared.training_components):
                _record_declared(item, _join(path, key))


def validate(value, annotation, path: str = ""):
    """Check ``value`` against ``annotation``; return it with defaults filled in."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *meta = typing.get_args(annotation)
        marker = next((m for m in meta if isinstance(m, Component)), None)
        if marker is None:       # a constrained type (PositiveInt, ...): the base's check, then the constraint
            checked = validate(value, base, path)
            names_path = next((m for m in meta if isinstance(m, PathOption)), None)
            if names_path is not None:             # a file or folder the user brings (osir.core.files)
                files.record([NeededFile.at(path, checked, names_path)])
                return checked
            adapter = _adapter(annotation)
            if adapter is not None:
                try:
                    adapter.validate_python(checked)
                except pydantic.ValidationError as err:
                    raise OptionsError(f"{path}: {_short(err.errors()[0]['msg'])}, got {short_repr(checked)}") from None
            return checked
        if _PATHS_ONLY.get():           # check_files_early: the declared files only, no class imported
            with files.scope(marker.training, marker.optional):
                _record_declared(value, path)
            return value
        if not isinstance(value, dict) or "type" not in value:
            raise OptionsError(f"{path}: expected a mapping with 'type: <{marker.registry.kind}>'; "
                               f"registered: {', '.join(marker.registry.names())}")
        if not isinstance(value["type"], str):
            raise OptionsError(f"{_join(path, 'type')}: expected a {marker.registry.kind} name, got "
                               f"{short_repr(value['type'])}")
        entry = marker.registry.get(value["type"], _join(path, "type"))
        params, var_kw = _params_of(entry)
        params = {k: v for k, v in params.items() if k not in marker.registry.provided}
        if marker.extra is not None:
            params = {**_dataclass_params(marker.extra), **params}
        with files.scope(marker.training, marker.optional):
            checked = _check_mapping(value, params, path, allow_extra=var_kw, skip=("type",))
            if value["type"] in FILES:   # the files the class declares (osir.core.files), on the checked options
                files.record(FILES.get(value["type"]).files(checked, path))
        return checked
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return validate(value, rest[0], path)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, Section):
            value = value.to_dict()
        checked = _check_mapping(value, _dataclass_params(annotation), path)
        return annotation(**checked) if issubclass(annotation, Section) else checked
    if origin is dict and isinstance(value, dict):
        _, item_type = typing.get_args(annotation) or (Any, Any)
        return {k: validate(v, item_type, _join(path, k)) for k, v in value.items()}
    if origin is list and isinstance(value, list):
        (item_type,) = typing.get_args(annotation) or (Any,)
        return [validate(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if annotation is Any or annotation is _MISSING:
        return value
    adapter = _adapter(annotation)
    if adapter is None and (checkable := _checkable(annotation)) is not None:
        adapter = _adapter(checkable)
    if adapter is not None:
        try:
            converted = adapter.validate_python(value)
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            raise OptionsError(f"{path}: {short_repr(value)} is not a valid {_type_name(annotation)} "
                               f"({first['msg']})") from None
        if isinstance(converted, tuple):
            converted = list(converted)
        # keep the typed value (YAML reads '1e-4' as a string; a float option gets the float)
        return converted if _plain(converted) else value
    return value


def _checkable(annotation):
    """``annotation`` without the members pydantic cannot check (``float | Tensor`` -> ``float``), so
    library signatures such as torch's optimisers still get their numbers checked and converted."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        kept = [a for a in map(_checkable, args) if a is not None]
        return Union[tuple(kept)] if kept else None
    if origin in (tuple, list, dict) and args:
        kept = [a if a is Ellipsis else _checkable(a) for a in args]
        return None if any(a is None for a in kept) else origin[tuple(kept)]
    return annotation if _adapter(annotation) is not None else None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 4, 40, 40


def short_repr(value, limit: int = 80) -> str:
    """A repr of ``value`` for an error message, at most ``limit`` characters (reprlib's nesting and
    length limits first: a huge value is never expanded in full)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(msg: str) -> str:
    """pydantic's 'Input should be greater than 0' as 'must be greater than 0' (and a validator's own
    message without pydantic's 'Value error, ' prefix)."""
    return msg.removeprefix("Value error, ").replace("Input should be", "must be", 1)


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is Literal:
        return "value; allowed: " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


# ----------------------------------------------------------------------------- loading
#: the most nodes (scalars, lists, mappings) that aliases (``*name``) may add to one YAML text: far
#: more than any options file needs, far less than an alias bomb (nine nested lists of nine aliases
#: expand to 9**9 values from a few hundred bytes)
MAX_ALIAS_NODES = 100_000


class _OptionsLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two checks it lacks (hand-written: PyYAML has no option for either).

    While composing, every alias adds the size of the node it repeats (counted once per node, shared
    sub-nodes by identity); beyond ``MAX_ALIAS_NODES`` in all, or an alias inside its own anchor (a
    recursive structure), the text is refused with the alias's line.  While constructing, a key
    repeated in one mapping is recorded in ``duplicates`` (the last one wins, as in PyYAML)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.alias_nodes, self._sizes, self._open, self.duplicates = 0, {}, [], []

    def _size(self, node) -> int:
        size = self._sizes.get(id(node))
        if size is None:
            children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else
                        node.value if isinstance(node, yaml.SequenceNode) else [])
            size = self._sizes[id(node)] = 1 + sum(self._size(n) for n in children)
        return size

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open:
                raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is inside its own anchor "
                                                  "(a recursive structure)", event.start_mark)
            if event.anchor in self.anchors:
                self.alias_nodes += self._size(self.anchors[event.anchor])
                if self.alias_nodes > MAX_ALIAS_NODES:
                    raise yaml.composer.ComposerError(
                        None, None, f"aliases expand to more than {MAX_ALIAS_NODES} values (an alias bomb?)",
                        event.start_mark)
        return super().compose_node(parent, index)

    def compose_sequence_node(self, anchor):
        self._open.append(anchor)
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self._open.pop()

    def compose_mapping_node(self, anchor):
        self._open.append(anchor)
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self._open.pop()

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = (key_node.tag, key_node.value)
                    if key in lines:
                        self.duplicates.append((key_node.value, lines[key], key_node.start_mark.line + 1))
                    lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def parse_yaml(stream, source: str):
    """The data of a YAML text or file object, read safely (no tags beyond plain data) and with
    ``_OptionsLoader``'s checks; a repeated key prints one warning line naming it and ``source``.
    Raises ``yaml.YAMLError``."""
    loader = _OptionsLoader(stream)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    for key, first, last in loader.duplicates:
        print(f"warning: {source}: key '{key[:60]}' appears twice in one mapping "
              f"(lines {first} and {last}); the last one (line {last}) is used", file=sys.stderr)
    return data


def load_yaml(path: str | Path, label: str | None = None, text: str | None = None):
    """The data of a YAML file that is not an options file (a degradation or model card, a run's options.yml
    read beside its weights, an accelerate config; or ``text``, e.g. a ``--set`` value, which ``path`` then
    only names): read by ``parse_yaml`` (plain data only, alias expansion limited, repeated keys warned), no
    ``_base_``.  An unreadable file, or text that is not valid YAML, is one ``OptionsError`` line naming it
    (``label``; default ``'<path>'``, or ``path`` as it is for ``text``)."""
    label = label or (str(path) if text is not None else f"'{path}'")
    try:
        if text is not None:
            return parse_yaml(text, label)
        with open(path, encoding="utf-8") as f:
            return parse_yaml(f, label)
    except OSError as err:
        raise OptionsError(f"{label}: cannot read it: {err.strerror or err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise OptionsError(f"{label}: not valid YAML: {err}") from None
    except RecursionError:
        raise OptionsError(f"{label}: not valid YAML: nested too deeply") from None


def _deep_merge(base: dict, child: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "type" not in value:
            out[key] = _deep_merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("type") == out[key].get("type"):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


PACKAGE_SCHEME = "pkg://"


def _base_path(including: Path, base) -> Path:
    """A ``_base_`` entry: a path relative to the including file, or ``pkg://<package>/<file>`` for a file
    shipped inside an installed package (a method's release options: ``pkg://osir.methods.irsde/releases/x.yml``)."""
    if not isinstance(base, str):
        raise OptionsError(f"{including}: _base_ entries are file paths, got {short_repr(base)}")
    if not base.startswith(PACKAGE_SCHEME):
        return including.parent / base
    package, _, inner = base[len(PACKAGE_SCHEME):].partition("/")
    try:       # the package's folder, without running its __init__ (a method package imports torch)
        spec = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise OptionsError(f"{including}: _base_ '{base}': no installed package '{package}'")
    return Path(next(iter(spec.submodule_search_locations))) / inner


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML options file, resolving ``_base_`` (a path relative to the file, or ``pkg://``: see
    ``_base_path``) recursively."""
    path = Path(path).resolve()
    if path in _seen:
        raise OptionsError(f"{path}: _base_ includes itself ({' -> '.join(map(str, _seen))})")
    if not path.is_file():
        raise OptionsError(f"options file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = parse_yaml(f, str(path)) or {}
        except yaml.YAMLError as err:
            raise OptionsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise OptionsError(f"{path}: the top level must be a mapping")
    bases = data.pop("_base_", None)
    if bases is None:
        return data
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _deep_merge(merged, read_yaml(_base_path(path, base), _seen + (path,)))
    return _deep_merge(merged, data)


def apply_overrides(opt: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` strings; the value is parsed as YAML (so 2 is an int, [1, 2] a list)."""
    opt = copy.deepcopy(opt)
    for item in overrides or []:
        if "=" not in item:
            raise OptionsError(f"--set expects key.path=value, got '{item}'")
        key, raw = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise OptionsError(f"--set: bad key path '{key}' in '{item}'")
        try:
            value = parse_yaml(raw, f"--set {key}") if raw.strip() else None
        except yaml.YAMLError as err:
            raise OptionsError(f"--set {key}: cannot parse value '{raw}': {err}") from None
        node = opt
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise OptionsError(f"--set {key}: '{'.'.join(parts[:i + 1])}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return opt


def as_options(opt: Mapping) -> Options:
    """``opt`` as the typed ``Options``: returned as it is when it already is, else resolved as ``load_options``
    resolves a file's data (its ``imports`` imported, validated, null data sets dropped): a plain dict of options
    written in code, e.g. by earlier versions' callers."""
    return opt if isinstance(opt, Options) else _resolve(copy.deepcopy(dict(opt)))


def _resolve(raw: dict) -> Options:
    """Options data (read, overridden) -> the typed options: ``imports`` first (they register what the
    options name), then validation; ``datasets: {x: null}`` drops a base file's set."""
    for module in raw.get("imports") or []:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise OptionsError(f"imports: cannot import '{module}': {err}") from None
    opt = validate(raw, Options)
    opt.datasets = {k: v for k, v in opt.datasets.items() if v is not None}
    return opt


def needed_files(opt: Mapping, datasets: bool = True) -> list[NeededFile]:
    """Every file and folder ``opt`` names (``osir.core.files``: from the path markers of the options' sections
    and the files the registered classes declare), without the data sets' when ``datasets`` is false.
    Weights under ``path.pretrained`` that carry a name the method's card publishes get that release's
    description."""
    raw = _to_plain(opt) if isinstance(opt, Section) else copy.deepcopy(dict(opt))
    if not datasets:
        raw["datasets"] = {}
    with files.recording() as found:
        validate(raw, Options)
    return _with_release_names(found, raw.get("method"))


def _with_release_names(found: list[NeededFile], method) -> list[NeededFile]:
    by_name, by_option = _release_files(method if isinstance(method, dict) else {})
    named = []
    for f in found:
        option = f.key.removeprefix("path.pretrained.") if f.key.startswith("path.pretrained.") else f.key
        release = by_name.get((option, Path(f.path).name)) or by_option.get(option)
        named.append(NeededFile.at(f.key, f.path, PathOption.of(f.kind, release, f.training)) if release else f)
    return named


def check_files_early(raw: Mapping, datasets: bool = True, training: bool = False, source: str = "") -> None:
    """The preflight on options as read (``read_options``), before any registered class is imported: the
    ``check_files`` error for the files the options' sections mark and the registered classes declare
    (``osir.core.files``), from the options' values as written (no defaults filled in, ``imports`` not run).
    Commands call it first, so that a path error takes about a second instead of torch's import, then
    ``check_files`` on the validated options (which also covers classes a user's ``imports`` register)."""
    raw = dict(raw)                      # early_files validates a deep copy
    if not datasets:
        raw["datasets"] = {}
    found = early_files(raw, Options)
    files.raise_missing(_with_release_names(found, raw.get("method")), source, training)


def early_files(value, annotation, path: str = "") -> list[NeededFile]:
    """The files ``value`` (options data as read, of the type ``annotation``, at ``path``) names, from the
    options' path markers and the declarations of its ``type:`` sections, without importing a registered class
    (``check_files_early``; a command with its own options section, e.g. ``osir.metrics``'s ``metrics:``)."""
    token = _PATHS_ONLY.set(True)
    try:
        with files.recording() as found:
            validate(copy.deepcopy(value), annotation, path)
    finally:
        _PATHS_ONLY.reset(token)
    return found


def _release_files(method: dict) -> tuple[dict, dict]:
    """The published files of the method's card (``ReleaseFile``s): by (option, published name), and by option
    for the one release whose ``method`` settings the options repeat (its weights under any file name)."""
    from osir.core.card import card_of_method, release_options
    card = card_of_method(method.get("type")) if method.get("type") else None
    by_name, by_option = {}, {}
    matching = []
    for release in card.releases if card else ():
        for f in (release.weights, *release.needs):
            by_name.setdefault((f.option, f.file), f)
        settings = {k: v for k, v in (release_options(card, release).get("method") or {}).items() if k != "network"}
        if settings and all(method.get(k) == v for k, v in settings.items()):
            matching.append(release)
    if len(matching) == 1:
        by_option = {f.option: f for f in (matching[0].weights, *matching[0].needs)}
    return by_name, by_option


def check_files(opt: Mapping, datasets: bool = True, training: bool = False, source: str = "") -> None:
    """Preflight: one ``OptionsError`` naming every missing file or folder of ``opt`` (``needed_files``), each
    with what it is and where users get it, before anything is built.  ``training``: also the files only
    training reads; ``datasets``: also the data sets' folders.  Optional files (a metric's) are named only
    beside a missing required one: alone, the run goes on and the metric suite skips that metric with its
    warning."""
    files.raise_missing(needed_files(opt, datasets), source, training)


def read_options(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read and override an options file, not validated: the data ``check_files_early`` and ``as_options``
    take."""
    return apply_overrides(read_yaml(path), overrides or [])


def load_options(path: str | Path, overrides: list[str] | None = None) -> Options:
    """Read, override and validate an options file; return the resolved options, typed (``Options``: read
    ``opt.train.total_iter``; a mapping too, see ``Section``).  ``as_options(read_options(...))`` is the same."""
    return _resolve(read_options(path, overrides))


def dump_options(opt: Mapping, path: str | Path) -> None:
    """Write resolved options (typed or plain) as YAML, atomically."""
    from osir.core.checkpoint import write_text
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(_to_plain(opt) if isinstance(opt, Section) else opt, sort_keys=False))
