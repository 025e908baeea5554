"""Method cards: what the product commands (restore, recognize, export, bench, web) know of a method,
declared in the method's own folder as ``osir/methods/<name>/card.py`` and registered in ``CARDS``.

A command never names a method: it loops over the cards.  A card holds

* the method's **releases** (``Release``): a ``--model`` name, the release's options as package data (one
  YAML in the method folder's ``releases/``, which ``options/*.yml`` include through ``_base_:
  pkg://osir.methods.<name>/releases/<file>``, so there is one copy) and the files a user brings, each with
  the name the authors publish and the page that hosts it (``ReleaseFile``; nothing is downloaded);
* **detectors**: how to recognise its weight files by keys and shapes (spandrel's design: detection beside
  the architecture), as ``module:function`` references imported only when a file is recognised;
* its **export** graphs per architecture, or the reason it cannot be exported;
* **stand-in** weights for benchmarks (latency and memory do not depend on the weights' values);
* its **size contract** (``SizeRequirements``, after spandrel's ``SizeRequirements``) and how the inference
  layer may tile it (``Tiling``, after spandrel's ``ModelTiling``);
* its **sampling capability** (``Sampling``): which samplers and step counts ``restore`` accepts;
* **command-line shortcuts** for its options (``OptionFlag``: ``--task T`` for ``--set method.task=T``), which
  ``restore`` adds for every card.

Cards are plain data: importing one imports no torch, so ``osir restore --list-models`` stays fast.
Written by hand (a registry of dataclasses): spandrel's own classes describe single networks, not methods
with releases and samplers, and its ``SizeRequirements`` / ``ModelTiling``, which these mirror, cannot be
imported without importing spandrel and with it torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from osir.core.registry import CARDS

__all__ = ["CARDS", "MethodCard", "Release", "ReleaseFile", "Detector", "ExportName", "SizeRequirements", "Tiling",
           "Sampling", "cards", "releases", "release_options", "card_of_method", "resolve"]


class Tiling(str, Enum):
    """How the inference layer may cut an image into tiles for this method."""
    SUPPORTED = "supported"       # tiles restore like the whole image up to the blended seams
    DISCOURAGED = "discouraged"   # possible, but the method uses context beyond a tile (global noise, embeddings)
    INTERNAL = "internal"         # the method tiles itself (latent / VAE tiles): the inference layer does not


@dataclass(frozen=True)
class SizeRequirements:
    """The LQ sizes ``restore`` accepts: each side at least ``minimum`` and a multiple of ``multiple_of``
    (the inference layer pads to it, then crops back)."""
    minimum: int = 1
    multiple_of: int = 1

    def __post_init__(self):
        if self.minimum < 1 or self.multiple_of < 1:
            raise ValueError(f"SizeRequirements: minimum and multiple_of must be >= 1, got {self}")

    def accepts(self, height: int, width: int) -> bool:
        return all(s >= self.minimum and s % self.multiple_of == 0 for s in (height, width))

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The smallest accepted size at least ``height`` x ``width``."""
        m = self.multiple_of

        def side(s):
            return max(-(-s // m) * m, -(-self.minimum // m) * m)
        return side(height), side(width)


@dataclass(frozen=True)
class Sampling:
    """Which sampling settings ``restore`` takes per call.  ``samplers`` None: every registered sampler;
    ``()``: a feed-forward method (``--steps`` / ``--sampler`` are errors); ``steps``: the step count may be
    chosen per call (1 to the method's T)."""
    samplers: tuple[str, ...] | None = ()
    steps: bool = False

    @property
    def iterative(self) -> bool:
        return self.samplers != () or self.steps


FEED_FORWARD = Sampling()


@dataclass(frozen=True)
class ReleaseFile:
    """A file the user brings.  ``option``: where it goes, a network name (``g``: ``path.pretrained.g``) or
    an option key (``method.sd_path``); ``file``: the name the authors publish; ``page``: where they publish
    it (text for the user; nothing is downloaded); ``what``: one phrase."""
    option: str
    file: str
    page: str
    what: str

    def describe(self) -> str:
        return f"{self.what} ('{self.file}', from {self.page})"


@dataclass(frozen=True)
class FewSteps:
    """A measured few-step alternative to a release's configured sampling: ``osir restore --model <release>
    --sampler <sampler> --steps <steps>``; ``measured``: what it gave against the configured sampling, and
    the command that measured it (``osir restore --list-models`` prints it)."""
    sampler: str
    steps: int
    measured: str

    def flags(self) -> str:
        return f"--sampler {self.sampler} --steps {self.steps}"


@dataclass(frozen=True)
class OptionFlag:
    """A command-line shortcut a method's card gives ``osir restore`` for one of its options: ``--task sr4`` is
    ``--set method.task=sr4_bicubic`` (``option``; ``aliases`` map short values to the option's own), or, with
    ``option="weights"``, another name for ``--weights`` (``--prior FILE``).  The command knows no method: it
    adds every card's flags and turns them into ``--set`` / ``--weights``."""
    flag: str
    option: str
    help: str
    aliases: dict[str, str] = field(default_factory=dict)

    def value(self, given: str) -> str:
        return self.aliases.get(given, given)


@dataclass(frozen=True)
class Release:
    """A ``--model`` name.  ``options``: the YAML (in the method folder's ``releases/``) with the release's
    ``method`` section (and ``tile`` where the release tiles); ``weights``: the file ``--weights`` gives;
    ``needs``: further files only the user can give (``--set``); ``verified``: how the settings were checked
    against the authors' release ("unverified" where they could not be)."""
    name: str
    description: str
    options: str
    weights: ReleaseFile
    needs: tuple[ReleaseFile, ...] = ()
    verified: str = "unverified"
    size: SizeRequirements | None = None    # None: the card's
    few_steps: FewSteps | None = None       # a measured few-step alternative (``FewSteps``)


@dataclass(frozen=True)
class Detector:
    """Recognises a weights file: ``function`` (``module:function``) takes (state dict, path) and returns an
    ``osir.core.recognition.Recognized`` or raises ``NoMatch`` saying why not.  ``payload``: it takes the
    file's raw payload instead of the unwrapped state dict (a file that is not a dict of tensors is offered
    to these detectors only).  ``osir.recognize`` tries the detectors in decreasing ``priority``, then in
    card order (as spandrel's registry orders its detectors), and stops at the first match."""
    name: str
    function: str
    payload: bool = False
    priority: int = 0


@dataclass(frozen=True)
class ExportName:
    """A short ``osir export onnx --model`` name (besides the release names): the network at
    ``method.<network>`` of ``release``'s options, recorded as a network of ``method`` (default: the
    release's ``method.type``)."""
    name: str
    release: str
    network: str = "network"
    method: str | None = None


@dataclass(frozen=True)
class MethodCard:
    """See the module docstring.  ``methods``: the registered method types the card describes;
    ``exports``: arch -> ``module:function`` giving the ONNX graphs of a built network; ``not_exportable``:
    method or arch -> why it cannot be exported; ``export_names``: short ``--model`` names of ``osir export``
    (``ExportName``); ``standin``: ``module:function`` (the options' ``method`` section, a scratch
    folder, the seed -> notes) that replaces the method's own missing weight files for benchmarks, changing
    the section in place; None where random initialisation is the stand-in; ``noise_network``: the network
    whose evaluations are the NFE (None: the only or most-called network); ``title``: the method's name
    in messages; ``method_sampling``: a method type of the card whose sampling differs from ``sampling``
    (a feed-forward stage of an iterative method)."""
    name: str
    methods: tuple[str, ...]
    title: str = ""
    releases: tuple[Release, ...] = ()
    detectors: tuple[Detector, ...] = ()
    exports: dict[str, str] = field(default_factory=dict)
    not_exportable: dict[str, str] = field(default_factory=dict)
    export_names: tuple[ExportName, ...] = ()
    standin: str | None = None
    noise_network: str | None = None
    size: SizeRequirements = SizeRequirements()
    tiling: Tiling = Tiling.SUPPORTED
    sampling: Sampling = FEED_FORWARD
    method_sampling: dict[str, Sampling] = field(default_factory=dict)
    package: str = ""                     # the method's package, holding ``releases/`` (card modules pass __package__)
    flags: tuple[OptionFlag, ...] = ()    # ``osir restore`` shortcuts for the method's options (``OptionFlag``)

    def release(self, name: str) -> Release | None:
        return next((r for r in self.releases if r.name == name), None)

    def sampling_for(self, method_type: str) -> Sampling:
        """The sampling capability of the registered method ``method_type`` (one of ``methods``)."""
        return self.method_sampling.get(method_type, self.sampling)


def resolve(reference: str) -> Any:
    """Import ``module:attribute``."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def cards() -> list[MethodCard]:
    """Every registered card, in name order (importing each card module: plain data)."""
    return [CARDS.get(name) for name in CARDS.names()]


def releases() -> dict[str, tuple[MethodCard, Release]]:
    """``--model`` name -> (card, release), over every card."""
    out: dict[str, tuple[MethodCard, Release]] = {}
    for card in cards():
        for rel in card.releases:
            if rel.name in out:
                raise KeyError(f"release '{rel.name}' is declared by the cards '{out[rel.name][0].name}' and "
                               f"'{card.name}'")
            out[rel.name] = (card, rel)
    return out


def release_options(card: MethodCard, release: Release) -> dict:
    """The raw options tree of ``release`` (its YAML, with ``_base_`` resolved), not yet validated."""
    from osir.core.options import read_yaml
    return read_yaml(_package_file(card, release.options))


def _package_file(card: MethodCard, name: str):
    from osir.core.options import _base_path
    from pathlib import Path
    return _base_path(Path("."), f"pkg://{card.package}/releases/{name}")


def card_of_method(method_type: str) -> MethodCard | None:
    """The card describing the registered method ``method_type``, or None."""
    return next((c for c in cards() if method_type in c.methods), None)
