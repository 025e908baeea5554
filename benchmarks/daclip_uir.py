"""DA-CLIP universal-IR restoration: time and PSNR against the number of posterior steps, and a large photo.

    python osir/train.py -opt options/daclip_demo.yml && python osir/train.py -opt options/daclip_uir_demo.yml
    python benchmarks/daclip_uir.py --part steps [--steps 100 50 20 10]
    python benchmarks/daclip_uir.py --part large [--size 2048 --tile 512 --large-steps 2]

``steps``: seconds to restore one 256 x 256 image with the release-size network (DACLIPUNet of
universal-ir.pth, 48,975,747 parameters, random weights: the time does not depend on them) and a ViT-B-32
DA-CLIP, for each number of posterior steps (``method.sample_steps``), with the ratio to the most steps
measured in the same run; and the PSNR of the embedded demo's trained network (options/daclip_uir_demo.yml)
on its test photos (astronaut, held out, and cat = chelsea, a training photo; 2 photos x 6 degradations,
128 x 128) through test.py's code path, with the inputs'.

``large``: one ``size`` x ``size`` photo restored with tiles of ``tile`` pixels (the DA-CLIP embeddings once,
from the whole photo), ``large-steps`` posterior steps: seconds, seconds per step, the extrapolation to
100 steps, and the process's peak resident memory.  Run each part in its own process (peak memory is the
process's).  Writes benchmarks/results/daclip_uir_<part>.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RELEASE_UNET = {"type": "DACLIPUNet", "nf": 64, "ch_mult": [1, 2, 4, 8], "context_dim": 512}


def release_size_method(steps: int):
    """IR-SDE + the release-size DACLIPUNet + a ViT-B-32 DA-CLIP (open_clip's config), random weights."""
    import open_clip

    from osir.methods.daclip.method import DACLIPUniversalIR
    config = open_clip.get_model_config("ViT-B-32")
    torch.manual_seed(0)
    method = DACLIPUniversalIR(network=RELEASE_UNET, max_sigma=50, T=100, sample_steps=steps, clip_config=config)
    for net in method.networks.values():
        net.eval()
    return method


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steps_part(args) -> dict:
    from osir import test as test_script
    from osir.engine.trainer import build_dataset
    from osir.inference import restore_image
    from osir.metrics.suite import MetricSuite
    from osir.core.options import load_options
    train_file = ROOT / "options" / "daclip_uir_demo.yml"
    opt = load_options(train_file)
    weights = ROOT / "experiments" / "demo_daclip_uir" / "models" / f"net_g_{opt.train.total_iter}.safetensors"
    daclip = Path(opt.method["daclip_path"])
    daclip = daclip if daclip.is_absolute() else ROOT / daclip
    for needed, command in ((daclip, "options/daclip_demo.yml"), (weights, "options/daclip_uir_demo.yml")):
        if not needed.is_file():
            sys.exit(f"no trained weights at {needed}: run python osir/train.py -opt {command}")
    held_out = opt.datasets["val"]
    dataset = build_dataset(held_out, "held_out")
    suite = MetricSuite({"psnr": {"type": "psnr"}})
    input_psnr = sum(suite.score(it["lq"][None], it["gt"][None])["psnr"][0] for it in dataset) / len(dataset)
    lq = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.steps:
            method = release_size_method(steps)
            with torch.no_grad():
                start = time.perf_counter()
                restore_image(method, {"lq": lq}, generator=torch.Generator().manual_seed(0))
                seconds = time.perf_counter() - start
            test_opt = load_options(train_file, [f"method.sample_steps={steps}", f"path.results_root={tmp}",
                                                 f"method.daclip_path={daclip}", f"path.pretrained.g={weights}"])
            test_opt.datasets = {"held_out": held_out}
            demo = test_script.run(test_opt)["held_out"]["mean"]
            rows[steps] = {"release_net_seconds_256": seconds, "demo_psnr": demo["psnr"], "demo_ssim": demo["ssim"]}
    most = rows[max(rows)]["release_net_seconds_256"]
    for row in rows.values():
        row["time_vs_most_steps"] = row["release_net_seconds_256"] / most
    print(f"held-out inputs: PSNR {input_psnr:.2f} dB ({len(dataset)} images)")
    print(f"{'steps':>5} {'s / 256² (release net)':>23} {'vs most':>8} {'demo PSNR':>10} {'demo SSIM':>10}")
    for steps, row in rows.items():
        print(f"{steps:>5} {row['release_net_seconds_256']:>23.1f} {row['time_vs_most_steps']:>8.2f} "
              f"{row['demo_psnr']:>10.2f} {row['demo_ssim']:>10.4f}")
    return {"device": "cpu", "threads": torch.get_num_threads(), "input_psnr": input_psnr, "steps": rows}


def large_part(args) -> dict:
    from osir.inference import restore_image
    method = release_size_method(args.large_steps)
    calls = []
    encode = method.networks["daclip"].encode_image
    method.networks["daclip"].encode_image = lambda *a, **k: calls.append(1) or encode(*a, **k)
    net_calls = []
    method.networks["g"].register_forward_hook(lambda *_: net_calls.append(1))
    photo = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    before = peak_mb()
    with torch.no_grad():
        start = time.perf_counter()
        out = restore_image(method, {"lq": photo}, tile=args.tile, overlap=args.overlap,
                            generator=torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
    tiles = len(net_calls) // args.large_steps          # the posterior sampler: one network call per step
    row = {"size": args.size, "tile": args.tile, "overlap": args.overlap, "tiles": tiles, "steps": args.large_steps,
           "seconds": seconds, "seconds_per_step": seconds / args.large_steps,
           "extrapolated_100_steps_s": 100 * seconds / args.large_steps, "daclip_calls": len(calls),
           "peak_rss_mb": peak_mb(), "peak_rss_before_mb": before, "output_shape": list(out.shape),
           "threads": torch.get_num_threads()}
    print(f"{'size':>5} {'tile':>5} {'tiles':>5} {'steps':>5} {'s':>8} {'s/step':>8} {'100 steps (s)':>13} "
          f"{'DA-CLIP calls':>13} {'peak RSS MB':>11}")
    print(f"{args.size:>5} {args.tile:>5} {tiles:>5} {args.large_steps:>5} {seconds:>8.1f} "
          f"{row['seconds_per_step']:>8.1f} {row['extrapolated_100_steps_s']:>13.0f} {len(calls):>13} "
          f"{row['peak_rss_mb']:>11.0f}")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["steps", "large"], required=True)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 50, 20, 10])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--large-steps", type=int, default=2)
    parser.add_argument("--output", default=None, help="default: benchmarks/results/daclip_uir_<part>.json")
    args = parser.parse_args(argv)
    result = steps_part(args) if args.part == "steps" else large_part(args)
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"daclip_uir_{args.part}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
