"""Refusion on CPU (or a GPU when present): the NAFNet forward against IR-SDE's U-Net, and large images.

    python benchmarks/refusion_large.py                       # all cases
    python benchmarks/refusion_large.py --case nafnet         # one case
    python benchmarks/refusion_large.py --steps 100           # the full reverse SDE on the 6000 x 4000 image

Full-size release architectures with random weights (the time and memory do not depend on the values):

* ``nafnet`` / ``unet``: one forward of the conditional NAFNet (width 64, [1, 1, 1, 28]) and of IR-SDE's
  U-Net (nf 64, depth 4) on a 1 x 3 x 256 x 256 state, no gradients; the ratio is NAFNet / U-Net.
* ``latent 6000x4000``: ``LatentRefusion.restore`` (test.py's path) on a whole 6000 x 4000 image: the
  compression model encodes it (750 x 500 latent), ``--steps`` reverse-SDE steps of the latent NAFNet
  (zero-padded to 752 x 512), decode with the LQ's skips.  Encode and decode are also timed alone; the
  time of T = 100 steps is projected from the per-step time unless ``--steps 100``.  The case fails
  (exit status 1) when its peak memory exceeds ``--bound-gb`` (24 GiB: the issue's CPU bound).
* ``pixel tiled``: one reverse step of the pixel NAFNet over a ``--pixel-size`` image (default 2048 x 2048;
  ``6000x4000`` takes about 10 min per step on 2 CPU cores) on 512-px tiles blended over 32 px (osir's
  tiling); a T-step restoration repeats that per step (projected), and the time per megapixel scales to
  other sizes (the tiles' memory does not grow with the image; the output and weight maps do).

Each case runs in its own process, so its peak memory is its own (peak resident set on CPU,
``torch.cuda.max_memory_allocated`` on a GPU; bf16 on a GPU).  Writes benchmarks/results/refusion_large.json.
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
CASES = ("nafnet", "unet", "latent 6000x4000", "pixel tiled")


def peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def run_case(name: str, steps: int, repeats: int, pixel_size: str = "2048x2048") -> dict:
    from osir.inference.tiling import restore_tiled
    from osir.methods.irsde.arch import ConditionalUNet
    from osir.methods.refusion.arch import CompressionUNet, ConditionalNAFNet
    from osir.methods.refusion.method import LatentRefusion
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.no_grad():
        if name in ("nafnet", "unet"):
            net = (ConditionalNAFNet() if name == "nafnet" else ConditionalUNet(nf=64, depth=4)).to(device, dtype).eval()
            x = torch.rand(1, 3, 256, 256, device=device, dtype=dtype)
            net(x, x, 10)                                            # warm-up
            seconds = min(timed(lambda: net(x, x, 10), device)[1] for _ in range(repeats))
            return {"forward_s": seconds, "parameters_M": sum(p.numel() for p in net.parameters()) / 1e6,
                    "peak_mb": peak_mb(device), "device": str(device), "dtype": str(dtype)}
        if name == "latent 6000x4000":
            import tempfile
            from safetensors.torch import save_file
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "stage1.safetensors"
                save_file(CompressionUNet().state_dict(), str(path))
                method = LatentRefusion(compression_path=str(path), sample_steps=steps)
            method.setup(device, "bf16" if device.type == "cuda" else "no")
            for net in method.networks.values():
                net.to(device).eval()
            lq = torch.rand(1, 3, 4000, 6000, device=device)
            compression = method.networks["l"]
            (z, skips), encode_s = timed(lambda: compression.encode(lq), device)
            _, decode_s = timed(lambda: compression.decode(z, skips, lq.shape[-2:]), device)
            del skips
            out, total_s = timed(lambda: method.restore({"lq": lq}, torch.Generator(device).manual_seed(0)), device)
            step_s = (total_s - encode_s - decode_s) / steps
            return {"latent": list(z.shape[-2:]), "encode_s": encode_s, "step_s": step_s, "steps_run": steps,
                    "decode_s": decode_s, "restore_s": total_s,
                    "total_100_steps_s": total_s + (100 - steps) * step_s,
                    "output": list(out.shape[-2:]), "peak_mb": peak_mb(device), "device": str(device)}
        if name == "pixel tiled":
            net = ConditionalNAFNet().to(device, dtype).eval()
            w, h = (int(v) for v in pixel_size.lower().split("x"))
            lq = torch.rand(1, 3, h, w, device=device, dtype=dtype)
            out, step_s = timed(lambda: restore_tiled(lambda b: net(b["lq"], b["lq"], 50), {"lq": lq}, 512, 32,
                                                      1, 16), device)
            return {"image": pixel_size, "tile": 512, "overlap": 32, "step_s": step_s,
                    "step_s_per_megapixel": step_s / (h * w / 1e6), "total_100_steps_s": 100 * step_s,
                    "output": list(out.shape[-2:]), "peak_mb": peak_mb(device), "device": str(device)}
    raise ValueError(f"unknown case {name!r}; cases: {', '.join(CASES)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=CASES, help="run only these cases")
    parser.add_argument("--steps", type=int, default=3, help="reverse steps run on the latent (default 3, projected to 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pixel-size", default="2048x2048", help="WxH of the pixel-space tiled case")
    parser.add_argument("--bound-gb", type=float, default=24.0, help="peak-memory bound of the latent case (GiB)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "refusion_large.json"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.child, args.steps, args.repeats, args.pixel_size)))
        return 0
    rows = {}
    for name in args.case or CASES:
        done = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps),
                               "--repeats", str(args.repeats), "--pixel-size", args.pixel_size],
                              capture_output=True, text=True)
        rows[name] = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else
                      {"failed": (done.stderr.strip().splitlines() or ["no output"])[-1]})
        print(f"{name:24s} {rows[name]}", flush=True)
    if "forward_s" in rows.get("nafnet", {}) and "forward_s" in rows.get("unet", {}):
        rows["nafnet / unet forward"] = rows["nafnet"]["forward_s"] / rows["unet"]["forward_s"]
        print(f"NAFNet / U-Net forward time at 256^2: {rows['nafnet / unet forward']:.2f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(rows, indent=2))
    latent = rows.get("latent 6000x4000", {})
    if "peak_mb" in latent:
        within = latent["peak_mb"] <= args.bound_gb * 1024
        print(f"latent 6000x4000 peak {latent['peak_mb'] / 1024:.1f} GiB: "
              f"{'within' if within else 'ABOVE'} the {args.bound_gb:g} GiB bound")
        return 0 if within else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
