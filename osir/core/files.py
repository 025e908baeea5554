"""Preflight: every file and folder an options tree names, checked before any model is built.

A registered class (a data set, a method, a prompt extractor, a metric) declares the files it reads in a light
module of its own folder, ``files.py``, that imports no torch: a ``DeclaredFiles`` registered in ``FILES`` under
the class's registered name (entry point group ``osir.files``), with what each file is and, for files the authors
publish, the name they publish it under and the page that hosts it::

    FILES.register(DeclaredFiles(paths={"weights_path": file_option("what it is", "published name", "page")}),
                   name="MyMethod")

``depends(spec, key) -> list[NeededFile]`` adds the paths that depend on the other arguments (a dataset that reads
scikit-image's photos instead of a folder, a folder built when missing).  The options' own sections mark their
paths in their annotations (``FilePath`` / ``FolderPath`` / ``AnyPath``: ``Annotated[str, PathOption(...)]``).
Option validation (``osir.core.options.validate``) records every path it meets (``recording``), from the
declarations of the ``type:`` sections it checks; ``check_files`` turns the missing ones into ONE ``OptionsError``
naming all of them, each with its key, what it is and where users get it (text only: nothing is downloaded).
Because the declarations live apart from the classes, the commands run this check on the options as read, before
any registered class is imported (``osir.core.options.check_files_early``: a path error in about a second, without
torch), and again on the validated options.  Written by hand: no library checks the files a YAML config names.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Iterator, Literal, Mapping, Optional

from osir.core.registry import OptionsError

Kind = Literal["file", "folder", "file or folder"]


@dataclass(frozen=True)
class PathOption:
    """Annotation marker: the argument names a file or folder the user brings.  ``what``: one phrase;
    ``published``/``page``: the name the authors publish it under and where (None for the user's own data)."""
    kind: Kind
    what: str
    published: Optional[str] = None
    page: Optional[str] = None
    training: bool = False          # read by training only (an LPIPS loss's weights): not checked for inference

    @classmethod
    def of(cls, kind: Kind, release, training: bool = False) -> "PathOption":
        """The marker of a card's ``ReleaseFile`` (its ``what``, ``file`` and ``page``)."""
        return cls(kind, release.what, release.file, release.page, training)


def _marker(kind: Kind, what, published=None, page=None, training=False) -> PathOption:
    if not isinstance(what, str):                       # a card's ReleaseFile
        return PathOption.of(kind, what, training)
    return PathOption(kind, what, published, page, training)


def file_option(what, published: str | None = None, page: str | None = None, training: bool = False) -> PathOption:
    """The ``PathOption`` of an argument naming a file (``what``: a phrase, or a card's ``ReleaseFile``)."""
    return _marker("file", what, published, page, training)


def folder_option(what, published: str | None = None, page: str | None = None, training: bool = False) -> PathOption:
    """The ``PathOption`` of an argument naming a folder."""
    return _marker("folder", what, published, page, training)


def FilePath(what, published: str | None = None, page: str | None = None, training: bool = False):   # noqa: N802
    """``str`` naming a file (``what``: a phrase, or a card's ``ReleaseFile``; ``training``: read by training only)."""
    return Annotated[str, _marker("file", what, published, page, training)]


def FolderPath(what, published: str | None = None, page: str | None = None, training: bool = False):   # noqa: N802
    """``str`` naming a folder."""
    return Annotated[str, _marker("folder", what, published, page, training)]


def AnyPath(what, published: str | None = None, page: str | None = None, training: bool = False):   # noqa: N802
    """``str`` naming a file or a folder (either is accepted)."""
    return Annotated[str, _marker("file or folder", what, published, page, training)]


@dataclass(frozen=True)
class NeededFile:
    """A path an options tree names: its key, the value, and the marker's description."""
    key: str
    path: str
    kind: Kind
    what: str
    published: Optional[str] = None
    page: Optional[str] = None
    training: bool = False
    optional: bool = False          # the run goes on without it (a metric is skipped): a warning, not an error
    also: tuple[str, ...] = ()      # further keys naming the same path (listed once)

    @classmethod
    def at(cls, key: str, path, marker: PathOption) -> "NeededFile":
        return cls(key, str(path), marker.kind, marker.what, marker.published, marker.page, marker.training)

    def present(self) -> bool:
        path = Path(self.path).expanduser()
        return (path.is_file() if self.kind == "file" else path.is_dir() if self.kind == "folder" else path.exists())

    def describe(self) -> str:
        found = Path(self.path).expanduser()
        wrong = (" is a folder, not a file" if self.kind == "file" and found.is_dir() else
                 " is a file, not a folder" if self.kind == "folder" and found.is_file() else " not found")
        source = ""
        if self.published or self.page:
            source = " - published" + (f" as '{self.published}'" if self.published else "") + \
                (f" on {self.page}" if self.page else "")
        keys = self.key + ("" if not self.also else f" (and {', '.join(self.also)})" if len(self.also) <= 2 else
                           f" (and {len(self.also)} more keys: {self.also[0]}, ...)")
        return f"{keys}: {self.kind} '{self.path}'{wrong} ({self.what}{source})"


@dataclass(frozen=True)
class DeclaredFiles:
    """The files one registered class reads (module docstring): ``paths`` maps its path arguments to what they
    are; ``depends(spec, key)`` gives the paths that depend on its other arguments; ``training_components``
    names its arguments that are specs of other registered classes built by training only (their files are not
    needed to test), as ``component(..., training=True)`` says in the class's signature."""
    paths: Mapping[str, PathOption] = dataclasses.field(default_factory=dict)
    depends: Optional[Callable[[dict, str], list["NeededFile"]]] = None
    training_components: tuple[str, ...] = ()

    def files(self, spec: dict, key: str) -> list["NeededFile"]:
        """The files of ``spec`` (the class's options, at ``key``) that are given as paths: a value that is
        missing, null or not a string is left to validation, which names the key and the type it expects
        (``check_files_early`` reads options before they are validated)."""
        found = [NeededFile.at(f"{key}.{name}", spec[name], marker) for name, marker in self.paths.items()
                 if isinstance(spec.get(name), str)]
        depends = [f for f in (self.depends(spec, key) if self.depends else ()) if _is_path(spec, f.key, key)]
        return found + depends


def _is_path(spec: dict, file_key: str, key: str) -> bool:
    """A ``depends`` entry whose option holds a string (``NeededFile.path`` is its ``str()``)."""
    option = file_key[len(key) + 1:] if file_key.startswith(f"{key}.") else None
    return option is None or "." in option or isinstance(spec.get(option), str)


_RECORDER: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("osir_needed_files", default=None)
_SCOPE: contextvars.ContextVar[tuple[bool, bool]] = contextvars.ContextVar("osir_file_scope", default=(False, False))


@contextlib.contextmanager
def recording() -> Iterator[list[NeededFile]]:
    """Collect the ``NeededFile``s that option validation meets inside the block."""
    found: list[NeededFile] = []
    token = _RECORDER.set(found)
    try:
        yield found
    finally:
        _RECORDER.reset(token)


def record(files) -> None:
    """Called by validation for each path it checks (no-op outside ``recording``)."""
    found = _RECORDER.get()
    if found is not None:
        training, optional = _SCOPE.get()
        found.extend(dataclasses.replace(f, training=f.training or training, optional=f.optional or optional)
                     for f in files)


@contextlib.contextmanager
def scope(training: bool = False, optional: bool = False):
    """Inside the block, recorded files are marked as read by training only (a registered spec that only
    training builds, e.g. OSEDiff's ``train_prompt``: ``component(PROMPTS, training=True)``) and/or as optional
    (the metrics: a metric without its files is skipped with a warning)."""
    outer = _SCOPE.get()
    token = _SCOPE.set((outer[0] or training, outer[1] or optional))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def missing(files: list[NeededFile], training: bool = True) -> list[NeededFile]:
    """The files that are not there (each key once, in order; keys naming the same path grouped into one
    entry); without ``training``, not those only training reads."""
    seen, by_path = set(), {}
    for f in files:
        if (training or not f.training) and f.key not in seen and not f.present():
            seen.add(f.key)
            first = by_path.get((f.path, f.kind))
            if first is None:
                by_path[(f.path, f.kind)] = f
            else:
                by_path[(f.path, f.kind)] = dataclasses.replace(first, also=first.also + (f.key,),
                                                                optional=first.optional and f.optional)
    return list(by_path.values())


def raise_missing(files: list[NeededFile], source: str = "", training: bool = True,
                  named_by: str = "the options name") -> list[NeededFile]:
    """One ``OptionsError`` naming every missing file of ``files`` when one that is not optional is missing
    (the optional ones marked so); else the missing optional ones (for a warning), maybe none.  ``named_by``:
    what names them, in the message ('the arguments name' for a command's own paths)."""
    gone = missing(files, training)
    if all(f.optional for f in gone):
        return gone
    where = f"{source}: " if source else ""
    count = "1 file or folder" if len(gone) == 1 else f"{len(gone)} files or folders"
    raise OptionsError(f"{where}{count} {named_by} are missing: " + "; ".join(
        f.describe() + (" [optional: skipped without it]" if f.optional else "") for f in gone))

