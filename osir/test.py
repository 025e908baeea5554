"""Restore every image of every test set in an options file, write the images and metrics.

    python osir/test.py -opt options/test/irsde.yml [--set key.path=value ...]

Writes ``results/<name>/<set>/{<image>.png, metrics.csv, metrics.json}`` (images under their path
relative to the test set's folder) and prints one summary table.  Each result records the metric
settings, osir/pyiqa versions, the sha256 of every weights file or folder, and the seed.  Test sets
whose images share one size are restored ``batch_size`` at a time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from osir import cli


def run(opt: dict) -> dict[str, dict]:
    from osir.data.io import write_image
    from osir.engine.checkpoint import sha256
    from osir.engine.trainer import build_dataset, build_method
    from osir.engine.validation import evaluation_mode, iterate
    from osir.metrics.results import format_table, provenance, write_results
    from osir.metrics.suite import MetricSuite

    device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
    method = build_method(opt)
    method.setup(device, opt["inference"]["mixed_precision"])
    for net in method.networks.values():
        net.to(device)
    method.prepare_inference()
    sources = {**method.pretrained, **opt["path"]["pretrained"]}
    missing = [name for name in method.networks if name not in sources]
    if missing:
        print(f"warning: no weights for network(s) {', '.join(missing)} (path.pretrained): they keep their "
              "initial weights", file=sys.stderr)
    metrics = MetricSuite(opt["metrics"], device)
    checkpoints = {name: {"path": str(path), "sha256": sha256(path)} for name, path in sources.items()}
    summaries = {}
    with evaluation_mode(method):
        for set_name, spec in opt["datasets"].items():
            if set_name == "train":
                continue
            dataset = build_dataset(spec, f"datasets.{set_name}")
            out_dir = Path(opt["path"]["results_root"]) / opt["name"] / set_name
            info = provenance(metrics.settings(), seed=opt["seed"], checkpoints=checkpoints, method=opt["method"],
                              tile=opt["tile"], dataset=spec)
            custom = method.evaluate(dataset, spec["batch_size"])
            if custom is not None:   # the method's own evaluation (e.g. retrieval accuracy)
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / "metrics.json").write_text(json.dumps({**info, "mean": custom}, indent=2))
                method.save_evaluation(out_dir)                  # e.g. a confusion matrix
                summaries[set_name] = {"count": len(dataset), "mean": custom}
                continue
            rows = []
            for item, restored, scores, _ in iterate(method, dataset, metrics, device, tile=opt["tile"],
                                                     seed=opt["seed"], batch_size=spec["batch_size"],
                                                     num_workers=spec["num_workers"]):
                write_image(out_dir / f"{item['name']}.png", restored[0])
                notes = {k: item[k] for k in method.output_notes}      # e.g. the prompt of this image
                rows.append({"image": f"{item['name']}.png", **notes, **scores})
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

    def body() -> int:
        run(load_options(args.opt, args.set))
        return 0
    return cli.run("osir", body)


if __name__ == "__main__":
    sys.exit(main())
