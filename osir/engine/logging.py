"""Log file + console (main process only) and tensorboard scalars (the progress bar and lines: ``osir.core.progress``)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path


def get_logger(log_file: str | Path | None = None, main_process: bool = True) -> logging.Logger:
    logger = logging.getLogger("osir")
    logger.setLevel(logging.INFO if main_process else logging.ERROR)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    for h in [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]:
        logger.removeHandler(h)        # bind the console to the current sys.stderr (it may have been replaced)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_file is not None and main_process:
        for h in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(h)
            h.close()
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


class TensorboardWriter:
    """Scalars to tensorboard when enabled (a no-op otherwise)."""

    def __init__(self, log_dir: str | Path | None):
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
