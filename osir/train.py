"""Train a method from an options file.

    python osir/train.py -opt options/irsde.yml [--auto_resume] [--set key.path=value ...]
    torchrun --nproc_per_node 2 osir/train.py -opt ...      # or: accelerate launch osir/train.py -opt ...
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from osir.core.cli import run


def parse_args(argv=None):
    from osir.core.options import options_help
    parser = argparse.ArgumentParser(prog="osir/train.py", description="Train an osir method.", epilog=options_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True, help="YAML options file")
    parser.add_argument("--auto_resume", action="store_true",
                        help="resume from the newest training state of this experiment, if any")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY.PATH=VALUE",
                        help="override options, e.g. --set train.total_iter=1000 datasets.train.batch_size=2")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run("osir", lambda: train(args))


def _terminated(signum, frame):
    from osir.core.errors import TrainingInterrupted
    raise TrainingInterrupted("stopped by SIGTERM before training started: nothing to save", signum)


def _build_trainer(args):
    """The Trainer; SIGTERM meanwhile unwinds like Ctrl-C (the experiment's lock is released)."""
    from osir.core.options import as_options, check_files, check_files_early, read_options
    raw = read_options(args.opt, args.set)
    check_files_early(raw, datasets=True, training=True)   # path errors before any class (or torch) is imported
    opt = as_options(raw)
    check_files(opt, datasets=True, training=True)     # and on the validated options, before the trainer's imports
    from osir.engine.trainer import Trainer
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return Trainer(opt, auto_resume=args.auto_resume)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def train(args) -> int:
    """Exit codes: 0 trained; 2 a user error (one line); 130 / 143 stopped by SIGINT / SIGTERM (during
    training after saving the training state, see ``Trainer.train``); no traceback for any of them."""
    from osir.core.errors import TrainingInterrupted
    try:
        trainer = _build_trainer(args)
        results = trainer.train()
    except TrainingInterrupted as stop:
        if stop.state is None:          # the trainer has logged where it saved; say what happened otherwise
            print(f"osir: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("osir: interrupted before training started: nothing to save", file=sys.stderr)
        return 128 + signal.SIGINT
    if trainer.accelerator.is_main_process:
        for set_name, summary in results["val"].items():
            for metric, values in summary.items():
                if "restored" not in values:
                    print(f"[{set_name}] {metric}: {values['value']:.4f}")
                    continue
                before = f"input {values['input']:.2f} -> " if "input" in values else ""
                print(f"[{set_name}] {metric}: {before}restored {values['restored']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
