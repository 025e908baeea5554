"""The errors osir reports to a user in one line (``osir.core.cli.run``: exit code 2, no traceback), in one
place: ``OptionsError`` (an option; defined beside the registry, which imports nothing), ``CheckpointError``
(a weights or state file; also importable from the checkpoint I/O), ``DataError`` and ``ImageReadError`` (data).
Nothing here imports torch: a command reports these without loading it."""
from osir.core.registry import OptionsError

__all__ = ["OptionsError", "CheckpointError", "DataError", "ImageReadError", "ImageWriteError"]


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
