"""Few-step sampling of the mean-reverting demos (issue 24, point 3): every registered sampler of IR-SDE,
Refusion and DA-CLIP's universal IR at 100, 50, 20, 10, 5 and 3 network evaluations (NFE), scored against GT
(PSNR, SSIM, NIQE) and against the same sampler's own 100-NFE output, with the seconds per image; then the
seconds per NFE of the full-size release networks (random weights) at 256 x 256, where the NFE count is the
speed-up.

    python osir/train.py -opt options/demo.yml
    python osir/train.py -opt options/refusion_demo.yml
    python osir/train.py -opt options/daclip_demo.yml && python osir/train.py -opt options/daclip_uir_demo.yml
    python benchmarks/fast_samplers.py [--nfe 100 50 20 10 5 3] [--samplers ...] [--demos IR-SDE Refusion]

Each demo restores the test images of its test options (options/test/demo.yml, refusion_demo.yml,
daclip_uir_demo.yml: astronaut, held out, and cat = scikit-image's chelsea, a training photo: ``--per-set 1``
(the default) keeps astronaut alone; DA-CLIP's astronaut under each of its six degradations), cropped to ``--crop``
pixels (the sets' ``gt_size``; NIQE needs 96 or more), with the trained EMA / final weights those options name.
Every sampler runs with the method's settings it takes (the demos clamp x_0 in image units, ``clip_denoised``;
``eta`` 0 for ``posterior`` and ``ddim``), from the same start state and noise seed. Heun calls the network
2N - 1 times for N steps, so it runs N = (NFE + 1) // 2; the NFE column is counted (forward hooks), not
assumed. The target (the issue's): at <= 10 NFE some sampler within 0.1 dB of the configured sampler at 100
steps with NIQE no worse than +0.1, and within 0.3 dB at 5 NFE.

Writes benchmarks/results/fast_samplers.json and fast_samplers.md (the README's tables); a run with ``--demos``
keeps the other demos' results of an earlier run with the same NFE and samplers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: demo -> (test options, the training options that make its weights, images per test set)
#: demo -> (test options, training options, images per test set: the first, astronaut, is the held-out photo)
DEMOS = {"IR-SDE": ("options/test/demo.yml", "options/demo.yml", 1),
         "Refusion": ("options/test/refusion_demo.yml", "options/refusion_demo.yml", 1),
         "DA-CLIP UIR": ("options/test/daclip_uir_demo.yml", "options/daclip_demo.yml, then options/daclip_uir_demo.yml",
                         1)}
#: release -> the full-size network timed at 256 x 256 (random weights)
RELEASES = {"IR-SDE": "irsde-denoise", "Refusion": "refusion-deraining", "DA-CLIP UIR": "daclip-uir"}
SAMPLERS = ["posterior", "sde", "ode", "ddim", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "deis", "heun"]
METRICS = {"psnr": {"type": "psnr"}, "ssim": {"type": "ssim"}, "niqe": {"type": "niqe"}}


def steps_for(sampler: str, nfe: int) -> int:
    """The step count that spends at most ``nfe`` network evaluations (Heun: 2N - 1 for N steps)."""
    return max(1, (nfe + 1) // 2) if sampler == "heun" else nfe


def held_out(opt, crop: int, per_set: int) -> list[dict]:
    """The first ``per_set`` items of each test set, cropped to ``crop`` (the sets' ``gt_size``), as batches
    of one."""
    from osir.engine.trainer import build_dataset
    items = []
    for name, spec in opt.datasets.items():
        if name == "train" or spec is None:
            continue
        spec = dict(spec, gt_size=crop)
        dataset = build_dataset(spec, f"datasets.{name}")
        for index in range(min(per_set, len(dataset))):
            item = dataset[index]
            batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in item.items()}
            batch["set"] = name
            items.append(batch)
    return items


def run_demo(name: str, args, metrics, save=None) -> dict:
    """The demo's points; ``save(partial)`` is called after each sampler (an interrupted run keeps them)."""
    from osir.bench import CallCounter, prepare_method
    from osir.core.options import load_options
    from osir.engine.validation import evaluation_mode
    from osir.inference import restore_image
    test_file, train_file, per_set = DEMOS[name]
    per_set = args.per_set or per_set
    opt = load_options(ROOT / test_file, args.set)
    weights = Path(opt.path.pretrained["g"])
    opt.path.pretrained["g"] = str(weights if weights.is_absolute() else ROOT / weights)
    if not Path(opt.path.pretrained["g"]).is_file():
        raise SystemExit(f"{name}: no trained weights at {weights}: run python osir/train.py -opt {train_file}")
    if "daclip_path" in opt.method and not Path(opt.method["daclip_path"]).is_absolute():   # DA-CLIP's own file
        opt.method["daclip_path"] = str(ROOT / opt.method["daclip_path"])
    method, missing = prepare_method(opt, torch.device("cpu"), "no")
    assert not missing, missing
    items = held_out(opt, args.crop, per_set)
    configured = {"sampler": method.sampler_name, "settings": {k: v for k, v in method.sampler_settings.items()
                                                               if v is not None}}
    print(f"{name}: {len(items)} images of {args.crop}^2, configured {configured}", file=sys.stderr)
    inputs = {k: [] for k in ("psnr", "ssim")}
    for batch in items:
        for k in inputs:
            inputs[k].append(float(metrics.score(batch["lq"], batch["gt"])[k][0]))

    def summary(points: list) -> dict:
        return {"test_options": test_file, "overrides": list(args.set), "weights": str(weights), "images": len(items),
                "crop": args.crop, "configured": configured, "input": {k: sum(v) / len(v) for k, v in inputs.items()},
                "points": points}

    points, outputs = [], {}
    with evaluation_mode(method), CallCounter(method) as counter:
        restore_image(method, items[0], None, 32, torch.Generator().manual_seed(0), steps=2)     # warm-up
        for sampler in args.samplers:
            for nfe in args.nfe:
                steps = steps_for(sampler, nfe)
                if steps > method.sde.T:
                    continue
                counter.reset()
                restored, seconds = [], 0.0
                for i, batch in enumerate(items):
                    generator = torch.Generator().manual_seed(opt.seed + i)
                    start = time.perf_counter()
                    restored.append(restore_image(method, batch, None, 32, generator, sampler=sampler, steps=steps))
                    seconds += time.perf_counter() - start
                outputs[(sampler, nfe)] = restored
                scores = {k: [] for k in METRICS}
                for batch, out in zip(items, restored):
                    for k, v in metrics.score(out, batch["gt"]).items():
                        scores[k].append(float(v[0]))
                point = {"sampler": sampler, "nfe_asked": nfe, "steps": steps,
                         "nfe": counter.samples["g"] / len(items),
                         "seconds_per_image": seconds / len(items),
                         **{k: sum(v) / len(v) for k, v in scores.items()}}
                reference = outputs.get((sampler, max(args.nfe)))
                if reference is not None:
                    point["psnr_vs_own_100"] = sum(
                        float(metrics.score(out, ref.clamp(0, 1))["psnr"][0]) if not torch.equal(out, ref)
                        else float("inf") for out, ref in zip(restored, reference)) / len(items)
                points.append(point)
            if save is not None:
                save(summary(points))
                print(f"{name}: {sampler:13s} NFE {point['nfe']:5.1f}  PSNR {point['psnr']:.3f}  "
                      f"SSIM {point['ssim']:.4f}  NIQE {point['niqe']:.3f}  {point['seconds_per_image']:.2f} s/image",
                      file=sys.stderr)
    return summary(points)


def release_seconds_per_nfe(name: str, size: int, repeats: int) -> dict:
    """Seconds per network evaluation of the release's full-size noise network at ``size``^2 (random weights,
    its conditioning as random tensors of the right shapes)."""
    from osir.core.card import release_options, releases
    from osir.core.registry import ARCHS
    card, release = releases()[RELEASES[name]]
    spec = dict(release_options(card, release)["method"]["network"])
    torch.manual_seed(0)
    net = ARCHS.build(spec, "network").eval()
    x = torch.rand(1, spec.get("in_nc", spec.get("img_channel", 3)), size, size)
    inputs = {}
    if spec["type"] == "DACLIPUNet":       # the DA-CLIP embeddings: the degradation and the content token
        dim = spec["context_dim"]
        inputs = {"degradation": torch.randn(1, dim), "content": torch.randn(1, dim)}
    t = torch.full((1,), 50)
    times = []
    with torch.no_grad():
        net(x, x, t, **inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            net(x, x, t, **inputs)
            times.append(time.perf_counter() - start)
    return {"release": release.name, "network": spec["type"],
            "parameters_M": sum(p.numel() for p in net.parameters()) / 1e6,
            "seconds_per_nfe": sorted(times)[len(times) // 2]}


def table(result: dict) -> str:
    """Per demo: each sampler's PSNR / SSIM / NIQE at each NFE, with the PSNR against its own 100-NFE output in
    parentheses, its median seconds per network evaluation and its seconds per image at the largest NFE and at
    10 (every point's seconds per image are in the JSON)."""
    lines = []
    for name, demo in result["demos"].items():
        base = next((p for p in demo["points"] if p["sampler"] == demo["configured"]["sampler"]
                     and p["nfe_asked"] == max(result["nfe"])), None)
        reference = f"{base['sampler']} at {base['steps']} steps: {base['psnr']:.2f} dB, NIQE {base['niqe']:.2f}" \
            if base else "not measured"
        lines += [f"**{name}** ({demo['images']} image(s) of {demo['crop']}², input PSNR {demo['input']['psnr']:.2f}; "
                  f"the configured sampler {demo['configured']}; reference: {reference})", "",
                  "PSNR / SSIM / NIQE (PSNR against the same sampler's own output at the largest NFE)", "",
                  "| sampler | " + " | ".join(f"NFE {n}" for n in result["nfe"]) +
                  f" | s / NFE | s / image at NFE {max(result['nfe'])} / 10 |",
                  "|---|" + "---|" * (len(result["nfe"]) + 2)]
        for sampler in result["samplers"]:
            points = [p for p in demo["points"] if p["sampler"] == sampler]
            if not points:
                continue
            cells = []
            for n in result["nfe"]:
                p = next((p for p in points if p["nfe_asked"] == n), None)
                if p is None:
                    cells.append("-")
                    continue
                own = p.get("psnr_vs_own_100")
                own = "" if n == max(result["nfe"]) or own is None else \
                    " (= own)" if own == float("inf") else f" ({own:.0f})"
                cells.append(f"{p['psnr']:.2f} / {p['ssim']:.3f} / {p['niqe']:.1f}{own}")
            per_nfe = sorted(p["seconds_per_image"] / p["nfe"] for p in points)
            per_image = " / ".join(next((f"{p['seconds_per_image']:.2f}" for p in points if p["nfe_asked"] == n), "-")
                                   for n in (max(result["nfe"]), 10))
            lines.append(f"| {sampler} | " + " | ".join(cells) + f" | {per_nfe[len(per_nfe) // 2]:.3f} | {per_image} |")
        lines.append("")
    for name, rel in result["releases"].items():
        lines.append(f"- {name} release network `{rel['release']}` ({rel['network']}, {rel['parameters_M']:.1f} M "
                     f"parameters, random weights) at {result.get('release_size', 256)}²: {rel['seconds_per_nfe']:.2f} s "
                     f"per NFE: 100 NFE {100 * rel['seconds_per_nfe']:.0f} s, 10 NFE "
                     f"{10 * rel['seconds_per_nfe']:.0f} s, 5 NFE {5 * rel['seconds_per_nfe']:.0f} s per image")
    return "\n".join(lines)


def main(argv=None) -> int:
    from osir.metrics.suite import MetricSuite
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nfe", type=int, nargs="+", default=[100, 50, 20, 10, 5, 3])
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS)
    parser.add_argument("--demos", nargs="+", default=list(DEMOS), choices=list(DEMOS))
    parser.add_argument("--crop", type=int, default=128, help="test crop side in pixels (default 128)")
    parser.add_argument("--per-set", type=int, default=None,
                        help="images per test set (default 1: astronaut, the held-out photo; the second, cat, is "
                             "scikit-image's chelsea, a training photo)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY.PATH=VALUE",
                        help="overrides of the demos' test options, e.g. path.pretrained.g=...")
    parser.add_argument("--release-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep-release-times", action="store_true",
                        help="keep the release networks' timings of the --output file (re-running some samplers)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "fast_samplers.json"))
    args = parser.parse_args(argv)
    args.nfe = sorted(set(args.nfe), reverse=True)
    metrics = MetricSuite(METRICS)
    out = Path(args.output)
    result = {"nfe": args.nfe, "samplers": args.samplers, "torch": torch.__version__, "release_size": args.release_size,
              "cpu_threads": torch.get_num_threads(), "demos": {}, "releases": {}}
    earlier_points = {}
    if out.is_file():                      # demos (--demos) and samplers (--samplers) of an earlier run are kept
        earlier = json.loads(out.read_text())
        if earlier.get("nfe") == args.nfe and set(args.samplers) <= set(earlier.get("samplers", [])):
            result["samplers"] = earlier["samplers"]
            result["demos"], result["releases"] = earlier["demos"], earlier.get("releases", {})
            earlier_points = {name: [p for p in demo["points"] if p["sampler"] not in args.samplers]
                              for name, demo in earlier["demos"].items()}
    for name in args.demos:
        def save(partial, name=name):
            kept = earlier_points.get(name, [])
            points = kept + partial["points"]
            order = {sampler: i for i, sampler in enumerate(result["samplers"])}
            partial = {**partial, "points": sorted(points, key=lambda p: (order[p["sampler"]], -p["nfe_asked"]))}
            result["demos"][name] = partial
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1))
        save(run_demo(name, args, metrics, save))
    if args.keep_release_times and not result["releases"]:
        print(f"--keep-release-times: '{out}' holds no compatible earlier run; timing the release networks",
              file=sys.stderr)
    for name in args.demos if not (args.keep_release_times and result["releases"]) else ():
        result["releases"][name] = release_seconds_per_nfe(name, args.release_size, args.repeats)
        print(f"{name}: release {result['releases'][name]}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
