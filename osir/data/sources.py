"""Where users get the public data sets an options file names (``source:`` in a data set's options).

A data set's options may say where its images come from: ``source: Rain100H-test`` names a ``DataSource`` in
the ``DATA_SOURCES`` registry, any other text is shown as written.  When the set's folder is missing, the
preflight (``osir.core.files``) names the files to fetch and the page that hosts them.  The entries live in the
method folders whose authors' README links the set (``osir/methods/<m>/files.py``, entry point group
``osir.data_sources``); a set whose README links no page says so instead of guessing one.  Nothing is
downloaded.  Written by hand: a list of facts, no code to reuse.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from osir.core.registry import DATA_SOURCES


@dataclass(frozen=True)
class DataSource:
    """A public data set: what it is, the files its page publishes and that page (``None``: no page is linked
    in ``linked_from``, the README where we looked)."""
    what: str
    files: Optional[str] = None
    page: Optional[str] = None
    linked_from: str = ""

    def where(self) -> tuple[Optional[str], Optional[str]]:
        """(published, page) as the preflight shows them."""
        if self.page is None:
            return None, None
        return self.files, f"{self.page} (linked from {self.linked_from})"

    def describe(self) -> str:
        return self.what if self.page else f"{self.what}; no download page is linked in {self.linked_from}"


def describe_source(source) -> tuple[str, Optional[str], Optional[str]]:
    """(what, published, page) for a data set's ``source`` option: a registered entry's facts, or the text as
    written."""
    if not isinstance(source, str) or source not in DATA_SOURCES:
        return f"from {source}", None, None
    entry = DATA_SOURCES.get(source, "source")
    return (f"of {entry.describe()}", *entry.where())
