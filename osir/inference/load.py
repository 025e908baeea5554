"""One loader: a method built, given its weights and prepared for inference, from an options tree, a
release name (``--model``, from the method cards) or a weights file alone (recognised by the cards'
detectors).  test.py, ``osir restore``, ``osir web``, ``osir.bench`` and the training engine build methods
through ``build_method`` here; this module names no method.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from osir.core.options import PRECISIONS, Options, as_options, check_files  # noqa: F401  (PRECISIONS re-exported)
from osir.core.registry import METHODS, OptionsError, nearest



def build_method(opt: Options):
    """The method of resolved options ``opt`` (typed; a plain mapping is validated first), with the files of
    ``path.pretrained`` loaded into its networks."""
    opt = as_options(opt)
    method = METHODS.build(opt.method, "method")
    for name, path in opt.path.pretrained.items():
        if name not in method.networks:
            raise OptionsError(f"path.pretrained.{name}: the method has no network '{name}'; "
                               f"networks: {', '.join(method.networks)}")
        method.load_pretrained(name, path, strict=opt.path.strict_load)
    return method


def pick_device(name: str | None = None, flag: str = "--device") -> torch.device:
    """``name`` checked by allocating on it, or (None) the current accelerator, else the CPU."""
    if not name:
        return torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        from osir.core.cli import one_line
        raise OptionsError(f"{flag}: '{name}' is not usable here ({one_line(err)[:160]}); "
                           "use cpu or an available accelerator (cuda, cuda:1, mps, xpu)") from None
    return device


def prepare_for_inference(method, device: torch.device, mixed_precision: str = "no", frozen: bool = True):
    """``setup`` on ``device``, networks moved there (in eval mode and without gradients when ``frozen``),
    then the method's ``prepare_inference`` (e.g. LoRA merged)."""
    method.setup(device, mixed_precision)
    for net in method.networks.values():
        net.to(device)
        if frozen:
            net.eval().requires_grad_(False)
    method.prepare_inference()
    if frozen:
        for net in method.networks.values():
            net.eval()
    return method


def check_precision(precision: str, device: torch.device) -> None:
    """``OptionsError`` for an unknown ``--precision`` or fp16 on the CPU."""
    if precision not in PRECISIONS:
        raise OptionsError(f"--precision: unknown precision '{precision}'; allowed: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise OptionsError("--precision fp16: osir's methods autocast to fp16 on accelerators only (on the CPU it "
                           "would silently run fp32); use --precision bf16 or fp32 on the CPU")


# ----------------------------------------------------------------------------- options from a release / weights
@dataclass
class Resolved:
    """Options ready for ``build_method``, with what was recognised in the weights (None when the options
    name the file) and a note for the user."""
    options: Options
    recognized: object = None
    note: str = ""
    name: str = ""


def _set(tree: Mapping, key: str, value) -> None:
    """``tree[a][b][c] = value`` for ``key`` 'a.b.c' (options typed or plain), missing mappings created."""
    node = tree
    *parents, last = key.split(".")
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    node[last] = value


def _get(tree: dict, key: str):
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def weights_file(weights) -> Path:
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: '{path}'")
    return path


def describe(rec) -> str:
    hp = " ".join(f"{k}={v}" for k, v in rec.hyper_parameters.items())
    arch = f"{rec.arch} {hp}".strip() if rec.arch else "its own layout"
    return f"{rec.method} ({arch}; detected by {rec.detector})"


def validated(raw: dict, overrides: list[str] | None, needs=()) -> Options:
    """``raw`` with ``--set`` overrides applied and validated as inference options; every file in ``needs``
    (``ReleaseFile``s) that is still missing is an ``OptionsError`` naming its key, what it is and where
    users get it."""
    from osir.core.options import apply_overrides, validate
    raw = apply_overrides(raw, overrides or [])
    missing = [f for f in needs if not _get(raw, f.option)]
    if missing:
        raise OptionsError("; ".join(f"{f.option}: --model {raw['name']} needs {f.describe()}; give it with "
                                     f"--set {f.option}=PATH" for f in missing))
    opt = validate(raw, Options)
    opt.datasets = {}
    return opt


