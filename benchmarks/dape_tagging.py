"""DAPE (RAM Swin-L tagger) time and peak memory per 512 x 512 LQ, full-size architecture, random weights.

    python benchmarks/dape_tagging.py [--repeats 3]

fp32 and bf16 on CPU; fp16 too when a CUDA GPU is at hand.  Each precision runs in its own process
so its peak memory (resident set on CPU, ``torch.cuda.max_memory_allocated`` on a GPU) is its own.
The fp32 row is the reference of the speed ratios.  Writes benchmarks/results/dape_tagging.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def run(precision: str, repeats: int) -> dict:
    from osir.methods.osediff.dape import DATA, RAMTagger, read_lines, tags_from_logits
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(0)
    tagger = RAMTagger().eval().requires_grad_(False).to(device, DTYPES[precision])
    tags = read_lines(DATA / "ram_tag_list.txt")
    thresholds = torch.tensor([float(v) for v in read_lines(DATA / "ram_tag_list_threshold.txt")])
    lq = torch.rand(1, 3, 512, 512, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):                       # the first run warms up
            start = time.perf_counter()
            tags_from_logits(tagger(tagger.preprocess(lq).to(DTYPES[precision])), thresholds, tags)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"precision": precision, "device": str(device), "seconds": sorted(times)[len(times) // 2], "peak_mb": peak,
            "parameters": sum(p.numel() for p in tagger.parameters())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "dape_tagging.json"))
    args = parser.parse_args(argv)
    if args.precision:
        print(json.dumps(run(args.precision, args.repeats)))
        return 0
    precisions = ["fp32", "bf16"] + (["fp16"] if torch.cuda.is_available() else [])
    rows = []
    for precision in precisions:
        done = subprocess.run([sys.executable, __file__, "--precision", precision, "--repeats", str(args.repeats)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"precision": precision, "failed": (done.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    reference = rows[0].get("seconds")
    print(f"{'precision':<10} {'device':<8} {'s / image':>10} {'vs fp32':>8} {'peak MB':>8}")
    for row in rows:
        if "failed" in row:
            print(f"{row['precision']:<10} failed: {row['failed']}")
            continue
        row["speed_vs_fp32"] = reference / row["seconds"] if reference else None
        print(f"{row['precision']:<10} {row['device']:<8} {row['seconds']:>10.3f} {row['speed_vs_fp32']:>8.2f} "
              f"{row['peak_mb']:>8.0f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"lq": "512x512 (resized to 384)", "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
