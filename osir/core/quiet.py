"""Quiet start: the few third-party messages osir's commands hide because they are known and harmless.

Hand-written (no library offers a list of another library's harmless messages): ``KNOWN`` holds one
``Known`` entry per message -- the library, where it comes from (a named logger, or a Python warning and
the module that raises it), the exact message pattern and why it is harmless for osir.  ``install()`` adds
one ``warnings.filterwarnings`` entry or one ``logging.Filter`` on the named logger per entry.  Nothing is
monkeypatched and no library is silenced as a whole: another message of the same library, from the same
logger or module, still shows, and so does every osir line.

When: ``install()`` runs where a command starts (``osir.__main__`` before it imports the command's module,
``osir.core.cli.run`` for ``python -m osir.<command>``), never on ``import osir``.  It must run before the
library is imported when the library speaks while being imported (bitsandbytes).  Entries whose message is
harmless only where osir knows what follows (``scoped``: open_clip's "initialized randomly" is harmless only
when the DA-CLIP file is loaded over the model right after) are not installed by ``install()``; the code
that knows wraps the call in ``expected(key)``.

With ``python -W ...`` or ``PYTHONWARNINGS`` set (``sys.warnoptions``), ``install()`` hides nothing: the user
asked to see warnings their way (the idiom of Python's ``warnings`` documentation).
"""
from __future__ import annotations

import logging
import re
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePath

__all__ = ["Known", "KNOWN", "install", "expected"]


@dataclass(frozen=True)
class Known:
    """One known, harmless third-party message.  ``logger``: the logger it is logged on ("root" for
    ``logging.warning(...)`` module calls), or None for a Python warning raised in ``module`` (a regex on
    the raising module's name) of ``category``.  ``message``: a regex matched at the start of the text.
    ``scoped``: hidden only inside ``expected(key)``."""
    key: str
    library: str
    message: str
    why: str
    logger: str | None = None
    module: str = ""
    category: type[Warning] = UserWarning
    scoped: bool = False

    def matches(self, record: logging.LogRecord) -> bool:
        """Whether a log record is this message, logged by this library."""
        if not re.match(self.message, record.getMessage()):
            return False
        # a record on the root logger names no library: its source file must lie in the library's package
        return self.logger != "root" or self.library in PurePath(record.pathname).parts


KNOWN: tuple[Known, ...] = (
    Known("bitsandbytes-cpu-kernel", "bitsandbytes",
          r"Failed to load CPU gemm_4bit_forward from kernels-community",
          # peft imports bitsandbytes (diffusers imports peft for LoRA: OSEDiff, DA-CLIP's U-Net); on a CPU with
          # AVX512-BF16 bitsandbytes tries, while being imported, to get an optional CPU kernel for 4-bit
          # quantised matmuls from the Hub through the `kernels` package and logs this when it may not.  osir
          # builds no 4-bit layers, and bitsandbytes falls back to its own kernel anyway.
          "an optional bitsandbytes kernel for 4-bit quantised layers, which osir never builds",
          logger="bitsandbytes.backends.cpu.ops"),
    Known("peft-multiple-adapters", "peft",
          r"Already found a `peft_config` attribute in the model\. This will lead to having multiple adapters",
          # OSEDiff injects several named LoRA adapters into one UNet / VAE (the release's default_encoder,
          # default_decoder, default_others, and the regulariser's), one inject_adapter_in_model call each;
          # from the second call on peft warns that the model will hold several adapters: that is the design.
          "several named LoRA adapters on one network are intended (a method training adapters side by side)",
          module=r"peft\.tuners\.tuners_utils", category=UserWarning),
    Known("open-clip-random-init", "open_clip",
          r"No pretrained weights loaded for model '[^']*'\. Model initialized randomly\.",
          # open_clip.create_model(name) without a pretrained tag: DA-CLIP builds the CLIP this way and then
          # loads the DA-CLIP file (checked to exist before) over every tensor, strictly.  Hidden only there
          # (expected()): a stage-1 run on a CLIP without any weights still gets the warning.
          "a method that builds a CLIP to load its own weights file over it, right after building it",
          logger="root", scoped=True),
)

_BY_KEY = {k.key: k for k in KNOWN}


class _Filter(logging.Filter):
    """Drops the records of one ``Known`` message (a logger filter: it sees the records logged on that
    logger only, not those of its children)."""

    def __init__(self, known: Known):
        super().__init__()
        self.known = known

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.known.matches(record)


_FILTERS = {k.key: _Filter(k) for k in KNOWN if k.logger is not None}


def _add_warning_filter(known: Known) -> None:
    warnings.filterwarnings("ignore", message=known.message, category=known.category, module=known.module)


def install() -> None:
    """Hide every unscoped ``KNOWN`` message from now on (idempotent; nothing with ``-W`` / ``PYTHONWARNINGS``)."""
    if sys.warnoptions:
        return
    for known in KNOWN:
        if known.scoped:
            continue
        if known.logger is None:
            _add_warning_filter(known)      # warnings de-duplicates identical filters
        else:
            logging.getLogger(None if known.logger == "root" else known.logger).addFilter(_FILTERS[known.key])


@contextmanager
def expected(key: str):
    """Hide the ``KNOWN`` message ``key`` inside the block (where osir knows it is harmless)."""
    known = _BY_KEY[key]
    if sys.warnoptions:
        yield
        return
    if known.logger is None:
        with warnings.catch_warnings():
            _add_warning_filter(known)
            yield
        return
    logger = logging.getLogger(None if known.logger == "root" else known.logger)
    logger.addFilter(_FILTERS[key])
    try:
        yield
    finally:
        logger.removeFilter(_FILTERS[key])

