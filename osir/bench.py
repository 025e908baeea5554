"""Benchmarks of restoration methods: quality against network evaluations and time (``steps``), and
the cost of a method (``efficiency``).

    python -m osir.bench steps -opt options/test/irsde.yml --steps 100 50 20 10 5 [--samplers posterior ode]
    python -m osir.bench efficiency -opt options/test/a.yml options/test/b.yml --sizes 512 1024 2048 [--tile 512]

What each sub-command measures, its options and its outputs: ``docs/bench.md``.  The bench names no method:
a method's card (``osir.core.card``) declares its noise network and the stand-ins for its missing weight
files; restorations are counted and timed through a wrapper handed to the inference layer (nothing of a
method or module is replaced).  Hand-written: the counting (torch's forward hooks and ``FlopCounterMode``)
and the reports.  Errors in the options or the arguments are one line and exit code 2 (``osir.core.cli.run``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from osir.core import cli
from osir.core.lazy import LazyModule
from osir.core.registry import OptionsError
from osir.core.options import Options
from osir.core.progress import Progress

#: torch, imported on first use: a path error of ``steps`` comes before it (``check_files_early``)
torch = LazyModule("torch")


def pick_device(name: str | None):
    from osir.inference.load import pick_device as pick
    return pick(name)


def write_text(path, text: str) -> None:
    from osir.core.checkpoint import write_text as write
    write(path, text)

PROG = "osir.bench"
WEIGHTS_NOTE = ("latency, MACs and memory do not depend on the weights' values: networks without a weights file "
                "keep random initial weights")
_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


# ----------------------------------------------------------------------------- counting
class MacCounter:
    """``torch.utils.flop_counter.FlopCounterMode`` as a context manager that reports MACs (FLOPs / 2).
    It counts matrix products, convolutions and attention (torch's registry of FLOP formulas), not
    element-wise ops; ``flops`` can be read while it runs."""

    def __enter__(self):
        from torch.utils.flop_counter import FlopCounterMode
        self.mode = FlopCounterMode(display=False)
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)

    @property
    def flops(self) -> int:
        return int(self.mode.get_total_flops())

    @property
    def macs(self) -> int:
        return self.flops // 2


def count_macs(fn, *args, **kwargs):
    """(``fn(*args, **kwargs)``, the MACs it ran) through ``MacCounter``."""
    with MacCounter() as counter:
        out = fn(*args, **kwargs)
    return out, counter.macs


class CountedMethod:
    """A method seen through a ``CallCounter``: ``restore`` counts the call (one per tile and batch) and its
    samples, then calls the method's own; every other attribute is read from, and written to, the method.
    Handed to ``osir.inference.restore_image`` in the method's place, so the method itself is not changed."""

    def __init__(self, method, counter: CallCounter):
        object.__setattr__(self, "_method", method)
        object.__setattr__(self, "_counter", counter)

    def __getattr__(self, name):
        if name in ("_method", "_counter"):         # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._method, name)

    def __setattr__(self, name, value):
        setattr(self._method, name, value)

    def restore(self, batch: dict, *args, **kwargs):
        self._counter.restores += 1
        self._counter.restore_samples += int(batch["lq"].shape[0])
        return self._method.restore(batch, *args, **kwargs)


class CallCounter:
    """Forward calls of each network of a method (a forward pre-hook on each, removed by ``remove`` or on
    leaving a ``with`` block) with the samples they carried (the batch size of the first tensor argument),
    and the ``restore`` calls (one per tile and per batch) with their samples of the restorations that go
    through ``counted`` (a ``CountedMethod``)."""

    def __init__(self, method):
        self.method = method
        self.counted = CountedMethod(method, self)
        self.handles = [net.register_forward_pre_hook(self._hook(name), with_kwargs=True)
                        for name, net in method.networks.items()]
        self.reset()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def _hook(self, name):
        def hook(module, args, kwargs):
            first = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a) and a.ndim), None)
            self.calls[name] += 1
            self.samples[name] += int(first.shape[0]) if first is not None else 1
        return hook

    def reset(self) -> None:
        self.calls = dict.fromkeys(self.method.networks, 0)
        self.samples = dict.fromkeys(self.method.networks, 0)
        self.restores = self.restore_samples = 0

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def nfe(self, name: str) -> float | None:
        """Evaluations of network ``name`` per image and restore call (per tile when tiled)."""
        return self.samples[name] / self.restore_samples if self.restore_samples else None


