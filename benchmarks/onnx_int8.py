"""int8 ONNX against fp32 for a small trained x4 SR network: quality drop and CPU speed-up, one run.

    python osir/train.py -opt options/demo_sr.yml            # the network (4000 iterations, about 21 min on 2 CPU cores)
    python benchmarks/onnx_int8.py                            # export, quantise, score, time
    python benchmarks/onnx_int8.py --weights W.safetensors --threads 2 --size 128

The network is the embedded SR demo's RRDBNet (options/demo_sr.yml: 2 blocks, 24 features, L1 on bicubic x4
pairs of scikit-image photos), exported with ``osir.export.export_onnx`` (fp32, checked against PyTorch) and
quantised by it with ``--int8``'s static QDQ (calibrated on training photos, none held out).  Quality is scored
on the held-out photos (astronaut, coffee: whole, cropped to a multiple of 4) with the demo's own metrics (PSNR
and SSIM on Y, 4-pixel border), for bicubic upscaling, PyTorch fp32, onnxruntime fp32 and onnxruntime int8, on
the same LQ (OpenCV bicubic /4, as in training).  Speed: best of ``--repeats`` calls on a ``--size`` x
``--size`` LQ (batch 1) with ``--threads`` threads for all three engines, reported as ratios to onnxruntime
fp32 measured in the same run.  Writes benchmarks/results/onnx_int8.json (and the .onnx files beside it).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from bench_timing import best_time

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ("astronaut", "coffee")
DEFAULT_WEIGHTS = ROOT / "experiments/demo_sr_x4/models/net_g_ema_4000.safetensors"
METRICS = {"psnr": {"type": "psnr", "crop_border": 4, "test_y_channel": True},
           "ssim": {"type": "ssim", "crop_border": 4, "test_y_channel": True}}


def held_out_pairs(scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, GT, LQ) float32 HxWx3 in [0, 1]: the photo cropped to a multiple of ``scale``, BicubicDownscale."""
    from osir.data.datasets import skimage_photo
    from osir.degradations.simple import BicubicDownscale
    pairs = []
    for name in HELD_OUT:
        gt = skimage_photo(name)
        h, w = gt.shape[0] // scale * scale, gt.shape[1] // scale * scale
        gt = np.ascontiguousarray(gt[:h, :w])
        lq, _ = BicubicDownscale(scale)(gt, np.random.default_rng(0))
        pairs.append((name, gt, lq))
    return pairs


def to_nchw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="a trained RRDBNet (default: the SR demo's)")
    parser.add_argument("--threads", type=int, default=2, help="threads of every engine (default %(default)s)")
    parser.add_argument("--size", type=int, default=128, help="LQ side of the timing input (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/onnx_int8.json"))
    args = parser.parse_args(argv)
    if not Path(args.weights).is_file():
        print(f"{args.weights}: no such file; train it first: python osir/train.py -opt options/demo_sr.yml",
              file=sys.stderr)
        return 2

    from osir.export import export_onnx, network_from_weights, session
    from osir.metrics.suite import MetricSuite
    from osir.model_card import add_metrics
    torch.set_num_threads(args.threads)
    net, method, arch, hp, run_options = network_from_weights(args.weights)
    out_dir = Path(args.output).with_suffix("")
    fp32_path = out_dir / "demo_sr_x4.onnx"
    records = export_onnx(net, fp32_path, method=method, hyper_parameters=hp, arch=arch, source=args.weights,
                          options=run_options, int8=True, log=lambda line: print(line))
    int8_path = records[-1]["path"]
    ort_fp32, ort_int8 = session(fp32_path, args.threads), session(int8_path, args.threads)

    import cv2
    engines = {
        "bicubic": lambda lq: cv2.resize(lq, (lq.shape[1] * net.scale, lq.shape[0] * net.scale),
                                         interpolation=cv2.INTER_CUBIC),
        "torch fp32": lambda lq: net(torch.from_numpy(to_nchw(lq)))[0].numpy().transpose(1, 2, 0),
        "onnxruntime fp32": lambda lq: ort_fp32.run(None, {"lq": to_nchw(lq)})[0][0].transpose(1, 2, 0),
        "onnxruntime int8": lambda lq: ort_int8.run(None, {"lq": to_nchw(lq)})[0][0].transpose(1, 2, 0),
    }
    suite = MetricSuite(METRICS)
    quality: dict[str, dict[str, dict[str, float]]] = {e: {} for e in engines}
    with torch.no_grad():
        for name, gt, lq in held_out_pairs(net.scale):
            for engine, run in engines.items():
                sr = np.clip(run(lq), 0, 1)
                scores = suite.score(torch.from_numpy(to_nchw(sr)), torch.from_numpy(to_nchw(gt)))
                quality[engine][name] = {k: float(v[0]) for k, v in scores.items()}
    means = {e: {m: float(np.mean([quality[e][n][m] for n in HELD_OUT])) for m in METRICS} for e in engines}
    for path, engine in ((fp32_path, "onnxruntime fp32"), (int8_path, "onnxruntime int8")):
        add_metrics(path, {"held_out": ",".join(HELD_OUT) + " (skimage, bicubic /4)", **means[engine]})

    x = np.random.default_rng(0).random((args.size, args.size, 3), dtype=np.float32)
    seconds = {}
    with torch.no_grad():
        for engine in ("torch fp32", "onnxruntime fp32", "onnxruntime int8"):
            engines[engine](x)                                                   # warm up
            seconds[engine] = best_time(lambda: engines[engine](x), args.repeats, torch.device("cpu"))

    ref = seconds["onnxruntime fp32"]
    print(f"\n{args.weights} ({arch} {hp}); held out: {', '.join(HELD_OUT)}; "
          f"timing {args.size}x{args.size} LQ -> x{net.scale}, {args.threads} threads, best of {args.repeats}")
    print(f"{'engine':<18} {'PSNR-Y':>8} {'SSIM-Y':>7} {'ms':>8} {'speed vs ort fp32':>18}")
    for engine in engines:
        ms = f"{seconds[engine] * 1e3:8.1f}" if engine in seconds else f"{'':>8}"
        ratio = f"{ref / seconds[engine]:17.2f}x" if engine in seconds else ""
        print(f"{engine:<18} {means[engine]['psnr']:8.2f} {means[engine]['ssim']:7.4f} {ms} {ratio:>18}")
    drop = means["onnxruntime fp32"]["psnr"] - means["onnxruntime int8"]["psnr"]
    print(f"int8 PSNR drop vs fp32: {drop:.3f} dB; int8 speed-up vs onnxruntime fp32: "
          f"{ref / seconds['onnxruntime int8']:.2f}x, vs PyTorch fp32: "
          f"{seconds['torch fp32'] / seconds['onnxruntime int8']:.2f}x")

    result = {"weights": str(args.weights), "arch": arch, "hyper_parameters": hp, "held_out": list(HELD_OUT),
              "metrics": METRICS, "quality": quality, "mean": means, "int8_psnr_drop_db": drop,
              "timing": {"lq_size": args.size, "threads": args.threads, "repeats": args.repeats,
                         "seconds": seconds, "speed_vs_onnxruntime_fp32": {e: ref / s for e, s in seconds.items()}},
              "fp32_vs_torch_max_abs_difference": records[0]["max_abs_difference"],
              "int8_vs_fp32_on_smooth_image": {"max_abs_difference": records[-1]["max_abs_difference_vs_fp32"],
                                               "psnr": records[-1]["psnr_vs_fp32"]},
              "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                          "onnxruntime": __import__("onnxruntime").__version__}}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
