"""Real-ESRGAN degradation throughput: osir's batch stage vs a reference that calls basicsr's functions
step by step as Real-ESRGAN's ``feed_data`` does (basicsr's 2-D ``USMSharp``), same batches, same run.

    python benchmarks/realesrgan_degradation.py [--sizes 256 400] [--batch 8] [--repeats 3] [--device cpu]

Reports images/s with USM on and off and a per-step time breakdown of osir's stage.  The reference needs
one fix to run at all on the CPU: ``.contiguous()`` after ``DiffJPEG`` (its output makes the next
``filter2D`` fail).  Targets: >= 3x the reference with USM on, no slower with USM off.
Writes benchmarks/results/realesrgan_degradation.json.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from osir._compat import basicsr  # noqa: F401
from basicsr.data.degradations import random_add_gaussian_noise_pt, random_add_poisson_noise_pt
from basicsr.utils.diffjpeg import DiffJPEG
from basicsr.utils.img_process_util import USMSharp, filter2D

from osir.degradations.realesrgan import PRESETS, RealESRGANDegradation

from bench_timing import best_time  # sibling module (benchmarks/ is the script's folder)


def reference_noise(out, o, suffix, gaussian):
    """Real-ESRGAN's noise step: basicsr's random Gaussian or Poisson noise helper."""
    if gaussian:
        return random_add_gaussian_noise_pt(out, sigma_range=o["noise_range" + suffix], clip=True, rounds=False,
                                            gray_prob=o["gray_noise_prob" + suffix])
    return random_add_poisson_noise_pt(out, scale_range=o["poisson_scale_range" + suffix],
                                       gray_prob=o["gray_noise_prob" + suffix], clip=True, rounds=False)


def reference(gt, params, o, usm, jpeger):
    """basicsr's functions step by step, as Real-ESRGAN's feed_data does, with the batch-level choices
    (resize, mode, Gaussian or Poisson, second blur, order) taken from the same drawn parameters as
    osir's stage so both do the same work; sigma/scale/quality are drawn by basicsr's random_* helpers."""
    h, w = gt.shape[-2:]
    first = {k: float(v[0]) for k, v in params.items() if v.dim() == 1}
    modes = ["area", "bilinear", "bicubic"]
    target = usm(gt) if usm is not None else gt
    out = filter2D(target, params["kernel1"])
    out = F.interpolate(out, scale_factor=first["scale1"], mode=modes[int(first["mode1"])])
    out = reference_noise(out, o, "", first["gaussian1"])
    out = jpeger(out.clamp(0, 1), quality=out.new_zeros(out.size(0)).uniform_(*o["jpeg_range"])).contiguous()
    if first["blur2"]:
        out = filter2D(out, params["kernel2"])
    out = F.interpolate(out, size=(int(h / 4 * first["scale2"]), int(w / 4 * first["scale2"])),
                        mode=modes[int(first["mode2"])])
    out = reference_noise(out, o, "2", first["gaussian2"])
    quality = out.new_zeros(out.size(0)).uniform_(*o["jpeg_range2"])
    final_mode = modes[int(first["final_mode"])]
    if first["sinc_first"]:
        out = filter2D(F.interpolate(out, size=(h // 4, w // 4), mode=final_mode), params["sinc_kernel"])
        out = jpeger(out.clamp(0, 1), quality=quality).contiguous()
    else:
        out = jpeger(out.clamp(0, 1), quality=quality).contiguous()
        out = filter2D(F.interpolate(out, size=(h // 4, w // 4), mode=final_mode), params["sinc_kernel"])
    return (out.clamp(0, 1) * 255).round() / 255, target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 400])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "realesrgan_degradation.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for size in args.sizes:
        gt = torch.rand(args.batch, 3, size, size, device=device)
        for use_usm in (True, False):
            stage = RealESRGANDegradation(use_usm=use_usm)
            draws = [stage.draw(seed) for seed in range(args.batch)]
            params = {k: torch.stack([d[k] for d in draws]).to(device) for k in draws[0]}
            usm = USMSharp().to(device) if use_usm else None
            jpeger = DiffJPEG(differentiable=False).to(device)
            ours = best_time(lambda: stage(gt, params), args.repeats, device)
            ref = best_time(lambda: reference(gt, params, PRESETS["realesrgan_x4"], usm, jpeger), args.repeats, device)
            draw = best_time(lambda: [stage.draw(seed) for seed in range(args.batch)], args.repeats, torch.device("cpu"))
            rows.append({"size": size, "usm": use_usm, "osir_s": ours, "reference_s": ref, "draw_s": draw,
                         "osir_img_s": args.batch / ours, "reference_img_s": args.batch / ref, "speedup": ref / ours})
        # per-step breakdown of osir's stage (USM on)
        stage = RealESRGANDegradation()
        steps = defaultdict(float)
        p = {k: v.to(device) for k, v in params.items()}
        start = time.perf_counter(); target = stage.usm.to(device)(gt); steps["usm"] += time.perf_counter() - start
        start = time.perf_counter(); out = filter2D(target, p["kernel1"]); steps["blur"] += time.perf_counter() - start
        start = time.perf_counter(); out = F.interpolate(out, scale_factor=0.5, mode="bicubic"); steps["resize"] += time.perf_counter() - start
        start = time.perf_counter(); out = stage._noise(out, p, 1); steps["noise"] += time.perf_counter() - start
        start = time.perf_counter(); out = stage._jpeg(out, p, 1); steps["jpeg"] += time.perf_counter() - start
        rows[-2]["breakdown_first_round_s"] = dict(steps)
    print(f"device {device}, batch {args.batch}; images/s (best of {args.repeats}); draw = kernels+choices for the batch in a worker")
    print(f"{'size':>5} {'usm':>4} {'osir img/s':>11} {'ref img/s':>10} {'speed-up':>9} {'draw s':>7}")
    for r in rows:
        print(f"{r['size']:>5} {str(r['usm']):>4} {r['osir_img_s']:>11.2f} {r['reference_img_s']:>10.2f} {r['speedup']:>9.2f} {r['draw_s']:>7.3f}")
    for r in rows:
        if "breakdown_first_round_s" in r:
            print(f"{r['size']}: first-round step times (s): " +
                  ", ".join(f"{k} {v:.3f}" for k, v in r["breakdown_first_round_s"].items()))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"device": str(device), "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
