"""Reproduce OSEDiff's published RealSR outputs with osir and the release weights.

    python benchmarks/osediff_reproduce.py --sd DIR --pkl FILE [--prompt TEXT] [--realsr ../shared/data/realsr]

Restores ``<realsr>/LR`` with ``osir/test.py``'s code path (SD 2.1-base folder ``--sd``, the official
``osediff.pkl`` ``--pkl``, one fixed prompt for every image, or DAPE's tags with ``--ram`` / ``--dape``), then
prints, per metric, osir's mean against the authors' published mean, and the PSNR between osir's
outputs and the authors' ``osediff_results`` (how closely the two implementations agree).  Without
the weights (which this repository cannot ship) it says what is missing and exits 0.
Writes benchmarks/results/osediff_reproduce.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the authors' log averages for osediff_results on this set (shared/data/realsr/README.md)
PUBLISHED = {"psnr": 25.1511, "ssim": 0.7341, "lpips": 0.2921, "niqe": 5.6476}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sd", help="local diffusers Stable Diffusion 2.1-base folder")
    parser.add_argument("--pkl", help="the official osediff.pkl")
    parser.add_argument("--prompt", default="", help="the fixed prompt for every image (or DAPE's extra text)")
    parser.add_argument("--ram", help="ram_swin_large_14m.pth: with --dape, DAPE tags as prompts (as the authors)")
    parser.add_argument("--dape", help="DAPE.pth")
    parser.add_argument("--realsr", default=str(ROOT.parent / "shared" / "data" / "realsr"))
    parser.add_argument("--lpips-weights", help="pyiqa's LPIPS-VGG file (LPIPS is left out without it)")
    parser.add_argument("--lpips-vgg", help="torchvision's VGG16 weights file, with --lpips-weights")
    parser.add_argument("--limit", type=int, help="only the first N images (a quick check of the path)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "osediff_reproduce.json"))
    args = parser.parse_args(argv)
    realsr = Path(args.realsr)
    missing = []
    if not args.sd or not Path(args.sd).is_dir():
        missing.append(f"--sd (a Stable Diffusion 2.1-base folder): {args.sd!r}")
    if not args.pkl or not Path(args.pkl).is_file():
        missing.append(f"--pkl (osediff.pkl): {args.pkl!r}")
    if not all((realsr / d).is_dir() for d in ("LR", "HR", "osediff_results")):
        missing.append(f"--realsr with LR/, HR/, osediff_results/: '{realsr}'")
    if missing:
        print("skipped: OSEDiff's reproduction needs real weights and data, not found here:\n  " + "\n  ".join(missing))
        return 0

    from osir.core import cli
    return cli.run("osediff_reproduce", lambda: reproduce(args, realsr))


def reproduce(args, realsr: Path) -> int:
    import shutil
    from osir import test as test_script
    from osir.metrics.suite import MetricSuite
    from osir.core.options import load_options
    from osir.data.io import img2tensor, read_image
    metrics = {"psnr": {"type": "psnr", "crop_border": 0, "test_y_channel": True},
               "ssim": {"type": "ssim", "crop_border": 0, "test_y_channel": True}, "niqe": {"type": "niqe"}}
    if args.lpips_weights and args.lpips_vgg:
        metrics["lpips"] = {"type": "lpips", "net": "vgg", "pretrained_model_path": args.lpips_weights,
                            "backbone_path": args.lpips_vgg}
    with tempfile.TemporaryDirectory() as tmp:
        lr, hr = realsr / "LR", realsr / "HR"
        if args.limit:
            lr, hr = Path(tmp) / "LR", Path(tmp) / "HR"
            for name in sorted(p.name for p in (realsr / "LR").glob("*.png"))[:args.limit]:
                for src, dst in ((realsr / "LR", lr), (realsr / "HR", hr)):
                    dst.mkdir(exist_ok=True)
                    shutil.copy(src / name, dst / name)
        opt = {"name": "osediff_reproduce", "seed": 0,
               "method": {"type": "OSEDiff", "sd_path": args.sd, "release_path": args.pkl,
                          "prompt": ({"type": "dape", "ram_path": args.ram, "dape_path": args.dape, "extra": args.prompt}
                                     if args.ram else {"type": "FixedPrompt", "prompt": args.prompt})},
               "inference": {"mixed_precision": "bf16"},
               "datasets": {"RealSR": {"type": "PairedImageDataset", "dataroot_gt": str(hr),
                                       "dataroot_lq": str(lr), "scale": 4, "batch_size": 4}},
               "metrics": metrics, "path": {"results_root": tmp}}
        options = Path(tmp) / "reproduce.yml"
        options.write_text(json.dumps(opt))
        summary = test_script.run(load_options(str(options)))["RealSR"]
        ours = Path(tmp) / "osediff_reproduce" / "RealSR"
        suite = MetricSuite({"psnr": {"type": "psnr", "crop_border": 0}}, "cpu")
        agreement = []
        for row in summary["images"]:
            mine = img2tensor(read_image(ours / row["image"]))[None]
            theirs = img2tensor(read_image(realsr / "osediff_results" / row["image"]))[None]
            agreement.append(suite.score(mine, theirs)["psnr"][0])
    result = {"prompt": args.prompt, "images": summary["count"], "osir": summary["mean"], "published": PUBLISHED,
              "psnr_osir_vs_authors_outputs_db": sum(agreement) / len(agreement)}
    print(f"{'metric':<8} {'osir':>9} {'published':>10}")
    for name, value in summary["mean"].items():
        print(f"{name:<8} {value:9.4f} {PUBLISHED.get(name, float('nan')):10.4f}")
    print(f"PSNR between osir's and the authors' outputs (RGB): {result['psnr_osir_vs_authors_outputs_db']:.2f} dB "
          f"over {summary['count']} images")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
