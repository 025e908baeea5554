"""Weight-file recognition, the shared part: what a detector returns (``Recognized``), how it declines a
file (``NoMatch``), and the key / shape helpers the detectors in the method folders
(``osir/methods/<name>/detect.py``, referenced by each card's ``detectors``) build on.  ``osir.recognize``
loops over the cards' detectors; this module knows no method.

The design follows spandrel (detection beside the architecture: a few keys give the hyper-parameters, and
the network built from them on the meta device must have exactly the file's keys and shapes), written by
hand because spandrel's detectors return single networks, not osir methods with their settings.  What the
weights cannot tell comes from the method's release options (``release_settings``, ``release_tile``: the
YAML files the cards declare), so every value has one copy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from osir.core.card import Detector, cards, resolve
from osir.core.checkpoint import CheckpointError, read_weights_file, unwrap_state_dict
from osir.core.options import Options
from osir.core.registry import OptionsError

__all__ = ["Recognized", "NoMatch", "indices", "need", "verify", "levels", "release_settings", "release_tile"]


class NoMatch(Exception):
    """A detector's candidate does not fit the file (the message says why, for the error listing every
    detector tried)."""


@dataclass
class Recognized:
    """What a detector found in a weights file."""

    method: str                       # osir method registry name
    arch: Optional[str]               # osir arch registry name of the network; None: not one arch network
    hyper_parameters: dict            # the arch's constructor options (for arch None: what the file tells)
    network: str                      # the method's network these weights belong to ("g", "l", ...)
    state_dict: dict                  # tensors keyed as osir's network expects (official layouts converted)
    detector: str                     # "spandrel" or "osir"
    path: str
    settings: dict = field(default_factory=dict)    # method options besides the network (release / run values)
    needs: dict = field(default_factory=dict)       # method options only the user can give -> why
    notes: list = field(default_factory=list)       # hyper-parameters the weights cannot tell, conversions
    settings_source: str = ""                        # where ``settings`` come from (release options file / run)
    run_options: Optional[dict] = None               # the osir run's options.yml, when the file sits in its models/
    converted: bool = False           # the file's keys differ from osir's: load ``state_dict``, not the file
    network_option: Optional[str] = "network"       # the method option holding the arch spec
    tile: Optional[dict] = None       # the inference tiling the method's releases set (``release_tile``)
    unconvertible: str = ""           # why ``--convert`` refuses the file ('' where it converts)

    def build_network(self) -> torch.nn.Module:
        """The arch built from ``hyper_parameters`` with ``state_dict`` loaded strictly, in eval mode."""
        if self.arch is None:
            needed = f" (it needs {', '.join(self.needs)})" if self.needs else ""
            raise OptionsError(f"'{self.path}' holds {self.method} weights, not one network: build the method "
                               f"with build_method(recognized.method_options(...)){needed}")
        from osir.core.checkpoint import CheckpointError, describe_mismatch
        from osir.core.registry import ARCHS
        net = ARCHS.build({"type": self.arch, **self.hyper_parameters}, f"{self.arch}")
        diff = describe_mismatch(net.state_dict(), self.state_dict)
        if diff:
            raise CheckpointError(f"'{self.path}' does not fit {self.arch}({self.hyper_parameters}): {diff}")
        net.load_state_dict(self.state_dict, strict=True)
        return net.eval()

    def method_options(self, pretrained: bool = True, **method_options) -> Options:
        """A resolved options tree (``osir.core.options.Options``) that ``build_method`` builds for inference:
        the method with its network spec and ``settings``, ``method_options`` on top (e.g. the files in
        ``needs``).  With ``pretrained``, ``path.pretrained`` names the file when it loads as it is
        (otherwise load ``state_dict`` into ``method.networks[network]``, see ``load_into``).  A needed
        option that is not given is an ``OptionsError`` naming it."""
        from osir.core.options import validate
        missing = [k for k in self.needs if method_options.get(k) is None]
        if missing:
            raise OptionsError("; ".join(f"method.{k}: {self.needs[k]}" for k in missing))
        method = {"type": self.method, **self.settings}
        if self.arch is not None and self.network_option:
            method[self.network_option] = {"type": self.arch, **self.hyper_parameters}
        method.update(method_options)
        # files the method loads itself (method.release_path) are not path.pretrained
        by_path = pretrained and not self.converted and self.settings.get("release_path") != self.path
        files = {self.network: self.path} if by_path else {}
        raw = {"name": f"recognized_{Path(self.path).stem}", "method": method,
               "path": {"pretrained": files, "strict_load": True}}
        if self.tile:
            raw["tile"] = dict(self.tile)
        return validate(raw, Options)

    def load_into(self, method) -> None:
        """Load ``state_dict`` strictly into ``method.networks[network]`` (for converted layouts, whose file
        ``path.pretrained`` cannot name)."""
        from osir.core.checkpoint import CheckpointError, describe_mismatch
        net = method.networks[self.network]
        diff = describe_mismatch(net.state_dict(), self.state_dict)
        if diff:
            raise CheckpointError(f"'{self.path}' does not fit network '{self.network}': {diff}")
        net.load_state_dict(self.state_dict, strict=True)

    def describe(self) -> str:
        lines = [f"file:     {self.path}", f"method:   {self.method}", f"arch:     {self.arch or '-'}",
                 f"network:  {self.network}", f"detector: {self.detector}", "hyper-parameters:"]
        lines += [f"  {k}: {v}" for k, v in self.hyper_parameters.items()]
        if self.settings:
            lines.append(f"method settings ({self.settings_source or 'release defaults'}):")
            lines += [f"  {k}: {v}" for k, v in self.settings.items()]
        if self.needs:
            lines.append("needs:")
            lines += [f"  {k}: {v}" for k, v in self.needs.items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- keys and shapes
def indices(state: dict, prefix: str) -> list[int]:
    """The distinct integers following ``prefix`` in the keys (``downs.`` -> [0, 1, 2, 3])."""
    found = set()
    for key in state:
        if key.startswith(prefix):
            head = key[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def need(state: dict, *keys: str) -> None:
    """``NoMatch`` naming the ``keys`` the state dict lacks."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise NoMatch(f"no {', '.join(repr(k) for k in missing)}")


