"""Training throughput (iterations/s) of an options file (default: the embedded demo).

    python benchmarks/train_throughput.py [-opt options/demo.yml] [--iters 100]

Runs ``--iters`` iterations in a temporary experiment folder (no validation, no checkpoints
in between) and reports iterations/s and images/s.  Writes benchmarks/results/train_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from osir.engine.trainer import Trainer
from osir.core.options import load_options


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-opt", default=str(Path(__file__).parents[1] / "options" / "demo.yml"))
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"train.total_iter={args.iters}", f"val.freq={10 ** 9}", f"logger.checkpoint_freq={10 ** 9}",
                     f"logger.print_freq={10 ** 9}", "logger.progress_bar=false", "logger.tensorboard=false",
                     f"path.experiments_root={tmp}/experiments", "datasets.val=null"]
        opt = load_options(args.opt, overrides)
        trainer = Trainer(opt)
        start = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - start
    batch = opt.datasets["train"]["batch_size"] * opt.train.grad_accum_steps
    row = {"options": args.opt, "iters": args.iters, "seconds": elapsed, "iters_per_s": args.iters / elapsed,
           "images_per_s": args.iters * batch / elapsed, "device": str(trainer.accelerator.device)}
    print(f"{'options':<24} {'iters':>6} {'s':>8} {'it/s':>7} {'img/s':>7}")
    print(f"{Path(args.opt).name:<24} {args.iters:>6} {elapsed:>8.1f} {row['iters_per_s']:>7.2f} {row['images_per_s']:>7.1f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
