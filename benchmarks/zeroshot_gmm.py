"""Zero-shot samplers against exact posteriors: Gaussian-mixture priors with exact noise predictions and random
rank-deficient linear measurements, after the Gaussian-mixture experiments of MCGdiff (Cardoso et al., ICLR 2024,
Sec. 4.1), with the ground truth of osir/methods/zeroshot/gmm.py.

    python benchmarks/zeroshot_gmm.py                          # d = 8, 80, 800; every registered sampler; 3 seeds
    python benchmarks/zeroshot_gmm.py --dims 8 --samples 200 --seeds 1 --output-dir /tmp/zs   # a quick check

Per dimension d and seed (the seed draws the whole problem, then seeds each sampler's generator):

* prior: K = 5 components (``--components``), means m_k ~ N(0, ``--mean-scale``^2 I), isotropic covariances
  v_k I with v_k ~ U(0.2, 1.0), weights w_k ~ U(0.5, 1.5) normalised; the exact eps of ``GaussianMixturePrior``
  on the ADM releases' linear schedule (1000 steps);
* measurement: A = B C / sqrt(r d) with B [m, r], C [r, d] standard normal, m = d / 4 rows (``--rows``) of rank
  r = m / 2 (``--rank``; at least 1): rank-deficient (r < m < d), entries of variance 1 / d so that every row
  of A x has about the prior's spread; y = A x* + sigma_y n with x* drawn from the prior, sigma_y = 0.1
  (``--sigma-y``);
* the exact posterior (``exact_posterior``) gives ``--samples`` reference samples (default 1000; fewer
  with ``--samples-800`` for d = 800 if wanted);
* every sampler (``ZERO_SHOT_SAMPLERS.names()`` or ``--samplers``) is called by the common signature
  ``sampler(prior, operator, y repeated N times, steps=S, generator=...)`` (plus ``particles=`` for samplers
  whose signature has it, when ``--particles`` is given, and ``--set name.key=value`` settings); its N samples
  give the sliced Wasserstein-2 distance to the reference samples (``--projections`` random directions, the
  same directions for every sampler of a seed), the mixture weights they show (each sample assigned to its most
  responsible posterior component) and their total variation to the exact posterior weights, and seconds;
* references per seed: a second exact posterior draw (the distance's floor at this N), prior samples (a sampler
  that ignores y), and the weights that exact samples show by the same assignment (the weight estimator's floor).

Writes ``<output-dir>/zeroshot_gmm.json`` (every run) and ``zeroshot_gmm.md`` (mean +- standard deviation over
seeds), default output-dir benchmarks/results.  Samplers are found through the registry's entry points; the
modules of osir.methods.zeroshot are also imported so that samplers registered by decorator are listed before
``pip install -e .`` has refreshed the entry points.  A sampler that raises is recorded with its error.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import pkgutil
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
D = torch.float64


def parse_setting(text: str) -> tuple[str, str, object]:
    """'name.key=value' -> (name, key, value); value read as JSON where it parses (numbers, true, null)."""
    target, _, raw = text.partition("=")
    name, _, key = target.partition(".")
    if not name or not key or not _:
        raise argparse.ArgumentTypeError(f"--set expects name.key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, key, value


def register_zero_shot_samplers() -> None:
    """Import every module of osir.methods.zeroshot (their decorators register the samplers)."""
    import osir.methods.zeroshot as package
    for module in pkgutil.iter_modules(package.__path__):
        try:
            importlib.import_module(f"{package.__name__}.{module.name}")
        except ImportError as err:                       # an optional dependency of one module
            print(f"skipping {module.name}: {err}")


def make_problem(d: int, seed: int, args):
    from osir.methods.zeroshot.gmm import GaussianMixturePrior, exact_posterior
    from osir.methods.zeroshot.operators import DenseOperator
    g = torch.Generator().manual_seed(seed)
    k = args.components
    prior = GaussianMixturePrior(args.mean_scale * torch.randn(k, d, dtype=D, generator=g),
                                 0.2 + 0.8 * torch.rand(k, dtype=D, generator=g),
                                 0.5 + torch.rand(k, dtype=D, generator=g))
    rows = max(1, round(d * args.rows)) if args.rows < 1 else int(args.rows)
    rank = max(1, round(rows * args.rank)) if args.rank < 1 else int(args.rank)
    rank = min(rank, rows, d)
    matrix = (torch.randn(rows, rank, dtype=D, generator=g) @ torch.randn(rank, d, dtype=D, generator=g)
              / math.sqrt(rank * d))
    operator = DenseOperator(matrix, args.sigma_y)
    truth = prior.sample(1, g)
    y = operator.measure(truth, g)
    posterior = exact_posterior(prior, matrix, args.sigma_y, y)
    return g, prior, operator, y, posterior, rows, operator.rank


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 80, 800])
    parser.add_argument("--components", type=int, default=5)
    parser.add_argument("--mean-scale", type=float, default=1.0)
    parser.add_argument("--rows", type=float, default=0.25, help="rows of A: a fraction of d (< 1) or a count")
    parser.add_argument("--rank", type=float, default=0.5, help="rank of A: a fraction of its rows (< 1) or a count")
    parser.add_argument("--sigma-y", type=float, default=0.1)
    parser.add_argument("--samplers", nargs="+", default=None, help="default: every registered zero-shot sampler")
    parser.add_argument("--steps", type=int, nargs="+", default=[100])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--samples-800", type=int, default=None, help="samples for d >= 800 (default --samples)")
    parser.add_argument("--particles", type=int, default=None,
                        help="passed as particles= to samplers that take it (default: their own)")
    parser.add_argument("--set", dest="settings", type=parse_setting, action="append", default=[],
                        metavar="NAME.KEY=VALUE", help="a sampler setting, e.g. --set ddrm.eta=1.0")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. SEEDS-1")
    parser.add_argument("--projections", type=int, default=1000)
    parser.add_argument("--device", default="cpu", help="where the samplers run (the references stay on the CPU)")
    parser.add_argument("--output-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    from osir.core.registry import ZERO_SHOT_SAMPLERS
    from osir.methods.zeroshot.gmm import component_weights, sliced_wasserstein, total_variation
    register_zero_shot_samplers()
    names = args.samplers or ZERO_SHOT_SAMPLERS.names()
    if not names:
        print("no zero-shot sampler is registered")
        return 2
    settings: dict[str, dict] = {}
    for name, key, value in args.settings:
        settings.setdefault(name, {})[key] = value
    device = torch.device(args.device)

    runs, references = [], []
    for d in args.dims:
        n = args.samples_800 if (args.samples_800 and d >= 800) else args.samples
        for seed in range(args.seeds):
            g, prior, operator, y, posterior, rows, rank = make_problem(d, seed, args)
            reference = posterior.sample(n, g)
            directions_seed = 10_000 + seed

            def distance(samples):
                return sliced_wasserstein(samples, reference, args.projections,
                                          torch.Generator().manual_seed(directions_seed))

            exact_weights = posterior.weights
            references.append({
                "dim": d, "seed": seed, "rows": rows, "rank": rank, "samples": n,
                "posterior_weights": exact_weights.tolist(),
                "sw_exact_second_draw": distance(posterior.sample(n, g)),
                "sw_prior": distance(prior.sample(n, g)),
                "weights_tv_exact_samples": total_variation(component_weights(posterior, reference), exact_weights),
            })
            print(f"d={d} seed={seed}: A {rows}x{d} rank {rank}, posterior weights "
                  f"{[round(w, 3) for w in exact_weights.tolist()]}, SW floor "
                  f"{references[-1]['sw_exact_second_draw']:.3f}, prior {references[-1]['sw_prior']:.3f}")
            y_batch = y.to(device).expand(n, -1).contiguous()
            for name in names:
                try:
                    sampler = ZERO_SHOT_SAMPLERS.get(name)
                except Exception as err:                 # noqa: BLE001 (reported, the others still run)
                    runs.append({"dim": d, "seed": seed, "sampler": name, "error": f"{type(err).__name__}: {err}"})
                    continue
                parameters = inspect.signature(sampler).parameters
                extra = dict(settings.get(name, {}))
                if args.particles is not None and "particles" in parameters:
                    extra["particles"] = args.particles
                for steps in args.steps:
                    row = {"dim": d, "seed": seed, "sampler": name, "steps": steps, "samples": n, **extra}
                    generator = torch.Generator(device=device).manual_seed(seed)
                    try:
                        start = time.perf_counter()
                        samples = sampler(prior, operator, y_batch, steps=steps, generator=generator, **extra)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        row["seconds"] = time.perf_counter() - start
                        samples = samples.detach().to("cpu", D).reshape(samples.shape[0], -1)
                        if samples.shape[0] != n:        # e.g. a sampler returning all its particles
                            keep = torch.randperm(samples.shape[0], generator=torch.Generator().manual_seed(seed))
                            samples = samples[keep[:n]] if samples.shape[0] > n else samples
                        row["returned"] = int(samples.shape[0])
                        if samples.shape[0] < n or not bool(torch.isfinite(samples).all()):
                            raise ValueError(f"{samples.shape[0]} samples, finite: "
                                             f"{bool(torch.isfinite(samples).all())}")
                        row["sw"] = distance(samples)
                        shown = component_weights(posterior, samples)
                        row["weights"] = shown.tolist()
                        row["weights_tv"] = total_variation(shown, exact_weights)
                        print(f"  {name:10s} steps={steps:4d}: SW {row['sw']:.3f}, weights TV "
                              f"{row['weights_tv']:.3f}, {row['seconds']:.2f} s")
                    except Exception as err:             # noqa: BLE001
                        row["error"] = f"{type(err).__name__}: {err}"
                        print(f"  {name:10s} steps={steps:4d}: {row['error']}")
                    runs.append(row)

    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    options = {key: value for key, value in vars(args).items() if key != "settings"}
    options["settings"] = settings
    record = {"options": options, "device": str(device), "torch": torch.__version__,
              "references": references, "runs": runs}
    (output / "zeroshot_gmm.json").write_text(json.dumps(record, indent=1))
    (output / "zeroshot_gmm.md").write_text(markdown(record))
    print(f"wrote {output / 'zeroshot_gmm.json'} and {output / 'zeroshot_gmm.md'}")
    return 0


def _spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(record: dict) -> str:
    options = record["options"]
    lines = ["# Zero-shot samplers on Gaussian-mixture posteriors",
             "",
             f"K = {options['components']} components, mean scale {options['mean_scale']}, sigma_y = "
             f"{options['sigma_y']}, rows {options['rows']}, rank {options['rank']} (fractions of d and of the "
             f"rows), {options['projections']} projections, seeds 0..{options['seeds'] - 1}, device "
             f"{record['device']}. SW: sliced Wasserstein-2 to exact posterior samples (lower is better); "
             "weights TV: total variation between the mixture weights the samples show and the exact posterior "
             "weights; mean ± sd over seeds."
             + (f" Sampler settings: {options['settings']}." if options["settings"] else "")
             + (f" particles = {options['particles']} (samplers that take it)." if options["particles"] else ""),
             ""]
    for d in options["dims"]:
        refs = [r for r in record["references"] if r["dim"] == d]
        if not refs:
            continue
        lines += [f"## d = {d} (A {refs[0]['rows']} x {d}, rank {refs[0]['rank']}; N = {refs[0]['samples']})", "",
                  "| sampler | steps | SW | weights TV | seconds | failures |", "|---|---|---|---|---|---|",
                  f"| exact posterior, 2nd draw | - | {_spread([r['sw_exact_second_draw'] for r in refs])} "
                  f"| {_spread([r['weights_tv_exact_samples'] for r in refs])} | - | - |",
                  f"| prior samples | - | {_spread([r['sw_prior'] for r in refs])} | - | - | - |"]
        keys = []
        for run in record["runs"]:
            if run["dim"] == d and (run["sampler"], run.get("steps")) not in keys:
                keys.append((run["sampler"], run.get("steps")))
        for name, steps in keys:
            rows = [r for r in record["runs"] if r["dim"] == d and r["sampler"] == name and r.get("steps") == steps]
            good = [r for r in rows if "error" not in r]
            lines.append(f"| {name} | {steps if steps is not None else '-'} | {_spread([r['sw'] for r in good])} "
                         f"| {_spread([r['weights_tv'] for r in good])} | "
                         f"{_spread([r['seconds'] for r in good], 2)} | {len(rows) - len(good)} |")
        max_weights = [max(r["posterior_weights"]) for r in refs]
        lines += ["", f"Largest exact posterior weight per seed: {', '.join(f'{w:.3f}' for w in max_weights)}.", ""]
        errors = sorted({r["error"] for r in record["runs"] if r["dim"] == d and "error" in r})
        lines += [f"- error: {e}" for e in errors] + ([""] if errors else [])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
