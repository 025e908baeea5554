"""Sampler overhead: time of N-step sampling / (N x one network forward), same network, same run.

    python benchmarks/sampler_overhead.py [--size 128] [--steps 20] [--nf 16] [--depth 3] [--device cpu]

Target: <= 1.03 for every sampler.  ``ratio`` is measured end to end (best of interleaved rounds;
on a busy 2-core CPU it carries a few percent of noise either way); ``1+arith/fwd`` isolates the
samplers' own arithmetic by running them with a network that costs nothing.  Prints a table and
writes benchmarks/results/sampler_overhead.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from osir.methods.irsde import ConditionalUNet
from osir.diffusion import MeanRevertingSDE
from osir.core.registry import SAMPLERS

from bench_timing import best_time  # sibling module (benchmarks/ is the script's folder)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nf", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "sampler_overhead.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = ConditionalUNet(nf=args.nf, depth=args.depth, attn_levels=[args.depth]).to(device).eval()
    sde = MeanRevertingSDE(10 / 255, T=100)
    mu = torch.rand(1, 3, args.size, args.size, device=device)
    x = sde.prior_sample(mu)
    timesteps = sde.timesteps(args.steps)

    def model(x_, mu_, t):
        return net(x_, mu_, t)

    def forwards():
        with torch.no_grad():
            for t in timesteps[:-1]:
                model(x, mu, t)

    samplers = {name: SAMPLERS.get(name) for name in ("posterior", "sde", "ode")}

    def sampling(name):
        return lambda: samplers[name](model, x, mu, sde, timesteps, torch.Generator(device=device).manual_seed(0))

    forwards()  # warm-up
    # interleave the measurements (forward set, then each sampler, per round) and keep each best time,
    # so drift in machine load affects both sides alike
    best = {"forward": float("inf"), **{name: float("inf") for name in samplers}}
    for _ in range(args.repeats):
        best["forward"] = min(best["forward"], best_time(forwards, 1, device))
        for name in samplers:
            best[name] = min(best[name], best_time(sampling(name), 1, device))
    forward_time = best["forward"] / args.steps
    # the samplers' own arithmetic, isolated with a network that costs nothing
    constant = torch.randn_like(x)
    arith = {name: min(best_time(lambda: samplers[name](lambda *_: constant, x, mu, sde, timesteps,
                                                      torch.Generator(device=device).manual_seed(0)), 1, device)
                       for _ in range(10)) for name in samplers}
    rows = [{"sampler": name, "steps": args.steps, "sampling_s": best[name], "forward_s": forward_time,
             "overhead_ratio": best[name] / (args.steps * forward_time),
             "sampler_arithmetic_s": arith[name],
             "arithmetic_ratio": 1 + arith[name] / (args.steps * forward_time)} for name in samplers]
    print(f"device {device}, image {args.size}^2, ConditionalUNet nf {args.nf} depth {args.depth}, {args.steps} steps")
    print(f"{'sampler':<10} {'sampling s':>11} {'N x forward s':>14} {'ratio':>7} {'arith s':>9} {'1+arith/fwd':>12}")
    for r in rows:
        print(f"{r['sampler']:<10} {r['sampling_s']:>11.4f} {r['steps'] * r['forward_s']:>14.4f} {r['overhead_ratio']:>7.3f}"
              f" {r['sampler_arithmetic_s']:>9.4f} {r['arithmetic_ratio']:>12.4f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"device": str(device), "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
