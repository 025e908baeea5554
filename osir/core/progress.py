"""Progress of a command's loop: a tqdm bar on a terminal, plain lines with rate and ETA elsewhere.

A thin layer over tqdm, hand-written only where tqdm has no equivalent: tqdm draws the bar on a terminal
(its ``disable=None`` hides it altogether when stderr is a file or a pipe, and forcing it there writes
carriage-return redraws, not lines), so when stderr is not a terminal ``Progress`` writes one plain line on
its first item, every ``every`` items, when ``interval`` seconds passed since its last line, and at the end::

    osir.metrics: 40/100 images (40%), 13.7 s/image, elapsed 09:08, ETA 13:42

The rate reads "x.xx images/s" at one item per second or more and "x.x s/image" below (``format_rate``; the
same rule as tqdm's bar, whose ``s/image`` it mirrors), times are tqdm's ``format_interval``.  The clock is a
parameter (``clock``) so the lines can be checked without waiting.  Used by osir/test.py, python -m
osir.metrics, python -m osir.degrade, python -m osir.bench and the trainer's bar.
"""
from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm

__all__ = ["Progress", "format_rate", "is_terminal"]


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (tqdm's own test for ``disable=None``)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):      # no isatty, or a closed stream
        return False


def format_rate(items: float, seconds: float, unit: str = "image", plural: str | None = None) -> str:
    """``items`` done in ``seconds`` as "x.xx <plural>/s" at one item per second or more, else as
    "x.x s/<unit>" (a slow model reads "12.3 s/image", not "0.08 images/s"); "?" before the first item."""
    plural = unit + "s" if plural is None else plural
    if items <= 0 or seconds <= 0:
        return f"? {plural}/s"
    rate = items / seconds
    return f"{rate:.2f} {plural}/s" if rate >= 1 else f"{seconds / items:.1f} s/{unit}"


class Progress:
    """Progress of ``total`` items (None: unknown) labelled ``desc``, on ``file`` (default stderr).

    ``terminal``: draw a tqdm bar (default: whether ``file`` is a terminal); otherwise plain lines (see the
    module docstring), ``every`` items apart (default: about 20 lines over the run) and at most ``interval``
    seconds apart while items arrive; ``lines=False`` writes none (a caller that logs its own lines, the
    trainer).  ``disable``: nothing at all (a quiet switch, the non-main processes of a distributed run).
    ``seconds_per_item``: the bar always shows s/<unit> (the trainer compares it with a reference figure).
    ``initial``: items already done (a resumed run); rates count the items done since this object began."""

    def __init__(self, total: int | None, desc: str, unit: str = "image", plural: str | None = None, *,
                 every: int | None = None, interval: float = 60.0, disable: bool = False, file=None,
                 terminal: bool | None = None, lines: bool = True, clock=time.monotonic, initial: int = 0,
                 seconds_per_item: bool = False):
        self.total, self.desc, self.unit = total, desc, unit
        self.plural = unit + "s" if plural is None else plural
        self.file = sys.stderr if file is None else file
        self.every = every if every is not None else max(1, math.ceil((total or 200) / 20))
        if self.every < 1:
            raise ValueError(f"Progress: every must be at least 1, got {every}")
        self.interval, self.clock = interval, clock
        self.n = self.initial = initial
        self.start = self._last_time = clock()
        self._last_n = initial
        terminal = is_terminal(self.file) if terminal is None else terminal
        self.bar = None
        self.lines = lines and not terminal and not disable
        if terminal and not disable:
            fmt = ("{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_inv_fmt}{postfix}]"
                   if seconds_per_item else None)
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.file, dynamic_ncols=True,
                            bar_format=fmt)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(last_line=exc_type is None)         # an error: its own message says where the run stopped

    def update(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines:
            done = self.n - self.initial
            if (done == n or self.n % self.every == 0 or self.n == self.total
                    or self.clock() - self._last_time >= self.interval):
                self._line()

    def set_postfix(self, values: dict) -> None:
        """Values shown after the bar's rate (a terminal only: the plain lines carry none)."""
        if self.bar is not None:
            self.bar.set_postfix(values)

    def write(self, text: str) -> None:
        """A message line that does not break the bar (tqdm.write on a terminal)."""
        if self.bar is not None:
            tqdm.write(text, file=self.file)
        else:
            print(text, file=self.file, flush=True)

    def line(self) -> str:
        """The plain line of the progress so far."""
        elapsed = self.clock() - self.start
        done = self.n - self.initial
        count = f"{self.n}/{self.total} {self.plural}" if self.total else f"{self.n} {self.plural}"
        if self.total:
            count += f" ({100 * self.n // self.total}%)"
        text = f"{self.desc}: {count}, {format_rate(done, elapsed, self.unit, self.plural)}, " \
               f"elapsed {tqdm.format_interval(elapsed)}"
        if self.total and self.n < self.total and done > 0 and elapsed > 0:
            text += f", ETA {tqdm.format_interval((self.total - self.n) * elapsed / done)}"
        return text

    def _line(self) -> None:
        print(self.line(), file=self.file, flush=True)
        self._last_time, self._last_n = self.clock(), self.n

    def close(self, last_line: bool = True) -> None:
        """End the bar; the last plain line (unless it was just written or ``last_line`` is False)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.lines and last_line and self.n != self._last_n:
            self._line()
        self.lines = False