def from_release(name: str, weights, overrides: list[str] | None = None) -> Resolved:
    """Options for ``--model NAME``: the release's options (its card's YAML) with the network read from the
    weights where a card's detector recognises the file (falling back to the release network, loaded
    strictly, when none does)."""
    from osir.core.card import release_options, releases
    from osir.core.checkpoint import CheckpointError
    from osir.core.recognition import recognize
    known = releases()
    if name not in known:
        raise OptionsError(f"--model: unknown model '{name}'{nearest(name, known)}; allowed: {', '.join(known)}")
    card, release = known[name]
    weights = weights_file(weights)
    raw = copy.deepcopy(release_options(card, release))
    raw.update(name=name, path={"pretrained": {}})
    method = raw["method"]
    target = release.weights.option
    if "." in target:                                   # a file the method reads itself (osediff.pkl)
        _set(raw, target, str(weights))
        return Resolved(validated(raw, overrides, release.needs), None, "", name)
    rec, note = None, ""
    try:
        rec = recognize(weights)
    except CheckpointError as err:        # not a layout any card knows: the release network, strictly
        from osir.core.cli import one_line
        note = f"note: '{weights}' not recognised ({one_line(err)[:200]}); using {name}'s release network"
    option = (rec.network_option if rec is not None else None) or "network"     # where the method takes its network
    expected = (method.get(option) or {}).get("type")
    if rec is not None and rec.arch is not None:
        rec.network = target                # the release's network takes the file (a run may name it otherwise)
        if expected is not None and rec.arch != expected:
            raise OptionsError(f"--model {name}: expects {expected} weights ({method['type']}), but '{weights}' "
                               f"holds {describe(rec)}; choose another --model or leave --model out")
        network = {"type": rec.arch, **rec.hyper_parameters}
        # a hyper-parameter that is also a method option (a super-resolution scale) must agree with the release
        clash = {k: v for k, v in network.items() if k != "type" and k in method and method[k] != v}
        if clash:
            key, value = next(iter(clash.items()))
            others = [n for n, (c, r) in known.items() if c is card and _get(release_options(c, r), f"method.{key}")
                      == value]
            shown = (lambda v: f"x{v}") if key == "scale" else (lambda v: f"{key} {v}")
            raise OptionsError(f"--model {name} is {shown(method[key])}, but '{weights}' holds a {shown(value)} "
                               f"{rec.arch}; use --model {' or '.join(others) or '(none)'} or leave --model out")
        method[option] = network
        note = f"weights: {describe(rec)}"
    else:
        rec = None
        raw["path"]["pretrained"][target] = str(weights)
    return Resolved(validated(raw, overrides, release.needs), rec, note, name)


#: the sampler settings a weights file cannot tell, shown when they are assumed
SDE_KEYS = ("max_sigma", "T", "eps", "sampler")


def _mentions(tree, value: str) -> bool:
    if isinstance(tree, dict):
        return any(_mentions(v, value) for v in tree.values())
    if isinstance(tree, list):
        return any(_mentions(v, value) for v in tree)
    return str(tree) == value


def from_weights(weights, overrides: list[str] | None = None) -> Resolved:
    """Options for weights without ``--model``: the method and its network recognised by the cards'
    detectors; what only the user can give (``needs``) from ``--set method.<key>=``."""
    from osir.core.options import apply_overrides
    from osir.core.recognition import recognize
    weights = weights_file(weights)
    rec = recognize(weights)
    given = apply_overrides({}, overrides or []).get("method") or {}
    missing = [k for k in rec.needs if given.get(k) is None]
    if missing:
        raise OptionsError("; ".join(f"method.{k}: {rec.needs[k]} ('{weights}' is {rec.method} weights); give it "
                                     f"with --set method.{k}=PATH" for k in missing))
    raw = rec.method_options(pretrained=False, **{k: given[k] for k in rec.needs}).to_dict()
    note = f"recognised '{weights}' as {describe(rec)}"
    if rec.settings and rec.settings_source.startswith("not in the weights"):
        shown = " ".join(f"{k}={v}" for k, v in rec.settings.items() if k in SDE_KEYS)
        if shown:                                  # say which sampler settings were assumed, and how to change them
            note += (f"; assumed {shown} ({rec.settings_source}): change with --set method.<key>=VALUE, "
                     "e.g. --set method.max_sigma=70")
    if rec.arch is None:                           # e.g. osediff.pkl: the method reads the file itself
        if not _mentions(raw["method"], str(weights)):
            raw["path"]["pretrained"][rec.network] = str(weights)
        rec = None
    opt = validated(raw, overrides)
    return Resolved(opt, rec, note, opt.method["type"])


def weights_option(method_type: str) -> str:
    """Where a weights file given beside an options file goes: the option key of the method's releases
    when they read the file themselves (``method.release_path``), else ``path.pretrained.g``."""
    from osir.core.card import card_of_method
    card = card_of_method(method_type)
    own = {r.weights.option for r in (card.releases if card else ()) if "." in r.weights.option}
    return own.pop() if len(own) == 1 else "path.pretrained.g"


def from_options(path, weights=None, overrides: list[str] | None = None) -> Resolved:
    """An osir options file; ``weights`` replaces the file its method's releases take (``weights_option``)."""
    from osir.core.options import load_options
    opt = load_options(path, overrides)
    if weights is not None:
        _set(opt, weights_option(opt.method["type"]), str(weights_file(weights)))
    opt.datasets = {}
    return Resolved(opt, None, "", opt.name)


def load(resolved: Resolved, device: torch.device, precision: str = "fp32"):
    """The method of ``resolved`` built, given its weights (the recognised file's converted tensors where the
    options cannot name the file) and prepared for inference on ``device``."""
    from osir.core.checkpoint import load_network
    check_precision(precision, device)
    opt, rec = resolved.options, resolved.recognized
    check_files(opt, datasets=False)          # every file the options name, all missing ones in one error
    method = build_method(opt)
    if rec is not None:
        if rec.network not in method.networks:
            raise OptionsError(f"'{rec.path}' holds network '{rec.network}', which {opt.method['type']} does not "
                               f"have; networks: {', '.join(method.networks)}")
        load_network(method.networks[rec.network], str(rec.path), strict=True, state=rec.state_dict)
        opt.path.pretrained[rec.network] = str(rec.path)     # the file named when an output is not finite
    return prepare_for_inference(method, device, PRECISIONS[precision])
