"""The errors osir reports to a user in one line (``osir.core.cli.run``: exit code 2, no traceback), in one
place: ``OptionsError`` (an option; defined beside the registry, which imports nothing), ``CheckpointError``
(a weights or state file; also importable from the checkpoint I/O), ``DataError`` and ``ImageReadError`` (data),
``TrainingInterrupted`` (training stopped by a signal; raised by the trainer, read by ``osir/train.py``).
Nothing here imports torch: a command reports these without loading it."""
from pathlib import Path

from osir.core.registry import OptionsError

__all__ = ["OptionsError", "CheckpointError", "DataError", "ImageReadError", "ImageWriteError",
           "TrainingInterrupted"]


class CheckpointError(ValueError):
    """A checkpoint does not fit the network; the message says what differs."""


class ImageReadError(OSError):
    """An image file could not be read or decoded; the message names the file."""


class ImageWriteError(OSError):
    """An image file could not be encoded or written (a full disk, no permission); the message names the file
    (the final name: the temporary file it was written to is removed)."""


class DataError(ValueError):
    """The data does not fit the task (missing or empty folder, unmatched or mismatched pairs, an image
    too small for a metric); the message names the file or folder."""


class TrainingInterrupted(BaseException):
    """Training stopped on SIGINT / SIGTERM.  ``state`` is the training state saved at ``iteration`` (None
    when a second signal stopped it at once); ``exit_code`` is the shell's 128 + signal number (130, 143).
    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` swallows it."""

    def __init__(self, message: str, signum: int, iteration: int | None = None, state: Path | None = None):
        super().__init__(message)
        self.signum, self.iteration, self.state = signum, iteration, state
        self.exit_code = 128 + signum
