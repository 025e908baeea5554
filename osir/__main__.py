"""The ``osir`` command: one entry point for every tool, each sub-command handed to its module's
``main(argv)`` with the remaining arguments (only the chosen module is imported, after the known harmless
third-party messages are hidden: ``osir.core.quiet``, before the libraries that print them are imported).

    osir restore --weights W.pth photo.jpg -o out/      # = python -m osir.restore ...
    osir train -opt options/demo.yml                     # = python osir/train.py -opt ...
    osir <command> --help
"""
from __future__ import annotations

import importlib
import sys

from osir.core.registry import missing_package, nearest

#: sub-command -> (module whose main(argv) runs it, one line for ``osir --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("osir.train", "train a method from an options file (-opt FILE)"),
    "test": ("osir.test", "restore and score the test sets of options files"),
    "restore": ("osir.restore", "restore images or folders with a model (--model / --weights), no options file"),
    "score": ("osir.metrics.__main__", "score a folder of restored images against a GT folder"),
    "compare": ("osir.compare", "put test results of several runs side by side (md, csv, html)"),
    "degrade": ("osir.degrade", "make a synthetic test set from a GT folder"),
    "bench": ("osir.bench", "benchmarks: sampling steps, efficiency (params, MACs, latency, memory)"),
    "web": ("osir.web", "a local Gradio page to restore uploaded images"),
    "export": ("osir.export", "export a feed-forward network (ONNX, optional int8)"),
    "recognize": ("osir.recognize", "tell the method and hyper-parameters of a weights file from its keys"),
}


def usage() -> str:
    from osir import __version__
    width = max(map(len, COMMANDS))
    lines = [f"usage: osir <command> [arguments]      (osir {__version__})", "",
             "Open-source image restoration. Commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "osir <command> --help shows a command's arguments."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from osir import __version__
        print(f"osir {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"osir: unknown command '{command}'{nearest(command, COMMANDS)}; commands: {', '.join(COMMANDS)} "
              "(osir --help)", file=sys.stderr)
        return 2
    from osir.core import quiet         # here, not at the top: ``osir --help`` stays small
    quiet.install()
    try:
        module = importlib.import_module(COMMANDS[command][0])
    except ModuleNotFoundError as err:      # e.g. osir web without gradio: one line with the pip command
        line = missing_package(err)
        if line is None:
            raise
        print(f"osir {command}: error: osir {command} {line}", file=sys.stderr)
        return 2
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
