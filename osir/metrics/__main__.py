"""Score a folder of restored images against a GT folder, with no method involved:

    python -m osir.metrics --restored results/ --gt HR/ [-opt metrics.yml] [--weights-dir DIR] [--output DIR]

Images are matched by file name without the extension (two files of one name in a folder, ``a.png``
and ``a.jpg``, are an error naming both); without ``-opt`` the suite is PSNR/SSIM on the Y channel and
NIQE (all offline).  ``-opt`` takes any options file with a ``metrics:`` section (``_base_``
includes resolved, as for train/test).  ``--weights-dir`` is the folder of weight files for every
learned metric that names none of its own (see ``osir.metrics.suite``); a metric whose files are
absent is skipped with one line naming them.  Set metrics (FID) are scored after the per-image
loop over the whole restored folder against the whole GT folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from osir.core import files
from osir.core.cli import run
from osir.core.errors import DataError
from osir.core.options import OptionsError, component, early_files, read_yaml, validate
from osir.core.registry import METRICS

if TYPE_CHECKING:          # torch, pyiqa and the codec are imported where used: path errors come first
    from osir.metrics.results import DatasetHash
    from osir.metrics.suite import MetricSuite

DEFAULT_METRICS = {"psnr": {"type": "psnr", "test_y_channel": True},
                   "ssim": {"type": "ssim", "test_y_channel": True},
                   "niqe": {"type": "niqe"}}


def read_scored(path):
    """An image file as the metrics score it: 1x3xHxW float32 RGB (``osir.data.io.read_image``: the codec of
    every osir reader, 8/16-bit, grey repeated, alpha dropped, upright by the EXIF orientation)."""
    from osir.data.io import img2tensor, read_image
    return img2tensor(read_image(path))[None]


def score_folders(restored_dir, gt_dir, metrics: dict, suite: MetricSuite | None = None,
                  identity: DatasetHash | None = None, progress: bool = False) -> tuple[list[dict], dict]:
    """Per-image scores of ``restored_dir`` against ``gt_dir`` (matched by relative name); GT images
    without a restored partner are reported on stderr, a restored image without a GT is an error.
    ``suite``: the suite built from ``metrics`` when the caller has one already; ``identity``
    collects the scored GT images (the test set's ``dataset_hash``); ``progress``: per image scored on
    stderr (``osir.core.progress``)."""
    from osir.core.progress import Progress
    from osir.data.io import images_by_name
    from osir.metrics.suite import MetricSuite
    suite = suite if suite is not None else MetricSuite(metrics)
    gts = images_by_name(gt_dir) if gt_dir else {}       # two files of one name (a.png, a.jpg): an error
    rows, seen = [], set()
    restored_files = images_by_name(restored_dir)
    with Progress(len(restored_files), "osir.metrics", disable=not progress) as bar:
        for name, path in restored_files.items():
            restored = read_scored(path)
            gt = None
            if gt_dir:
                if name not in gts:
                    raise DataError(f"restored image '{path}' has no GT partner in '{gt_dir}'")
                seen.add(name)
                gt = read_scored(gts[name])
                if identity is not None:
                    identity.add_gt_only(name, gt[0])
                if gt.shape != restored.shape:
                    raise DataError(f"size mismatch: '{path}' is {restored.shape[-1]}x{restored.shape[-2]}, GT "
                                    f"'{gts[name]}' is {gt.shape[-1]}x{gt.shape[-2]}")
            rows.append({"image": path.relative_to(restored_dir).as_posix(),
                         **{k: v[0] for k, v in suite.score(restored, gt, [str(path)]).items()}})
            bar.update()
    unscored = sorted(set(gts) - seen)
    if unscored:
        print(f"osir.metrics: warning: {len(unscored)} of {len(gts)} GT images have no restored partner "
              f"(first: '{gts[unscored[0]]}'); the means cover the {len(rows)} restored images", file=sys.stderr)
    return rows, suite.settings()


def check_paths(args) -> dict:
    """Every folder and file the arguments and the ``-opt`` file's metrics name, all missing ones in one error,
    before torch or pyiqa is imported; returns the metrics to score (``-opt``'s section, validated, or the
    default suite).  A learned metric's own files are optional (the suite skips the metric, naming them): they
    are listed beside a missing required path only."""
    needed = [files.NeededFile("--restored", str(args.restored), "folder", "the restored images")]
    if args.gt:
        needed.append(files.NeededFile("--gt", str(args.gt), "folder", "the ground-truth images"))
    if args.weights_dir:
        needed.append(files.NeededFile("--weights-dir", str(args.weights_dir), "folder",
                                       "weight files of the learned metrics"))
    if args.opt:
        needed.append(files.NeededFile("-opt", str(args.opt), "file", "the options file with a metrics: section"))
    metric_files = []
    if args.opt and Path(args.opt).is_file():
        raw = read_yaml(args.opt)
        if not raw.get("metrics"):
            raise OptionsError(f"{args.opt}: no metrics: section (nor in its _base_ files)")
        metric_files = early_files(raw["metrics"], dict[str, component(METRICS, optional=True)], "metrics")
    files.raise_missing(needed + metric_files, named_by="the arguments name")
    if not args.opt:
        return DEFAULT_METRICS
    return validate(raw["metrics"], dict[str, component(METRICS)], "metrics")


def score(args) -> int:
    metrics = check_paths(args)
    from osir.metrics.results import DatasetHash, format_table, provenance, write_results
    from osir.metrics.suite import MetricSuite
    restored = Path(args.restored)
    gt = Path(args.gt) if args.gt else None
    output = Path(args.output) if args.output else restored
    if gt is not None:
        g = gt.resolve()
        if restored.resolve() == g:
            raise DataError(f"--restored and --gt are the same folder ('{restored}'): that scores GT against itself")
        if g in restored.resolve().parents:
            raise DataError(f"--restored '{restored}' lies inside the GT folder '{gt}' (its images would count as GT)")
        if output.resolve() == g or g in output.resolve().parents:
            raise DataError(f"--output '{output}' lies in the GT folder '{gt}': osir.metrics does not write into it")
    suite = MetricSuite(metrics, weights_dir=args.weights_dir)
    identity = DatasetHash()
    rows, settings = score_folders(restored, gt, metrics, suite, identity, progress=True)
    sets = suite.score_sets(restored, gt)       # FID: the whole folders, after the per-image scores
    extra = {"dataset_hash": identity.hexdigest(), "dataset_items": len(identity)} if gt is not None else {}
    summary = write_results(output, rows, {**provenance(settings, restored=str(restored), gt=str(gt)), **extra},
                            set_scores=sets)
    print(format_table({restored.name: summary}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osir.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--restored", required=True, help="folder of restored images")
    parser.add_argument("--gt", help="folder of ground-truth images (same file names)")
    parser.add_argument("-opt", help="YAML file with a metrics: section")
    parser.add_argument("--weights-dir", help="folder of weight files for learned metrics (DISTS, MUSIQ, FID, ...)")
    parser.add_argument("--output", help="where to write metrics.csv/json (default: the restored folder)")
    args = parser.parse_args(argv)
    return run("osir.metrics", lambda: score(args))


if __name__ == "__main__":
    sys.exit(main())