class TimedRestore:
    """``osir.inference.restore_image`` through ``counter.counted``, timed (synchronised on an accelerator):
    the ``restore`` that ``osir.engine.validation.iterate`` is given; ``seconds`` and ``calls`` add up."""

    def __init__(self, counter: CallCounter, device: torch.device):
        self.counter, self.device = counter, device
        self.reset()

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def __call__(self, method, batch: dict, *args, **kwargs) -> torch.Tensor:
        from osir.inference import restore_image
        if method is not self.counter.method:
            raise ValueError("TimedRestore: restoring with a method it does not count")
        synchronize(self.device)
        start = time.perf_counter()
        out = restore_image(self.counter.counted, batch, *args, **kwargs)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def card_of(opt: Options):
    """The card of the options' method type (``osir.core.card.card_of_method``), or None."""
    from osir.core.card import card_of_method
    return card_of_method(opt.method["type"])


def noise_network(method, counter: CallCounter | None = None, card=None) -> str:
    """The network whose evaluations make the NFE: the one the method's card declares
    (``MethodCard.noise_network``), else the method's only network, else the one called most."""
    nets = method.networks
    declared = getattr(card, "noise_network", None)
    if declared in nets:
        return declared
    if len(nets) == 1 or counter is None:
        return next(iter(nets))
    return max(nets, key=lambda n: counter.samples[n])


def configured_steps(method) -> int | None:
    """The sampling steps the method is configured for (its ``timesteps`` list), None for a method that
    does not sample in steps."""
    timesteps = getattr(method, "timesteps", None)
    return len(timesteps) - 1 if isinstance(timesteps, list) else None


def one_step_macs(method, card) -> bool:
    """Whether MACs are counted on a one-step restoration (``restore(..., steps=1)``, a per-call setting)
    and scaled: the card says ``restore`` takes a step count, and the method is configured for more."""
    return bool(card is not None and card.sampling.steps) and (configured_steps(method) or 0) > 1


def count_parameters(method) -> dict:
    """Total and trainable parameters of each network and of all (each tensor counted once)."""
    seen, total, trainable, nets = set(), 0, 0, {}
    for name, net in method.networks.items():
        params = list(net.parameters())
        nets[name] = {"total": sum(p.numel() for p in params),
                      "trainable": sum(p.numel() for p in params if p.requires_grad)}
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
                trainable += p.numel() if p.requires_grad else 0
    return {"total": total, "trainable": trainable, "networks": nets}


def synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


