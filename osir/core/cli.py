"""How every command (train, test, metrics, degrade) reports a user error: one line on stderr
naming the file or key, exit code 2, no traceback.  Errors raised inside a DataLoader worker reach
the main process with the worker's traceback in their message; only its last line is kept.  A
missing third-party package (``ModuleNotFoundError``) is one line too, naming the osir module that
imports it and the pip command (``osir.core.registry.missing_package``).  ``run`` also starts the command
quietly: the known, harmless third-party messages are hidden from then on (``osir.core.quiet``)."""
from __future__ import annotations

import sys
from typing import Callable

from osir.core.errors import CheckpointError, DataError
from osir.core import quiet
from osir.core.registry import OptionsError, missing_package

#: what a user can cause with bad options, files or data, or the file system (a missing, existing or
#: unwritable path): everything else is a bug and keeps its traceback
USER_ERRORS = (OptionsError, CheckpointError, DataError, OSError)


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text and lines:       # re-raised from a loader worker
        last = lines[-1]
        prefix = f"{type(err).__name__}: "
        return last.split(prefix, 1)[1] if prefix in last else last
    return " ".join(line.strip() for line in lines) or type(err).__name__


def _importer(err: BaseException) -> str:
    """The innermost osir module in ``err``'s traceback (the one whose import statement failed)."""
    name, tb = "osir", err.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module == "osir" or module.startswith("osir."):
            name = module
        tb = tb.tb_next
    return name


def run(prog: str, body: Callable[[], int]) -> int:
    """``body()``'s exit code, or 2 with one line for a user error or a missing package; the known harmless
    third-party messages hidden first (``osir.core.quiet.install``)."""
    quiet.install()
    try:
        return body()
    except ModuleNotFoundError as err:
        line = missing_package(err)
        if line is None:            # one of osir's own modules: a bug, with its traceback
            raise
        print(f"{prog}: error: {_importer(err)} {line}", file=sys.stderr)
        return 2
    except USER_ERRORS as err:
        kind = ("options error" if isinstance(err, OptionsError) else
                "checkpoint error" if isinstance(err, CheckpointError) else "error")
        print(f"{prog}: {kind}: {one_line(err)}", file=sys.stderr)
        return 2