def levels(state: dict, prefix: str) -> list[int]:
    """The levels ``prefix<i>`` of the keys, which must be 0, 1, ... (``NoMatch`` otherwise)."""
    found = indices(state, prefix)
    if found != list(range(len(found))) or not found:
        raise NoMatch(f"no consecutive '{prefix}<level>' keys")
    return found


def verify(arch: str, hp: dict, state: dict) -> None:
    """The arch built from ``hp`` on the meta device (nothing allocated) has exactly the keys and shapes of
    ``state``; ``NoMatch`` saying what differs otherwise."""
    from osir.core.checkpoint import describe_mismatch
    from osir.core.registry import ARCHS
    try:
        with torch.device("meta"):
            net = ARCHS.build({"type": arch, **hp}, arch)
    except (ValueError, TypeError, RuntimeError) as err:
        raise NoMatch(f"the hyper-parameters read from the keys ({hp}) do not build: {err}") from None
    diff = describe_mismatch(net.state_dict(), state, limit=3)
    if diff:
        raise NoMatch(f"keys read as {hp} but {diff}")


# ----------------------------------------------------------------------------- what the weights cannot tell
def release_settings(release: str, *, without: tuple[str, ...] = ()) -> dict:
    """The ``method`` section of the release ``release``'s options (a card's ``releases/<file>.yml``)
    without its ``type``, its ``network`` and the keys ``without``: the settings a detector assumes for
    weights that cannot tell them."""
    from osir.core.card import release_options, releases
    card, rel = releases()[release]
    method = dict(release_options(card, rel).get("method") or {})
    return {k: v for k, v in method.items() if k not in ("type", "network", *without)}


def release_tile(method_type: str) -> Optional[dict]:
    """The inference tiling (``tile`` section) of the first release of ``method_type`` that sets one, over
    the card describing it; None where none does."""
    from osir.core.card import card_of_method, release_options
    card = card_of_method(method_type)
    for rel in card.releases if card else ():
        options = release_options(card, rel)
        if (options.get("method") or {}).get("type") == method_type and options.get("tile"):
            return dict(options["tile"])
    return None


# ----------------------------------------------------------------------------- recognising a file
def read(path: Path):
    """(payload, state dict of tensors or None, notes): the file as read, and its tensors unwrapped
    (``osir.core.checkpoint.unwrap_state_dict``); None where the payload is not a dict of tensors (the
    ``payload`` detectors read it)."""
    if not path.is_file():
        raise CheckpointError(f"weights file not found: '{path}'")
    payload = read_weights_file(path)
    state, notes = unwrap_state_dict(payload)
    return payload, (state or None), notes