# ----------------------------------------------------------------------------- shared
def prepare_method(opt: Options, device: torch.device, mixed_precision: str):
    """The method as test.py prepares it (``osir.inference.load``: weights of path.pretrained loaded, on
    ``device``, inference preparations done) and the networks that got no weights file."""
    from osir.inference.load import build_method, prepare_for_inference
    method = prepare_for_inference(build_method(opt), device, mixed_precision, frozen=False)
    return method, method.networks_without_weights(opt.path.pretrained)


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def format_rows(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    if markdown:
        return "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header)] + rows)
    lines = [header] + rows
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    def fmt(row):
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- steps
def steps_configs(path, base: Options, steps: list[int], samplers: list[str] | None) -> list[tuple]:
    """(sampler, steps) pairs for a diffusion method, ``[(None, None)]`` for a single point."""
    from osir.core.registry import SAMPLERS
    method = base.method
    if "sample_steps" not in method or "sampler" not in method:
        return [(None, None)]
    T = method.get("T")
    bad = [n for n in steps if n < 1 or (T is not None and n > T)]
    if bad:
        raise OptionsError(f"--steps: {', '.join(map(str, bad))} outside [1, T={T}] (method.T of '{path}')")
    samplers = samplers or [method["sampler"]]
    for name in samplers:
        SAMPLERS.get(name, "--samplers")
    return [(s, n) for s in samplers for n in steps]


def sampler_arguments(name: str) -> set[str]:
    """The keyword arguments the registered sampler ``name`` takes (``eta``, ``clip_denoised``, ...)."""
    import inspect
    from osir.core.registry import SAMPLERS
    return set(inspect.signature(SAMPLERS.get(name, "--samplers")).parameters)


def run_steps(path, args, device: torch.device) -> dict:
    from osir.data.io import write_image
    from osir.engine.trainer import build_dataset
    from osir.engine.validation import evaluation_mode, iterate
    from osir.metrics.suite import MetricSuite
    from osir.core.options import check_files, load_options
    base = load_options(path, args.set)
    check_files(base, source=str(path))      # every file and folder it names, all missing ones in one error
    configs = steps_configs(path, base, args.steps, args.samplers)
    metrics = MetricSuite(base.metrics, device)
    specs = {k: v for k, v in base.datasets.items() if k != "train"}
    if not specs:
        raise OptionsError(f"datasets: '{path}' names no test set to restore")
    datasets = {k: build_dataset(v, f"datasets.{k}") for k, v in specs.items()}
    result = {"command": "steps", "options": str(path), "name": base.name, "method": base.method["type"],
              "device": str(device), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
              "overrides": list(args.set),
              "metrics": metrics.settings(), "sets": {k: len(v) for k, v in datasets.items()},
              "seconds_per_image": "restore_image only (padding, tiles, sampling), after the warm-up; "
                                   "not data loading or scoring", "points": []}
    method_opts = base.method
    for index, (sampler, steps) in enumerate(configs):
        overrides, notes = list(args.set), []
        if sampler is None:
            notes.append("not a diffusion method (no method.sample_steps / method.sampler): one point, "
                         "--steps and --samplers do not apply")
        else:
            overrides += [f"method.sampler={sampler}", f"method.sample_steps={steps}"]
            taken = sampler_arguments(sampler)
            for key, off in (("eta", "null"), ("clip_denoised", "false")):
                if method_opts.get(key) is not None and method_opts.get(key) is not False and key not in taken:
                    overrides.append(f"method.{key}={off}")
                    notes.append(f"method.{key} {method_opts.get(key)} does not apply to '{sampler}': left out")
        opt = load_options(path, overrides)
        torch.manual_seed(opt.seed)        # the same initial weights for every point when there are no files
        method, missing = prepare_method(opt, device, opt.inference.mixed_precision)
        if missing:
            notes.append(f"no weights for {', '.join(missing)}: initial weights")
            if index == 0:
                warn(f"no weights for network(s) {', '.join(missing)} (path.pretrained): they keep their "
                     "initial weights")
        per_set, rows = {}, []
        set_level = bool(getattr(metrics, "set_metrics", None))
        label = f"{PROG}: {base.name}: point {index + 1}/{len(configs)} " + \
            (f"({sampler} steps {steps})" if sampler is not None else f"({opt.method['type']})")
        with evaluation_mode(method), CallCounter(method) as counter, \
                Progress(sum(map(len, datasets.values())), label) as progress:     # per measured image
            timer = TimedRestore(counter, device)       # handed to iterate: restore_image, counted and timed
            wall = 0.0
            for set_name, dataset in datasets.items():
                spec = opt.datasets[set_name]
                if method.evaluate(dataset, spec["batch_size"]) is not None:
                    raise OptionsError(f"method: {opt.method['type']} evaluates itself (no restoration to "
                                       "benchmark)")
                loader = {"tile": opt.tile, "seed": opt.seed, "batch_size": spec["batch_size"],
                          "num_workers": spec["num_workers"], "restore": timer}
                if index == 0 and set_name == next(iter(datasets)) and args.warmup > 0:
                    for _ in iterate(method, dataset, None, device, max_images=args.warmup, **loader):
                        pass
                    counter.reset()
                    timer.reset()
                start = time.perf_counter()
                with tempfile.TemporaryDirectory() as written:
                    scores = []
                    for item, restored, score, _ in iterate(method, dataset, metrics, device, **loader):
                        scores.append(score)
                        if set_level:            # set metrics (FID) score the written images
                            write_image(Path(written) / f"{item['name']}.png", restored[0])
                        progress.update()
                    per_set[set_name] = {**_means(scores), **_set_scores(metrics, set_level, written, spec)}
                wall += time.perf_counter() - start
                rows += scores
        noise = noise_network(method, counter, card_of(opt))
        images = len(rows)
        point = {"sampler": sampler if sampler is not None else opt.method["type"], "steps": steps,
                 "nfe": counter.nfe(noise), "noise_network": noise,
                 "network_calls_per_image": {k: v / max(images, 1) for k, v in counter.samples.items()},
                 "restores_per_image": counter.restore_samples / max(images, 1),
                 "seconds_per_image": timer.seconds / max(images, 1), "wall_seconds": wall, "images": images,
                 "metrics": _overall(rows, per_set, datasets), "sets": per_set, "notes": notes}
        if hasattr(method, "timesteps"):
            point["timesteps"] = list(method.timesteps)
        result["points"].append(point)
        print(f"{PROG}: {base.name}: {point['sampler']}" + (f" steps {steps}" if steps else "")
              + f": NFE {_num(point['nfe'])}, "
              f"{point['seconds_per_image']:.3f} s/image, "
              + ", ".join(f"{k} {v:.4f}" for k, v in point["metrics"].items()), file=sys.stderr)
        del method
    return result


def _set_scores(metrics, set_level: bool, written: str, spec: dict) -> dict[str, float]:
    """The suite's set metrics (FID: restored folder against the GT folder), where it has them and the
    test set's GT is a folder on disk."""
    gt_dir = spec.get("dataroot_gt")
    if not set_level or gt_dir is None or spec.get("io_backend", "disk") != "disk":
        return {}
    return {k: float(v) for k, v in (metrics.score_sets(written, gt_dir) or {}).items()}


def _overall(rows: list[dict], per_set: dict, datasets: dict) -> dict[str, float]:
    """Per-image metrics averaged over all images; a set metric (FID) averaged over the test sets
    weighted by their images."""
    out = _means(rows)
    for key in {k for v in per_set.values() for k in v} - set(out):
        if all(key in v for v in per_set.values()):
            total = sum(len(datasets[name]) for name in per_set)
            out[key] = sum(v[key] * len(datasets[name]) for name, v in per_set.items()) / max(total, 1)
    return out


def _means(rows: list[dict]) -> dict[str, float]:
    keys = list(rows[0]) if rows else []
    return {k: sum(float(r[k]) for r in rows) / len(rows) for k in keys if all(k in r for r in rows)}


def plot_steps(result: dict, path: Path) -> None:
    """Each metric against NFE and against seconds per image, one line per sampler (or NFE against
    seconds when the test sets have no metric)."""
    from matplotlib.figure import Figure
    points = result["points"]
    metrics = [m for m in result["metrics"] if all(m in p["metrics"] for p in points)]
    rows = metrics or [None]
    fig = Figure(figsize=(10, 3.6 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    samplers = list(dict.fromkeys(p["sampler"] for p in points))
    for r, metric in enumerate(rows):
        for c, (xkey, xlabel) in enumerate([("nfe", "NFE (noise-network evaluations)"),
                                            ("seconds_per_image", "seconds per image (labels: NFE)")]):
            ax = axes[r][c]
            for sampler in samplers:       # in NFE order in both panels: the line follows the steps
                pts = sorted((p for p in points if p["sampler"] == sampler and p[xkey] is not None),
                             key=lambda p: p["nfe"] or 0)
                ys = [p["metrics"][metric] if metric else p["seconds_per_image"] for p in pts]
                ax.plot([p[xkey] for p in pts], ys, marker="o", label=sampler)
                if xkey == "seconds_per_image":
                    for p, y in zip(pts, ys):
                        ax.annotate(f"{_num(p['nfe'], 3)}", (p[xkey], y), textcoords="offset points",
                                    xytext=(4, 4), fontsize=7)
            xs = [p[xkey] for p in points if p[xkey]]
            if xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            if metric:
                better = "lower" if result["metrics"][metric].get("lower_better") else "higher"
                ax.set_ylabel(f"{metric} ({better} is better)")
            else:
                ax.set_ylabel("seconds per image")
            ax.grid(True, alpha=0.3)
            ax.legend()
    fig.suptitle(f"{result['name']} ({result['method']}, {result['device']})")
    fig.savefig(path, dpi=100)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise OptionsError(f"--threads: expected 1 or more, got {threads}")
        torch.set_num_threads(threads)


def steps_command(args) -> int:
    from osir.core.options import check_files_early, read_options
    for path in args.opt:        # every file each options file names, before torch is imported
        check_files_early(read_options(path, args.set), source=str(path))
    device = pick_device(args.device)
    set_threads(args.threads)
    if args.warmup < 0:
        raise OptionsError("--warmup: expected 0 or more images")
    tables = []
    for path in args.opt:
        result = run_steps(path, args, device)
        from osir.core.options import load_options
        out_dir = Path(args.output) if args.output else \
            Path(load_options(path, args.set).path.results_root) / "bench"
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, png_path = out_dir / f"{result['name']}_steps.json", out_dir / f"{result['name']}_steps.png"
        write_text(json_path, json.dumps(result, indent=2))
        plot_steps(result, png_path)
        tables.append(result)
        print(f"{PROG}: wrote {json_path} and {png_path}", file=sys.stderr)
    metrics = list(dict.fromkeys(m for r in tables for p in r["points"] for m in p["metrics"]))
    header = ["name", "sampler", "steps", "NFE", "s/image"] + metrics
    rows = [[r["name"], str(p["sampler"]), _num(p["steps"]), _num(p["nfe"]), f"{p['seconds_per_image']:.4f}"]
            + [f"{p['metrics'][m]:.4f}" if m in p["metrics"] else "-" for m in metrics]
            for r in tables for p in r["points"]]
    print(format_rows(header, rows))
    return 0


# ----------------------------------------------------------------------------- efficiency
def efficiency_options(path, overrides: list[str], scratch: Path) -> tuple[Options, list[str]]:
    """The options with missing weight files replaced, and what was replaced: files of ``path.pretrained``
    that do not exist are dropped (random initial weights), then the method's own files by its card's
    ``standin`` (``MethodCard.standin``, which changes the ``method`` section and says what it did)."""
    from osir.core.card import resolve
    from osir.core.options import load_options
    opt = load_options(path, overrides)
    notes = []
    pretrained = opt.path.pretrained
    for name, file in list(pretrained.items()):
        if not Path(file).exists():
            del pretrained[name]
            notes.append(f"path.pretrained.{name}: '{file}' not found: random initial weights")
    card = card_of(opt)
    if card is not None and card.standin:
        notes += resolve(card.standin)(opt.method, Path(scratch), opt.seed)
    return opt, notes


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(s in text for s in (
        "out of memory", "can't allocate memory", "not enough memory", "cannot allocate memory"))


def _memory_mib(device: torch.device, peak: bool) -> float:
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / 2 ** 20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # KiB on Linux


def measure(spec: dict) -> dict:
    """One measurement (run in a fresh process by ``efficiency``): latency, peak memory, NFE and
    (``count_macs``) MACs of restoring one ``size`` x ``size`` image, whole or tiled."""
    from osir.engine.validation import evaluation_mode
    from osir.inference import restore_image
    from osir.core.options import as_options
    device = torch.device(spec["device"])
    tile = spec["tile"] if spec["mode"] == "tiled" else None
    result = {k: spec[k] for k in ("size", "mode", "precision")}
    result["tile"] = tile
    result["memory"] = "torch.cuda.max_memory_allocated" if device.type == "cuda" else \
        "peak resident set size of the process (ru_maxrss)"
    try:
        for module in spec["opt"].get("imports") or []:        # they register what the options name
            importlib.import_module(module)
        opt = as_options(spec["opt"])
        torch.manual_seed(opt.seed)
        method, _ = prepare_method(opt, device, _PRECISION[spec["precision"]])
        card = card_of(opt)
        lq = torch.rand(1, 3, spec["size"], spec["size"], generator=torch.Generator().manual_seed(0)).to(device)
        batch = {"lq": lq, "lq_path": ["random.png"], "name": ["random"]}     # as a dataset's batch holds them
        generator = torch.Generator(device=device)
        counter = CallCounter(method)

        def restore(**settings):          # settings: per-call sampling settings (steps=1 for the MACs)
            generator.manual_seed(opt.seed)
            return restore_image(counter.counted, batch, tile, spec["overlap"], generator, **settings)
        with evaluation_mode(method), counter:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            result["baseline_memory_mib"] = _memory_mib(device, peak=device.type != "cuda")
            for _ in range(spec["warmup"]):
                restore()
            counter.reset()
            times = []
            for _ in range(spec["repeats"]):
                synchronize(device)
                start = time.perf_counter()
                out = restore()
                synchronize(device)
                times.append(time.perf_counter() - start)
            result["peak_memory_mib"] = _memory_mib(device, peak=True)
            result["restore_memory_mib"] = result["peak_memory_mib"] - result["baseline_memory_mib"]
            noise = noise_network(method, counter, card)
            result.update(seconds=statistics.median(times), seconds_runs=times, output_size=list(out.shape[-2:]),
                          noise_network=noise, nfe=counter.nfe(noise), tiles=counter.restore_samples / spec["repeats"],
                          network_calls={k: v / spec["repeats"] for k, v in counter.samples.items()})
            del out
            if spec["count_macs"]:
                result.update(_macs(method, restore, counter, noise, counter.samples[noise] / spec["repeats"],
                                    result["nfe"], one_step_macs(method, card)))
        result["status"] = "ok"
    except Exception as err:          # noqa: BLE001  (one measurement failing is a row of the table)
        oom = is_out_of_memory(err)
        result.update(status="out of memory" if oom else "error",
                      error=cli.one_line(err) if oom else f"{type(err).__name__}: {cli.one_line(err)}")
        if not oom and not isinstance(err, cli.USER_ERRORS):
            import traceback
            traceback.print_exc()
    return result


def _macs(method, restore, counter: CallCounter, noise: str, calls_per_image: float, nfe: float | None,
          one_step: bool) -> dict:
    """MACs of restoring the image; with ``one_step``, counted on a one-step restoration (``restore(steps=1)``,
    the sampler's per-call setting; the noise network's share measured inside its forward calls) and scaled
    to ``calls_per_image``, the noise-network calls of the full restoration (every step's evaluation costs
    the same)."""
    net = method.networks[noise]
    inside, start = [0], [0]
    with MacCounter() as macs:
        pre = net.register_forward_pre_hook(lambda *a: start.__setitem__(0, macs.flops))
        post = net.register_forward_hook(lambda *a: inside.__setitem__(0, inside[0] + macs.flops - start[0]))
        try:
            counter.reset()
            if one_step:
                restore(steps=1)
            else:
                restore()
        finally:
            pre.remove()
            post.remove()
    total, noise_flops, calls = macs.flops, inside[0], counter.samples[noise]
    noise_total = noise_flops * (calls_per_image / calls) if one_step and calls else noise_flops
    other = total - noise_flops
    return {"macs": int((other + noise_total) // 2), "macs_other": int(other // 2),
            "macs_per_nfe": int(noise_total / nfe // 2) if nfe else None,
            "macs_counted_on": "a one-step restoration, scaled to the NFE" if one_step else "the restoration"}


def run_measurement(spec: dict, timeout: float | None, memory_limit_mib: float | None) -> dict:
    """``measure(spec)`` in a fresh ``python -m osir.bench _measure`` process."""
    base = {k: spec[k] for k in ("size", "mode", "precision")}
    with tempfile.TemporaryDirectory() as tmp:
        spec_file, result_file = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_file.write_text(json.dumps({**spec, "result": str(result_file), "memory_limit_mib": memory_limit_mib}))
        try:
            done = subprocess.run([sys.executable, "-m", "osir.bench", "_measure", str(spec_file)],
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {**base, "status": "timed out", "error": f"over --timeout {timeout:g} s"}
        if result_file.is_file():
            result = json.loads(result_file.read_text())
            if result.get("status") == "error" and done.stderr.strip():
                print(done.stderr.strip(), file=sys.stderr)
            return result
        if done.returncode in (-9, 137):
            return {**base, "status": "out of memory", "error": "the measuring process was killed (SIGKILL), "
                                                                 "most likely for memory"}
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return {**base, "status": "error", "error": lines[-1] if lines else f"exit code {done.returncode}"}


def _measure_child(spec_file: str) -> int:
    spec = json.loads(Path(spec_file).read_text())
    if spec.get("memory_limit_mib"):
        import resource
        limit = int(spec["memory_limit_mib"] * 2 ** 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    result = measure(spec)
    Path(spec["result"]).write_text(json.dumps(result, indent=2))
    return 0


def efficiency_command(args) -> int:
    from osir.inference.load import build_method
    device = pick_device(args.device)
    set_threads(args.threads)
    precisions = args.precisions or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    for name, values, low in (("--sizes", args.sizes, 1), ("--tile", [args.tile] if args.tile else [], 1),
                              ("--repeats", [args.repeats], 1), ("--warmup", [args.warmup], 0)):
        if any(v < low for v in values):
            raise OptionsError(f"{name}: expected values >= {low}, got {values}")
    if args.overlap is not None and args.overlap < 0:
        raise OptionsError("--overlap: expected 0 or more pixels")
    result = {"command": "efficiency", "device": str(device), "torch": torch.__version__,
              "cpu_threads": torch.get_num_threads(), "sizes": args.sizes,
              "tile": args.tile, "precisions": precisions, "repeats": args.repeats, "warmup": args.warmup,
              "overrides": list(args.set), "weights": WEIGHTS_NOTE,
              "size": "the LQ's side in pixels (square, random content); the output is scale x size",
              "macs": "torch.utils.flop_counter.FlopCounterMode, MACs = FLOPs / 2 (matrix products, convolutions, "
                      "attention; element-wise ops not counted)",
              "memory": "cuda: torch.cuda.max_memory_allocated; cpu: peak resident set size (ru_maxrss) of a fresh "
                        "process per measurement, incl. Python, torch and the weights (baseline_memory_mib: its peak "
                        "before the first restoration)",
              "methods": []}
    modes = ["whole", "tiled"] if args.tile else ["whole"]
    with tempfile.TemporaryDirectory() as scratch:
        # every options file is read and checked before the first measurement
        loaded = [efficiency_options(path, args.set, Path(scratch) / str(i)) for i, path in enumerate(args.opt)]
        results_root = loaded[0][0].path.results_root
        progress = Progress(len(loaded) * len(args.sizes) * len(modes) * len(precisions), PROG, "measurement")
        for path, (opt, notes) in zip(args.opt, loaded):
            for note in notes:
                warn(f"{opt.name}: {note}")
            entry = {"options": str(path), "name": opt.name, "type": opt.method["type"], "notes": notes}
            result["methods"].append(entry)
            try:
                torch.manual_seed(opt.seed)
                method = build_method(opt)
            except cli.USER_ERRORS as err:
                entry["error"] = cli.one_line(err)
                warn(f"{opt.name}: cannot build the method: {entry['error']}")
                progress.update(len(args.sizes) * len(modes) * len(precisions))        # its measurements: none
                continue
            entry["parameters"] = count_parameters(method)
            entry.update(scale=method.scale, noise_network=noise_network(method, card=card_of(opt)),
                         tiles_internally=method.tiles_internally, sample_steps=configured_steps(method))
            del method
            overlap = args.overlap if args.overlap is not None else opt.tile.overlap
            entry["measurements"] = []
            for size in args.sizes:
                for mode in modes:
                    for k, precision in enumerate(precisions):
                        spec = {"opt": _for_mode(opt, mode), "device": str(device), "size": size, "mode": mode,
                                "tile": args.tile, "overlap": overlap, "precision": precision, "warmup": args.warmup,
                                "repeats": args.repeats, "count_macs": k == 0, "threads": args.threads}
                        row = run_measurement(spec, args.timeout, args.memory_limit)
                        entry["measurements"].append(row)
                        progress.write(f"{PROG}: {opt.name} {size} {mode} {precision}: {row['status']}"
                                       + (f", {row['seconds']:.3f} s" if row["status"] == "ok"
                                          else f" ({row.get('error')})"))
                        progress.update()
        progress.close()
    out_dir = Path(args.output) if args.output else Path(results_root) / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "efficiency.json", json.dumps(result, indent=2))
    write_text(out_dir / "efficiency.md", efficiency_markdown(result))
    print(efficiency_table(result))
    print(f"{PROG}: wrote {out_dir / 'efficiency.json'} and {out_dir / 'efficiency.md'}", file=sys.stderr)
    return 0


def _for_mode(opt: Options, mode: str) -> dict:
    """The options for ``mode`` as plain data (they travel to the measuring process as JSON): whole images
    without a method's own tiling (OSEDiff's ``method.tiling``)."""
    plain = opt.to_dict()
    if mode == "whole" and opt.method.get("tiling") is not None:
        plain["method"]["tiling"] = None
    return plain


def _short(text: str, width: int = 90) -> str:
    """The table's cut of an error (the JSON keeps it whole)."""
    return text if len(text) <= width else text[:width - 3] + "..."


def _efficiency_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    header = ["method", "params (M)", "trainable (M)", "size", "mode", "precision", "s/image", "peak MiB",
              "NFE", "tiles", "GMACs/image", "GMACs/NFE", "status"]
    rows = []
    for m in result["methods"]:
        params = m.get("parameters", {})
        millions = [f"{params[k] / 1e6:.3f}" if k in params else "-" for k in ("total", "trainable")]
        if "error" in m:
            rows.append([m["name"], *["-"] * 11, f"error: {_short(m['error'])}"])
            continue
        for r in m["measurements"]:
            ok = r["status"] == "ok"
            giga = [f"{r[k] / 1e9:.3f}" if r.get(k) is not None else "-" for k in ("macs", "macs_per_nfe")]
            rows.append([m["name"], *millions, str(r["size"]), r["mode"], r["precision"],
                         f"{r['seconds']:.4f}" if ok else "-", f"{r['peak_memory_mib']:.1f}" if ok else "-",
                         _num(r.get("nfe")), _num(r.get("tiles")), *giga,
                         r["status"] if ok else f"{r['status']}: {_short(r.get('error', ''))}"])
    return header, rows


def efficiency_table(result: dict) -> str:
    return format_rows(*_efficiency_rows(result)) + f"\n({result['weights']})"


def efficiency_markdown(result: dict) -> str:
    lines = ["# Efficiency", "", f"Device: {result['device']}, torch {result['torch']}.", "",
             f"- Weights: {result['weights']}.", f"- Size: {result['size']}.", f"- MACs: {result['macs']}.",
             f"- Memory: {result['memory']}.",
             (f"- Latency: median of {result['repeats']} restoration(s) after {result['warmup']} warm-up "
              "restoration(s)."), ""]
    for m in result["methods"]:
        if "parameters" in m:
            nets = ", ".join(f"{k} {v['total']:,} ({v['trainable']:,} trainable)"
                             for k, v in m["parameters"]["networks"].items())
            lines.append(f"- {m['name']} ({m['type']}): parameters {nets}")
        for note in m.get("notes", []):
            lines.append(f"- {m['name']}: {note}")
    lines += ["", format_rows(*_efficiency_rows(result), markdown=True), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0],
                                     epilog="docs/bench.md: what each sub-command measures, its options and its outputs.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{steps,efficiency}")
    steps = sub.add_parser("steps", help="quality vs NFE vs latency of the samplers")
    steps.add_argument("-opt", "--opt", nargs="+", required=True, help="YAML test options file(s)")
    steps.add_argument("--steps", type=int, nargs="+", default=[100, 50, 20, 10, 5])
    steps.add_argument("--samplers", nargs="+", default=None, help="default: the options' method.sampler")
    steps.add_argument("--warmup", type=int, default=1, help="untimed images before the first point (default 1)")
    eff = sub.add_parser("efficiency", help="parameters, MACs, latency and peak memory per size")
    eff.add_argument("-opt", "--opt", nargs="+", required=True, help="YAML options file(s), one per method")
    eff.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="LQ sides in pixels")
    eff.add_argument("--tile", type=int, default=None, help="also measure tiled restoration with this tile size")
    eff.add_argument("--overlap", type=int, default=None, help="tile overlap (default: the options' tile.overlap)")
    eff.add_argument("--precisions", nargs="+", choices=sorted(_PRECISION), default=None,
                     help="default: fp32 and bf16 on a GPU, fp32 on a CPU")
    eff.add_argument("--repeats", type=int, default=1, help="timed restorations per measurement (median)")
    eff.add_argument("--warmup", type=int, default=1, help="untimed restorations before timing")
    eff.add_argument("--timeout", type=float, default=None, help="seconds per measurement before 'timed out'")
    eff.add_argument("--memory-limit", type=float, default=None, metavar="MIB",
                     help="address-space limit of each measuring process (CPU: a size over it is 'out of memory')")
    for p in (steps, eff):
        p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY.PATH=VALUE")
        p.add_argument("--output", default=None, help="output folder (default: <path.results_root>/bench)")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: as test.py)")
        p.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's choice)")
    child = sub.add_parser("_measure")
    child.add_argument("spec")
    args = parser.parse_args(argv)
    if args.command == "_measure":
        return _measure_child(args.spec)
    body = steps_command if args.command == "steps" else efficiency_command
    return cli.run(PROG, lambda: body(args))


if __name__ == "__main__":
    sys.exit(main())
