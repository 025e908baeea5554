"""Checkpoint recognition: the osir method, network and hyper-parameters of a weights file, read from its
keys and shapes alone (``recognize``).  ``python -m osir.recognize W.pth`` prints them; ``--convert
out.safetensors`` writes the weights in osir's layout with a model card next to them.

The detection itself lives beside each method (spandrel's design): every card (``osir.core.card``) lists
its detectors, ``module:function`` references into ``osir/methods/<name>/detect.py``, and ``recognize``
tries them all (``detectors``), the first that matches giving an ``osir.core.recognition.Recognized``.
A detector reads a few keys for the hyper-parameters and checks that the network built from them (on
the meta device, so nothing is allocated) has exactly the file's keys and shapes; what the weights
cannot tell (a diffusion method's lambda, T, the sampler, ...) comes from the method's release options,
or from the run's ``options.yml`` when the file sits in an osir run's ``models/`` folder.  Files are read
without executing pickled code.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from osir.core.card import Detector, cards, resolve
from osir.core.recognition import NoMatch, Recognized, release_tile
from osir.engine.checkpoint import CheckpointError, read_weights_file, unwrap_state_dict
from osir.registry import OptionsError

__all__ = ["Recognized", "recognize", "detectors", "main"]


def __getattr__(name: str):
    """``TILES``: method type -> the inference tiling its releases set (computed from the cards when asked
    for, so that importing this module reads no release file)."""
    if name == "TILES":
        return {m: tile for card in cards() for m in card.methods if (tile := release_tile(m))}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read(path: Path):
    """(payload, state dict of tensors or None, notes): the file as read, and its tensors unwrapped
    (``osir.engine.checkpoint.unwrap_state_dict``); None where the payload is not a dict of tensors (the
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
    import yaml
    try:
        run_options = yaml.safe_load(options_file.read_text(encoding="utf-8")) or {}
        method = dict(run_options.get("method") or {})
    except (OSError, yaml.YAMLError, AttributeError):
        found.notes.append(f"'{options_file}' is not readable: release settings are used")
        return
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
        found.notes.append(f"'{options_file}' gives {', '.join(f'{k}={spec[k]!r}' for k in differ)}, the weights "
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


# ----------------------------------------------------------------------------- command line
def convert(found: Recognized, out: str | Path) -> Path:
    """Write ``found.state_dict`` as osir's safetensors (atomically) and its model card; the card's path."""
    from osir.engine.checkpoint import save_state_dict
    from osir.model_card import write_model_card
    out = Path(out)
    if out.suffix != ".safetensors":
        raise OptionsError(f"--convert: the output is a .safetensors file, got '{out}'")
    if found.unconvertible:
        raise OptionsError(f"--convert: {found.unconvertible}")
    if out.resolve() == Path(found.path).resolve():
        raise OptionsError(f"--convert: '{out}' is the input file")
    save_state_dict(found.state_dict, out)
    spec = {"type": found.arch, **found.hyper_parameters} if found.arch else None
    return write_model_card(out, method=found.method, hyper_parameters=found.hyper_parameters, source=found.path,
                            options=found.run_options,
                            arch=found.arch, network=found.network, detector=found.detector,
                            method_settings=found.settings, network_spec=spec, notes=found.notes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osir.recognize", description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help="a weights file (official release or osir's safetensors)")
    parser.add_argument("--convert", metavar="OUT.safetensors",
                        help="write the weights in osir's layout there, with a model card next to it")
    args = parser.parse_args(argv)

    def body() -> int:
        found = recognize(args.weights)
        print(found.describe())
        if args.convert:
            card = convert(found, args.convert)
            print(f"wrote {args.convert} and {card}")
        return 0

    from osir.cli import run
    return run("osir recognize", body)


if __name__ == "__main__":
    sys.exit(main())