def detectors() -> list[Detector]:
    """Every card's detectors, in the order ``recognize`` tries them: decreasing ``priority``, then card order."""
    return sorted((d for card in cards() for d in card.detectors), key=lambda d: -d.priority)


def recognize(path: str | Path) -> Recognized:
    """The method, arch and hyper-parameters of the weights file ``path``; a ``CheckpointError`` naming the
    file when it cannot be read, or listing every detector tried and why it did not match."""
    path = Path(path)
    payload, state, read_notes = read(path)
    found, tried = None, []
    for detector in detectors():
        if state is None and not detector.payload:
            continue                            # it reads state dicts of tensors, which this file is not
        try:
            found = resolve(detector.function)(payload if detector.payload else state, path)
            break
        except NoMatch as why:
            tried.append(f"{detector.name}: {why}")
    if found is None:
        if state is None:
            raise CheckpointError(f"'{path}' holds no state dict of tensors, and no detector of whole files matches "
                                  f"it ({'; '.join(tried) or 'none is registered'})")
        sample = ", ".join(list(state)[:3])
        raise CheckpointError(f"'{path}': no known layout matches its {len(state)} tensors ({sample}, ...); "
                              f"tried: {'; '.join(tried)}")
    found.notes[:0] = read_notes
    _apply_run_options(found, path)
    return found


# ----------------------------------------------------------------------------- an osir run's options
RUN_FILE = re.compile(r"net_(?P<name>.+?)(?P<ema>_ema)?_(?P<iter>\d+|latest)\.safetensors")


def _apply_run_options(found: Recognized, path: Path) -> None:
    """For ``<run>/models/net_<name>_*.safetensors``: the method settings of ``<run>/options.yml`` when the
    run's method fits what was recognised (what the weights cannot tell, e.g. lambda, comes from the run).
    The run fits when its ``method.<network_option>`` is a spec of the recognised arch (the run's method
    type and the file's network name are then taken from the run); for weights that are not one arch
    network (``network_option`` None), when the run's method type is the recognised one and the file is
    its network.  A run whose network option holds another arch keeps the recognition as it is (e.g. a
    stage-2 run's frozen stage-1 model saved beside its trained network)."""
    match = RUN_FILE.fullmatch(path.name)
    options_file = path.parent.parent / "options.yml"
    if not match or path.parent.name != "models" or not options_file.is_file():
        return
    # read as options files are (an alias bomb is refused, not expanded); a file that is there but cannot be
    # read is an error, not release settings used silently in place of the run's
    from osir.core.options import load_yaml, short_repr
    label = f"the run's options '{options_file}' (beside '{path.name}')"
    run_options = load_yaml(options_file, label) or {}
    if not isinstance(run_options, dict):
        raise OptionsError(f"{label}: not an osir run's options (the top level is not a mapping)")
    method = run_options.get("method") or {}
    if not isinstance(method, dict):
        raise OptionsError(f"{label}: method: expected a mapping, got {short_repr(method)}")
    method = dict(method)
    key = found.network_option if found.arch is not None else None
    if key is None:                             # not one arch network: the run of that method, on that network
        if method.pop("type", None) == found.method and match["name"] == found.network:
            found.settings, found.settings_source = method, f"the run's {options_file}"
            found.run_options = run_options
        return
    spec = method.get(key)
    if not isinstance(spec, dict) or spec.get("type") != found.arch or "type" not in method:
        return
    differ = [k for k, v in found.hyper_parameters.items() if k in spec and _plainify(spec[k]) != _plainify(v)]
    if differ:
        found.notes.append(f"'{options_file}' gives {', '.join(f'{k}={short_repr(spec[k])}' for k in differ)}, the weights "
                           "differ: the weights' values are kept")
    for k, v in spec.items():                   # values the weights cannot tell (e.g. global_skip)
        if k != "type" and k not in differ:
            found.hyper_parameters[k] = v
    found.notes = [n for n in found.notes if n.split(":", 1)[0] not in spec]   # 'global_skip: not in the weights'
    run_method = method.pop("type")
    if run_method != found.method:              # the run's method tiles as its releases do
        found.tile = release_tile(run_method)
    found.method, found.network = run_method, match["name"]
    method.pop(key, None)
    found.settings = method
    found.needs = {k: v for k, v in found.needs.items() if not method.get(k)}
    found.settings_source = f"the run's {options_file}"
    found.run_options = run_options


def _plainify(value):
    return list(value) if isinstance(value, tuple) else value
