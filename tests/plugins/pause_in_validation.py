"""Test device for tests/test_interrupts.py, loaded into a real ``osir/train.py`` run with ``imports:``.

The run stops itself (SIGSTOP) right after restoring the validation batch whose number (1, 2, ...,
counted over the whole run) is ``OSIR_PAUSE_IN_VALIDATION``: the test sees the process stopped
(``waitpid`` with ``WUNTRACED``), signals it (SIGINT to its process group, as Ctrl-C does, or SIGTERM),
then lets it go on (SIGCONT), so the signal arrives in the middle of a validation, at a known batch.
The restoration itself is osir's own code (``osir.inference.restore_image``)."""
import os
import signal

from osir.engine import validation

_restore_image = validation.restore_image
_batches = []


def _restore_then_pause(*args, **kwargs):
    out = _restore_image(*args, **kwargs)
    _batches.append(out.shape[0])
    if os.environ.get("OSIR_PAUSE_IN_VALIDATION") == str(len(_batches)):
        os.kill(os.getpid(), signal.SIGSTOP)
    return out


validation.restore_image = _restore_then_pause
