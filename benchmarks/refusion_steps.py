"""PSNR against the number of reverse steps (100, 50, 20, 10) for the embedded demos' IR-SDE and
Refusion, with the posterior sampler on a coarser time grid (``method.sample_steps``), on the demos'
held-out image (astronaut, 256 x 256 crop, sigma-25 noise drawn from the run's seed).

    python osir/train.py -opt options/demo.yml && python osir/train.py -opt options/refusion_demo.yml
    python benchmarks/refusion_steps.py [--steps 100 50 20 10]

Each restoration goes through test.py's code path (options of options/test/demo.yml and
options/test/refusion_demo.yml with the held-out validation set); the input's PSNR is the noisy image's.
Also reports the seconds per image of each setting and their ratio to 100 steps measured in the same run.
Writes benchmarks/results/refusion_steps.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMOS = {"IR-SDE": ("options/test/demo.yml", "options/demo.yml"),
         "Refusion": ("options/test/refusion_demo.yml", "options/refusion_demo.yml")}


def main(argv=None) -> int:
    from osir import test as test_script
    from osir.engine.trainer import build_dataset
    from osir.metrics.suite import MetricSuite
    from osir.core.options import load_options
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 50, 20, 10])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "refusion_steps.json"))
    args = parser.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (test_file, train_file) in DEMOS.items():
            held_out = load_options(ROOT / train_file).datasets["val"]
            item = build_dataset(held_out, "held_out")[0]
            rows.setdefault("input", {})[name] = MetricSuite({"psnr": {"type": "psnr"}}).score(
                item["lq"][None], item["gt"][None])["psnr"][0]
            for steps in args.steps:
                opt = load_options(ROOT / test_file, [f"method.sample_steps={steps}", f"path.results_root={tmp}"])
                weights = Path(opt.path.pretrained["g"])
                opt.path.pretrained["g"] = str(weights if weights.is_absolute() else ROOT / weights)
                if not Path(opt.path.pretrained["g"]).is_file():
                    print(f"{name}: no trained weights at {weights}: run python osir/train.py -opt {train_file}")
                    return 2
                opt.datasets = {"held_out": held_out}
                start = time.perf_counter()
                summary = test_script.run(opt)["held_out"]
                seconds = time.perf_counter() - start
                rows.setdefault(name, {})[steps] = {"psnr": summary["mean"]["psnr"], "seconds": seconds}
    inputs = rows.pop("input")
    for name, by_steps in rows.items():
        base = by_steps[max(by_steps)]["seconds"]
        for row in by_steps.values():
            row["time_vs_most_steps"] = row["seconds"] / base
    print("input PSNR: " + ", ".join(f"{n} {v:.2f}" for n, v in inputs.items()))
    rows["input_psnr"] = inputs
    names = [n for n in rows if n != "input_psnr"]
    print(f"{'steps':>6} " + " ".join(f"{n + ' PSNR':>15}" for n in names))
    for steps in args.steps:
        print(f"{steps:>6} " + " ".join(f"{rows[n][steps]['psnr']:>15.2f}" for n in names))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
