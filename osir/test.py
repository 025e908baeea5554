"""Restore every image of every test set in one or more options files, write the images and metrics.

    python osir/test.py -opt options/test/a.yml [options/test/b.yml ...] [--seeds K] [--set key.path=value ...]

Writes ``results/<name>/<set>/{<image>.png, metrics.csv, metrics.json}`` (images under their path
relative to the test set's folder; an earlier run's ``results/<name>`` is first moved to
``results/<name>_archived_<time>``, and a line says so) and prints one summary table per options
file (and, with several, one line per run and set at the end); ``--set`` applies to every file.  Each result
records the metric settings, osir/pyiqa versions, the sha256 of every weights file or folder, the
seeds and the test set's identity (``dataset_hash``: see ``osir.metrics.results.DatasetHash``), so
``python -m osir.compare`` can put runs side by side.  ``--seeds K`` restores each test set with
the seeds seed..seed+K-1 (stochastic samplers) and records the mean and std over seeds of the
per-seed means; images are written for the first seed only.  Test sets whose images share one
size are restored ``batch_size`` at a time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from osir.core import cli
from osir.core.options import Options, as_options, check_files
from osir.core.progress import Progress


def set_metrics(metrics, out_dir: Path, spec: dict) -> dict[str, float]:
    """THE one place where metrics of a whole test set (FID, ...) join the per-image means: scored
    on the written images (the first seed's) against the test set's GT folder, when the metric
    suite offers ``score_sets`` and the set has a GT folder on disk."""
    gt_dir = spec.get("dataroot_gt")
    if not hasattr(metrics, "score_sets") or gt_dir is None or spec.get("io_backend", "disk") != "disk":
        return {}
    return dict(metrics.score_sets(out_dir, gt_dir) or {})


def run(opt: Options, seeds: int = 1) -> dict[str, dict]:
    """Restore and score every test set of ``opt`` (typed options; a plain mapping is validated first) with the
    seeds ``opt.seed + 0..seeds-1``; returns {set name: summary} (the content of its metrics.json)."""
    from osir.data.io import write_image
    from osir.core.checkpoint import archive_folder, sha256, write_text
    from osir.engine.trainer import build_dataset
    from osir.inference.load import build_method, pick_device, prepare_for_inference
    from osir.engine.validation import evaluation_mode, iterate
    from osir.metrics.results import DatasetHash, format_table, provenance, write_results
    from osir.metrics.suite import MetricSuite

    opt = as_options(opt)
    check_files(opt)                  # every file and folder the options name, all missing ones in one error
    device = pick_device()
    method = prepare_for_inference(build_method(opt), device, opt.inference.mixed_precision, frozen=False)
    sources = {**method.pretrained, **opt.path.pretrained}
    missing = method.networks_without_weights(opt.path.pretrained)
    if missing:
        print(f"warning: network(s) {', '.join(missing)} got no trained weights (path.pretrained, or files the "
              "method loads itself): they keep the weights they were built with", file=sys.stderr)
    metrics = MetricSuite(opt.metrics, device)
    checkpoints = {name: {"path": str(path), "sha256": sha256(path)} for name, path in sources.items()}
    seed_list = [opt.seed + i for i in range(seeds)]
    datasets = {name: build_dataset(spec, f"datasets.{name}") for name, spec in opt.datasets.items()
                if name != "train"}
    # a fresh results folder, once everything it needs was built: an earlier run's images and scores
    # never sit beside this run's (the earlier folder is moved aside, as a training run does)
    results = Path(opt.path.results_root) / opt.name
    archived = archive_folder(results)
    if archived is not None:
        print(f"results folder '{results}' held an earlier run: moved it to '{archived}'", file=sys.stderr)
    summaries = {}
    with evaluation_mode(method):
        for set_name, dataset in datasets.items():
            spec = opt.datasets[set_name]
            out_dir = results / set_name
            info = provenance(metrics.settings(), seed=opt.seed, seeds=seed_list, checkpoints=checkpoints,
                              method=opt.method, tile=opt.tile.to_dict(), dataset=spec)
            custom = method.evaluate(dataset, spec["batch_size"])
            if custom is not None:   # the method's own evaluation (e.g. retrieval accuracy), seed-independent
                out_dir.mkdir(parents=True, exist_ok=True)
                write_text(out_dir / "metrics.json", json.dumps({**info, "seeds": seed_list[:1], "mean": custom},
                                                                 indent=2))
                method.save_evaluation(out_dir)                  # e.g. a confusion matrix
                summaries[set_name] = {"count": len(dataset), "mean": custom}
                continue
            identity = DatasetHash()
            per_seed = {}
            label = f"{opt.name}/{set_name}" + (f" ({seeds} seeds)" if seeds > 1 else "")
            with Progress(len(dataset) * seeds, label) as progress:     # per image (and seed), on stderr
                for k, seed in enumerate(seed_list):
                    rows = per_seed[seed] = []
                    for item, restored, scores, _ in iterate(method, dataset, metrics, device, tile=opt.tile,
                                                             seed=seed, batch_size=spec["batch_size"],
                                                             num_workers=spec["num_workers"], sources=sources):
                        if k == 0:           # images and the set's identity from the first seed's pass
                            write_image(out_dir / f"{item['name']}.png", restored[0])
                            identity.add(item["name"], item["lq"], item.get("gt"))
                        notes = {key: item[key] for key in method.output_notes}  # e.g. the prompt of this image
                        rows.append({"image": f"{item['name']}.png", **notes, **scores})
                        progress.update()
            info.update(dataset_hash=identity.hexdigest(), dataset_items=len(identity))
            summaries[set_name] = write_results(out_dir, per_seed[seed_list[0]], info,
                                                per_seed=per_seed if seeds > 1 else None,
                                                set_scores=set_metrics(metrics, out_dir, spec))
    if summaries:
        print(format_table(summaries))
    return summaries


def main(argv=None) -> int:
    from osir.core.options import options_help
    parser = argparse.ArgumentParser(prog="osir/test.py", description="Restore and score test sets.",
                                     epilog=options_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True, nargs="+", action="extend", metavar="OPTIONS_YML",
                        help="YAML options file(s), run one after the other")
    parser.add_argument("--seeds", type=int, default=1, metavar="K",
                        help="restore each test set with the seeds seed..seed+K-1 and record mean and std over seeds")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY.PATH=VALUE",
                        help="override options (applies to every options file)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    from osir.core.options import OptionsError, as_options, check_files_early, read_options

    def body() -> int:
        raws = {path: read_options(path, args.set) for path in args.opt}
        for path, raw in raws.items():      # path errors before any class (or torch) is imported
            check_files_early(raw, source=path)
        opts = {}           # every file is loaded and validated before any work starts
        for path in args.opt:
            opt = as_options(raws[path])
            out = (Path(opt.path.results_root) / opt.name).resolve()
            clash = next((p for p, o in opts.items() if (Path(o.path.results_root) / o.name).resolve() == out),
                         None)
            if clash is not None:
                raise OptionsError(f"{path}: name '{opt.name}' is also the name of {clash} (same results_root): "
                                   f"their results would overwrite each other in '{out}'")
            check_files(opt, source=path)       # before any file's run starts
            opts[path] = opt
        combined = {}
        for path, opt in opts.items():
            if len(opts) > 1:
                print(f"== {path} ({opt.name})")
            for set_name, summary in run(opt, args.seeds).items():
                combined[f"{opt.name}/{set_name}"] = summary
        if len(opts) > 1 and combined:
            from osir.metrics.results import format_table
            print(f"== all runs ({len(opts)} options files)")
            print(format_table(combined, label="run/set"))
        return 0
    return cli.run("osir", body)


if __name__ == "__main__":
    sys.exit(main())
