"""Score a folder of restored images against a GT folder, with no method involved:

    python -m osir.metrics --restored results/ --gt HR/ [-opt metrics.yml] [--output DIR]

Images are matched by file name; without ``-opt`` the suite is PSNR/SSIM on the Y channel and
NIQE (all offline).  ``-opt`` takes any options file with a ``metrics:`` section (``_base_``
includes resolved, as for train/test).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from osir.data.io import img2tensor, list_images, read_image
from osir.metrics.results import format_table, provenance, write_results
from osir.metrics.suite import MetricSuite
from osir.options import OptionsError, component, read_yaml, validate
from osir.registry import METRICS

DEFAULT_METRICS = {"psnr": {"type": "psnr", "test_y_channel": True},
                   "ssim": {"type": "ssim", "test_y_channel": True},
                   "niqe": {"type": "niqe"}}


def score_folders(restored_dir, gt_dir, metrics: dict, crop_to_gt: bool = False) -> list[dict]:
    suite = MetricSuite(metrics)
    gts = {p.relative_to(gt_dir).with_suffix("").as_posix(): p for p in list_images(gt_dir)} if gt_dir else {}
    rows = []
    for path in list_images(restored_dir):
        name = path.relative_to(restored_dir).with_suffix("").as_posix()
        restored = img2tensor(read_image(path))[None]
        gt = None
        if gt_dir:
            if name not in gts:
                raise FileNotFoundError(f"restored image '{path}' has no GT partner in '{gt_dir}'")
            gt = img2tensor(read_image(gts[name]))[None]
            if gt.shape != restored.shape:
                raise ValueError(f"size mismatch: '{path}' is {tuple(restored.shape[-2:])}, GT '{gts[name]}' is "
                                 f"{tuple(gt.shape[-2:])}")
        rows.append({"image": path.name, **{k: v[0] for k, v in suite.score(restored, gt).items()}})
    return rows, suite.settings()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osir.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--restored", required=True, help="folder of restored images")
    parser.add_argument("--gt", help="folder of ground-truth images (same file names)")
    parser.add_argument("-opt", help="YAML file with a metrics: section")
    parser.add_argument("--output", help="where to write metrics.csv/json (default: the restored folder)")
    args = parser.parse_args(argv)
    try:
        metrics = DEFAULT_METRICS
        if args.opt:
            raw = read_yaml(args.opt)
            if not raw.get("metrics"):
                raise OptionsError(f"{args.opt}: no metrics: section (nor in its _base_ files)")
            metrics = validate(raw["metrics"], dict[str, component(METRICS)], "metrics")
        rows, settings = score_folders(Path(args.restored), Path(args.gt) if args.gt else None, metrics)
    except (OptionsError, OSError, ValueError) as err:
        print(f"osir.metrics: error: {err}", file=sys.stderr)
        return 2
    summary = write_results(args.output or args.restored, rows,
                            provenance(settings, restored=str(args.restored), gt=str(args.gt)))
    print(format_table({Path(args.restored).name: summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
