"""Test device for tests/test_interrupts.py, loaded into a real ``osir/train.py`` run with ``imports:``.

The run stops itself (SIGSTOP) inside the first checkpoint save whose file name matches the regular
expression in ``OSIR_PAUSE_IN_SAVE``: the temporary file is fully written and not yet renamed.  The test
sees the process stopped (``waitpid`` with ``WUNTRACED``) and then signals it at that exact moment
(SIGKILL, or a second SIGINT followed by SIGCONT).  The save itself is osir's own code."""
import os
import re
import signal
from pathlib import Path

from osir.core import checkpoint

_atomic_write = checkpoint.atomic_write
_paused = []


def _write_then_pause(path, write):
    pattern = os.environ.get("OSIR_PAUSE_IN_SAVE")

    def written(tmp):
        write(tmp)
        if pattern and not _paused and re.fullmatch(pattern, Path(path).name):
            _paused.append(path)
            os.kill(os.getpid(), signal.SIGSTOP)

    _atomic_write(path, written)


checkpoint.atomic_write = _write_then_pause
