"""Seconds and memory per image of each zero-shot sampler with a released prior's architecture (issue 25 points 3
and 5): the FFHQ 256 ADM (DPS's ``ffhq_10m.pt`` layout, random weights: the time does not depend on them) at
256 x 256, x4 bicubic super-resolution with sigma_y 0.05.  Each sampler runs ``--steps`` steps (few: one network
call takes seconds on a CPU); the seconds per network call, and the time per image at the sampler's default
step count (the paper's setting) extrapolated from it, are printed and written as JSON.  Peak memory is the
process's resident set (CPU) or the device's peak allocation (CUDA) during the sampler's run; DPS's includes
the autograd graph through the prior.

    python benchmarks/zeroshot_time.py [--steps 2] [--device cpu] [--output benchmarks/results/zeroshot_time.json]
"""
from __future__ import annotations

import argparse
import inspect
import json
import resource
import sys
import time
from pathlib import Path

import torch

from osir.core.registry import ZERO_SHOT_SAMPLERS
from osir.methods.zeroshot import guidance_samplers, smc, svd_samplers  # noqa: F401  (register the samplers)
from osir.methods.zeroshot.adm import ADM_RELEASES, ADMUNet
from osir.methods.zeroshot.diffusion import linear_alphas_cumprod
from osir.methods.zeroshot.measurement import Measurement
from osir.methods.zeroshot.method import NetworkPrior

ROOT = Path(__file__).resolve().parents[1]


class CountingPrior(NetworkPrior):
    """The prior protocol, counting network calls."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def eps(self, x, t):
        self.calls += x.shape[0]
        return super().eps(x, t)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # Linux: KiB


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--samplers", nargs="+", default=list(ZERO_SHOT_SAMPLERS.names()))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--release", default="ffhq_10m", choices=list(ADM_RELEASES))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "zeroshot_time.json"))
    args = parser.parse_args(argv)
    if len(args.samplers) > 1:           # one process per sampler: the peak memory is that sampler's own
        import subprocess
        import tempfile
        rows = []
        with tempfile.TemporaryDirectory() as scratch:
            for name in args.samplers:
                part = Path(scratch) / f"{name}.json"
                subprocess.run([sys.executable, __file__, "--samplers", name, "--steps", str(args.steps), "--device",
                                args.device, "--release", args.release, "--output", str(part)], check=True)
                single = json.loads(part.read_text())
                rows += single["rows"]
        return report({**single, "rows": rows}, Path(args.output))
    device = torch.device(args.device)
    torch.manual_seed(0)
    network = ADMUNet(**ADM_RELEASES[args.release]["constructor"]).to(device).eval()
    size = (256, 256)
    operator = Measurement("sr4_bicubic", 0.05).operator(size)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1
    y = operator.measure(x, torch.Generator(device=device).manual_seed(2))
    rows = []
    for name in args.samplers:
        fn = ZERO_SHOT_SAMPLERS.get(name)
        default_steps = inspect.signature(fn).parameters["steps"].default
        prior = CountingPrior(network, linear_alphas_cumprod(), None)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with torch.no_grad():
            fn(prior, operator, y, steps=args.steps, generator=torch.Generator(device=device).manual_seed(3))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        per_call = seconds / max(prior.calls, 1)
        calls_default = prior.calls / args.steps * default_steps
        row = {"sampler": name, "steps": args.steps, "network_calls": prior.calls, "seconds": seconds,
               "seconds_per_call": per_call, "default_steps": default_steps,
               "minutes_per_image_at_default": per_call * calls_default / 60, "peak_mib": peak_mib(device)}
        rows.append(row)
        print(f"{name:8s} {args.steps} steps, {prior.calls} calls: {seconds:6.1f} s ({per_call:5.2f} s/call); "
              f"{default_steps} steps: {row['minutes_per_image_at_default']:6.1f} min/image; peak "
              f"{row['peak_mib']:.0f} MiB", file=sys.stderr)
    result = {"release": args.release, "size": list(size), "device": str(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "task": "sr4_bicubic, sigma_y 0.05", "rows": rows}
    return report(result, Path(args.output))


def report(result: dict, out: Path) -> int:
    """Write the JSON and print the table."""
    rows = result["rows"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print("| sampler | default steps | network calls per step | s per call | min per image (default steps) | "
          "peak MiB |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sampler']} | {r['default_steps']} | {r['network_calls'] / r['steps']:.0f} | "
              f"{r['seconds_per_call']:.2f} | {r['minutes_per_image_at_default']:.1f} | {r['peak_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
