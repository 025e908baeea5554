"""Restore every image of every test set in an options file, write the images and metrics.

    python osir/test.py -opt options/test/irsde.yml [--set key.path=value ...]

Writes ``results/<name>/<set>/{<image>.png, metrics.csv, metrics.json}`` and prints one summary
table.  Each result records the metric settings, osir/pyiqa versions, checkpoint sha256s and seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from osir.registry import OptionsError


def run(opt: dict) -> dict[str, dict]:
    from osir.data.io import write_image
    from osir.engine.checkpoint import sha256
    from osir.engine.trainer import build_dataset, build_method
    from osir.engine.validation import iterate
    from osir.metrics.results import format_table, provenance, write_results
    from osir.metrics.suite import MetricSuite

    device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
    method = build_method(opt)
    missing = [name for name in method.networks if name not in opt["path"]["pretrained"]]
    if missing:
        print(f"warning: no weights for network(s) {', '.join(missing)} (path.pretrained): they keep their "
              "initial weights", file=sys.stderr)
    for net in method.networks.values():
        net.to(device).eval()
    metrics = MetricSuite(opt["metrics"], device)
    checkpoints = {name: {"path": path, "sha256": sha256(path)} for name, path in opt["path"]["pretrained"].items()}
    summaries = {}
    for set_name, spec in opt["datasets"].items():
        if set_name == "train":
            continue
        dataset = build_dataset(spec, f"datasets.{set_name}")
        out_dir = Path(opt["path"]["results_root"]) / opt["name"] / set_name
        rows = []
        for _, item, restored, scores, _ in iterate(method, dataset, metrics, device, tile=opt["tile"], seed=opt["seed"]):
            stem = Path(item["lq_path"]).stem
            write_image(out_dir / f"{stem}.png", restored[0])
            rows.append({"image": f"{stem}.png", **scores})
        info = provenance(metrics.settings(), seed=opt["seed"], checkpoints=checkpoints, method=opt["method"],
                          tile=opt["tile"], dataset=spec)
        summaries[set_name] = write_results(out_dir, rows, info)
    if summaries:
        print(format_table(summaries))
    return summaries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="osir/test.py", description="Restore and score test sets.")
    parser.add_argument("-opt", "--opt", required=True, help="YAML options file")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY.PATH=VALUE")
    args = parser.parse_args(argv)
    from osir.options import load_options
    try:
        opt = load_options(args.opt, args.set)
        run(opt)
    except OptionsError as err:
        print(f"osir: options error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
