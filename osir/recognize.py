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
import sys
from pathlib import Path

from osir.core.recognition import RUN_FILE, Recognized, detectors, read, recognize  # noqa: F401 (re-exported)
from osir.core.registry import OptionsError

__all__ = ["Recognized", "recognize", "detectors", "read", "RUN_FILE", "convert", "main"]


# ----------------------------------------------------------------------------- command line
def convert(found: Recognized, out: str | Path) -> Path:
    """Write ``found.state_dict`` as osir's safetensors (atomically) and its model card; the card's path."""
    from osir.core.checkpoint import save_state_dict
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

    from osir.core.cli import run
    return run("osir recognize", body)


if __name__ == "__main__":
    sys.exit(main())
