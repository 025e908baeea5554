"""OSEDiff inference latency (prompt, VAE encode, UNet, VAE decode) and peak memory.

    python benchmarks/osediff_latency.py                    # tiny random SD components, CPU
    python benchmarks/osediff_latency.py --real-arch        # SD 2.1-base's architecture, random weights

Cases: a 512 x 512 output (LQ 128 x 128) restored whole, the same with the LoRA merged
(``method.merge_lora``), and a 2048 x 2048 output (LQ 512 x 512) with the release's tiling thresholds
(the method's defaults; on the tiny x2 VAE, whose whole-map mid-block attention would see a million tokens,
a 512 x 512 output with small tiles instead).  Each case runs in its own process so that its peak
memory is its own: the process's peak resident set on CPU, ``torch.cuda.max_memory_allocated`` on a
GPU.  Speeds are reported as ratios against the whole 512 x 512 case of the same run (merged / unmerged;
tiled 2048 per output pixel / whole 512 per output pixel).  On a GPU, ``--real-arch`` also runs bf16
with merged LoRA and ``torch.compile`` (the issue's target: <= 0.05 s per 512 x 512 image on an
H100-class GPU) and a training step at 512 x 512, batch 1, gradient checkpointing (target <= 14 GB).
Writes benchmarks/results/osediff_latency.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests" / "fixtures" / "checkpoints" / "sd21_base_configs.json"
CASES = {"512 whole": dict(lq=128, tiling=None), "512 whole, merged LoRA": dict(lq=128, tiling=None, merge=True),
         "2048 tiled": dict(lq=512, tiling="release"),
         "512 bf16 merged compiled": dict(lq=128, tiling=None, merge=True, precision="bf16", compile=True, gpu=True),
         "train step 512 b1 ckpt": dict(lq=128, train=True, precision="bf16", gpu=True)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device, repeats: int):
    if device.type == "cuda":
        fn()                                               # warm-up (compilation, kernel selection)
        _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return out, sorted(times)[len(times) // 2]


def run_case(name: str, sd: str, repeats: int) -> dict:
    from osir.methods.osediff.method import OSEDiff
    case = CASES[name]
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    tiling, lq_side = case.get("tiling"), case["lq"]
    if tiling == "release":
        vae_config = json.loads((Path(sd) / "vae" / "config.json").read_text())
        if 2 ** (len(vae_config["block_out_channels"]) - 1) == 8:
            tiling = {}                      # SD's VAE: the release's thresholds (the method's defaults)
        else:                                # the tiny VAE (x2): its whole-map attention limits the size
            tiling, lq_side = {"vae_encoder": 256, "vae_decoder": 64, "latent": 32, "latent_overlap": 8}, 128
    method = OSEDiff(sd_path=sd, tiling=tiling, merge_lora=case.get("merge", False),
                     prompt={"type": "FixedPrompt", "prompt": "a photo"}, gradient_checkpointing=case.get("train", False))
    precision = case.get("precision", "no") if device.type == "cuda" else "no"
    method.setup(device, precision)
    for net in method.networks.values():
        net.to(device)
    lq = torch.rand(1, 3, lq_side, lq_side, device=device)
    batch = {"lq": lq, "lq_path": ["x.png"], "name": ["x"]}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if case.get("train"):
        return run_train_step(method, batch, device, repeats)
    for net in method.networks.values():
        net.eval()
    method.prepare_inference()
    if case.get("compile"):
        method.networks["unet"] = torch.compile(method.networks["unet"])
    row = {}
    with torch.no_grad():
        prompts, row["prompt_s"] = _timed(lambda: method.encode_prompts(method.prompt(batch)), device, repeats)
        up = torch.nn.functional.interpolate(lq, scale_factor=method.scale, mode="bicubic")
        z_lq, row["encode_s"] = _timed(lambda: method.encode(up), device, repeats)
        z, row["unet_s"] = _timed(lambda: method.one_step(z_lq, prompts), device, repeats)
        _, row["decode_s"] = _timed(lambda: method.decode(z), device, repeats)
    row["total_s"] = row["prompt_s"] + row["encode_s"] + row["unet_s"] + row["decode_s"]
    return {**row, "peak_mb": peak_mb(device), "device": str(device), "precision": precision}


def run_train_step(method, batch: dict, device, repeats: int) -> dict:
    from accelerate import Accelerator
    method.prepare_training()
    groups = method.parameter_groups()
    optimizers = {"g": torch.optim.AdamW(groups["unet_lora"] + groups["conv_in"] + groups["vae_lora"], lr=5e-5),
                  "reg": torch.optim.AdamW(groups["reg_lora"], lr=5e-5)}
    accelerator = Accelerator(mixed_precision=method.mixed_precision, cpu=device.type == "cpu")
    optimizers = dict(zip(optimizers, accelerator.prepare(*optimizers.values())))
    method.attach(accelerator, optimizers, grad_clip=1.0)
    gt = torch.rand(1, 3, batch["lq"].shape[-2] * 4, batch["lq"].shape[-1] * 4, device=device)
    _, seconds = _timed(lambda: method.training_step({**batch, "gt": gt}), device, repeats)
    return {"step_s": seconds, "peak_mb": peak_mb(device), "device": str(device), "precision": method.mixed_precision}


def peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # KiB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-arch", action="store_true", help="SD 2.1-base's architecture with random weights")
    parser.add_argument("--sd", help="an existing SD folder to time instead of building one")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per stage (median; a GPU warms up first)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "osediff_latency.json"))
    args = parser.parse_args(argv)
    if args.case:                                          # one case in this process: print its row
        print(json.dumps(run_case(args.case, args.sd, args.repeats)))
        return 0
    from osir.methods.osediff.tiny import build_random_sd, build_tiny_sd
    with tempfile.TemporaryDirectory() as tmp:
        sd = args.sd or str(build_random_sd(Path(tmp) / "sd", CONFIGS) if args.real_arch else build_tiny_sd(Path(tmp) / "sd"))
        rows = {}
        for name, case in CASES.items():
            if case.get("gpu") and not torch.cuda.is_available():
                rows[name] = {"skipped": "needs a CUDA GPU"}
                continue
            if case.get("gpu") and not args.real_arch:
                rows[name] = {"skipped": "a GPU target: run with --real-arch"}
                continue
            done = subprocess.run([sys.executable, __file__, "--case", name, "--sd", sd, "--repeats", str(args.repeats)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                rows[name] = {"failed": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"}
                continue
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
    base = rows["512 whole"]
    if "total_s" in base:
        if "total_s" in rows["512 whole, merged LoRA"]:
            rows["512 whole, merged LoRA"]["speed_vs_512_whole"] = base["total_s"] / rows["512 whole, merged LoRA"]["total_s"]
        if "total_s" in rows["2048 tiled"]:
            rows["2048 tiled"]["time_per_pixel_vs_512_whole"] = rows["2048 tiled"]["total_s"] / 16 / base["total_s"]
    print(f"{'case':<28} {'prompt':>7} {'encode':>7} {'unet':>7} {'decode':>7} {'total':>7} {'step':>7} {'peak MB':>8}  note")
    for name, row in rows.items():
        cells = [f"{row[k]:7.3f}" if k in row else f"{'-':>7}" for k in ("prompt_s", "encode_s", "unet_s", "decode_s",
                                                                        "total_s", "step_s")]
        note = row.get("skipped") or row.get("failed") or ", ".join(
            f"{k} {v:.2f}" for k, v in row.items() if k.endswith("_vs_512_whole"))
        peak = f"{row['peak_mb']:8.0f}" if "peak_mb" in row else f"{'-':>8}"
        print(f"{name:<28} {' '.join(cells)} {peak}  {note}")
    result = {"architecture": "SD 2.1-base (random weights)" if args.real_arch else "tiny random SD", "cases": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
