"""DA-CLIP stage-1 training throughput (images / s) and peak memory: ViT-B-32 (open_clip's architecture,
random weights) with the controller, batch 64 at 224 x 224, one optimiser step of the controller per
batch (both InfoNCE terms), on the CPU (or a GPU when present; bf16 there).

    python benchmarks/daclip_stage1.py [--batch 64] [--steps 3]

Writes benchmarks/results/daclip_stage1.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from accelerate import Accelerator
    from osir.methods.daclip.method import DACLIPMethod
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "daclip_stage1.json"))
    args = parser.parse_args(argv)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    precision = "bf16" if device.type == "cuda" else "no"
    method = DACLIPMethod(clip_model="ViT-B-32")
    method.setup(device, precision)
    method.networks["daclip"].to(device).train()
    optimizer = torch.optim.AdamW(method.parameter_groups()["controller"], lr=2e-5, betas=(0.9, 0.98), eps=1e-6)
    accelerator = Accelerator(mixed_precision=precision, cpu=device.type == "cpu")
    method.attach(accelerator, {"controller": accelerator.prepare(optimizer)})
    kinds = ["noisy", "hazy", "rainy", "snowy", "low-light", "jpeg-compressed", "raindrop", "shadowed"]
    batch = {"lq": torch.rand(args.batch, 3, 224, 224, device=device),
             "degradation_type": [kinds[i % len(kinds)] for i in range(args.batch)],
             "caption": [f"a photo of object number {i}" for i in range(args.batch)]}
    method.training_step(batch)                                  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        method.training_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    row = {"device": str(device), "precision": precision, "batch": args.batch, "step_s": seconds,
           "images_per_s": args.batch / seconds, "peak_mb": peak}
    print(f"{'device':8} {'batch':>5} {'s/step':>8} {'images/s':>9} {'peak MB':>8}")
    print(f"{row['device']:8} {args.batch:>5} {seconds:>8.2f} {row['images_per_s']:>9.1f} {peak:>8.0f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
