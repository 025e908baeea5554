"""GPU check (issue 26): osir's GPU figures measured in one prepared run of at most ``--budget`` seconds:
OSEDiff's one-step latency and training memory (Wu et al., NeurIPS 2024), the reverse-SDE samplers of IR-SDE
(Luo et al., ICML 2023), Refusion (CVPR-W 2023) and DA-CLIP universal IR (ICLR 2024), Real-ESRGAN's RRDBNet
(Wang et al., ICCVW 2021), fp16 with two optimisers and FSDP.

    python benchmarks/gpu_check.py [--output DIR] [--budget 480] [--only STAGE[,STAGE...]]
    python benchmarks/gpu_check.py --dry-run --output /tmp/gpu_check     # CPU, tiny components (CI)

Everything is built on the machine, nothing is downloaded: Stable Diffusion 2.1-base's architecture with
random weights from the configs in ``tests/fixtures/checkpoints/sd21_base_configs.json``
(``osir.methods.osediff.tiny.build_random_sd``), a LoRA file in the release's ``osediff.pkl`` layout (exported
by osir's OSEDiff, ``export_release``, with random LoRA weights), random LPIPS-VGG files in pyiqa's and
torchvision's layouts, and the networks osir's options files give for IR-SDE, Refusion, DA-CLIP universal IR
and RRDBNet x4plus (``options/test/irsde.yml``, ``options/refusion.yml``,
``options/test/daclip_uir.yml``, ``options/realesrnet.yml``; weight files they name that are missing are
replaced by random initial weights through ``osir.bench.efficiency_options``, which says so in each
stage's notes).  Methods are built as ``osir/test.py`` builds them (``load_options``, ``build_method``,
``setup``, ``prepare_inference``) and restore through ``osir.inference.restore_image`` under
``osir.engine.validation.evaluation_mode``; training steps run on an ``osir.engine.trainer.Trainer``.

Stages (``--only`` names; ``setup`` runs first whenever an ``osediff_*`` stage is selected):

* ``setup``: the SD 2.1-base-architecture folder, the release-layout ``osediff.pkl``, the LPIPS files.
* ``osediff_infer``: OSEDiff x4 to 512 x 512 (LQ 128 x 128), whole image, fp32 / bf16 / fp16, LoRA
  unmerged and merged (``method.merge_lora``: the same built method timed before and after
  ``prepare_inference``, with the largest and the mean output difference); seconds per image
  (``restore_image``: PIL-like upsampling, prompt, encode, UNet, decode, colour correction), its split
  (``encode_prompts`` / ``upscale`` + ``encode`` / ``one_step`` / ``decode``, timed apart) and the peak memory.
* ``osediff_compile``: bf16, merged LoRA, eager against ``torch.compile`` (``nn.Module.compile`` in place,
  inductor, default mode) of the UNet and the VAE encoder and decoder; the first call's wall time is
  reported as ``compile_s``, the steady latency as the row's seconds.  Target: <= 0.05 s per 512 x 512
  image on an H100 (issue 26).
* ``osediff_tiled``: bf16, merged, 1024 x 1024 and 2048 x 2048 outputs with the options' ``method.tiling``;
  seconds, peak memory, UNet calls (latent tiles).
* ``osediff_train``: one training step (``method.training_step`` on a Trainer built from
  ``options/osediff.yml``: L2 + LPIPS + VSD, two AdamW optimisers, bf16) at 512 x 512, batch 1 and 4,
  gradient checkpointing on and off: seconds per step and peak memory.  Training prompts are the empty
  prompt (RAM's weights cannot be built without its file).  Target: <= 14 GB at batch 1 with checkpointing.
* ``irsde``, ``refusion``, ``daclip_uir``: seconds per 256 x 256 image with the options' sampler at 100
  steps and with the posterior sampler at a few steps (``FEW_STEPS``), fp32 and bf16; the NFE is counted
  (``osir.bench.CallCounter``), not assumed.
* ``rrdbnet``: RRDBNet x4plus (23 RRDB, 64 features, growth 32) on a 512 x 512 LQ (2048 x 2048 output),
  whole image, fp16 (and fp32 for reference).
* ``two_optimizers``: two fp16 training iterations (``Trainer.train``) of a small two-optimiser method
  (Real-ESRGAN: the SR demo's RRDBNet and the U-Net discriminator of ``options/realesrgan.yml``, gradient
  clipping, one GradScaler per optimiser on a GPU), checked for finite losses.
* ``fsdp``: two training iterations of the IR-SDE demo under FSDP (``options/accelerate/fsdp.yaml`` with one
  process and a small wrap size) in a process of its own that is rank 0 of a torch.distributed world of
  size 1 (the environment torchrun sets; nccl on a GPU, gloo on the CPU), checked for finite losses and
  for FSDP being in effect.

Each stage gets its own share of the remaining time (``WEIGHTS``, recomputed as stages end, so time a
stage leaves unused goes to the later ones); a stage that runs past its share is stopped (its worker
process is killed and a new one continues with the next stage) and one that fails records its error; the
run goes on either way.  Rows that finished before a stage was stopped are kept.  Peak memory: on a GPU
``torch.cuda.max_memory_allocated`` since the case began, in GB (1e9 bytes); on the CPU (dry run) the
worker process's peak resident set (``ru_maxrss``), which only grows.

Writes ``<output>/gpu_check.json`` (device, torch/CUDA versions, date, every stage's rows, the targets,
the markdown table) and ``<output>/gpu_check.log`` (the worker's output) and prints one markdown table.
``--dry-run`` runs every stage on the CPU (one thread) with tiny components and sizes (sides / 16), about
45 CPU-seconds; its numbers only show that the stages run.  Exit code 0 when every stage ran ok, 1 otherwise,
2 for bad arguments.

Hand-written here (no library does it): the stage runner (a worker process the parent watches and
replaces when a stage overruns or the process dies), the timing loops (synchronised, median) and the
table.  Nothing of the original repositories is used.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROG = "gpu_check"
SD_CONFIGS = ROOT / "tests" / "fixtures" / "checkpoints" / "sd21_base_configs.json"

#: stage -> weight of its share of the time (a share of the time left when it starts, among the stages left)
WEIGHTS = {"setup": 60, "osediff_infer": 70, "osediff_compile": 130, "osediff_train": 70, "osediff_tiled": 30,
           "irsde": 20, "refusion": 25, "daclip_uir": 30, "rrdbnet": 15, "two_optimizers": 15, "fsdp": 25}
STAGES = list(WEIGHTS)
NEEDS_SETUP = {"osediff_infer", "osediff_compile", "osediff_train", "osediff_tiled"}
#: the few-step setting of each SDE method: the posterior sampler at the NFE the README's steps table (the
#: demos, PSNR against NFE) favours: IR-SDE 10 (0.08 dB under 20 steps), Refusion 5 (its best); DA-CLIP-IR
#: as IR-SDE (the same sampler; its README table loses 0.2 dB from 100 to 10 steps)
FEW_STEPS = {"irsde": 10, "refusion": 5, "daclip_uir": 10}
#: issue 26's targets: (stage, case, value key, limit, unit, card it is stated for)
TARGETS = [("osediff_compile", "512² bf16 merged, compiled UNet+VAE", "seconds", 0.05, "s", "H100"),
           ("osediff_train", "512² b1 bf16 grad ckpt", "peak_gb", 14.0, "GB", None)]
#: a stage with less than this many seconds of budget is skipped
MIN_STAGE_S = 3.0


def share(stage: str, remaining: list[str], seconds_left: float) -> float:
    """The budget of ``stage`` when it starts: its weight's share of the time left among ``remaining``."""
    return seconds_left * WEIGHTS[stage] / sum(WEIGHTS[s] for s in remaining)


# ============================================================================ the worker (imports torch)
@dataclass
class Plan:
    """Sizes and repeats of a run: the GPU's, or the dry run's tiny ones (sides / 16)."""
    dry: bool
    div: int = 1
    warmup: int = 2
    repeats: int = 5
    tiled_repeats: int = 3
    sde_repeats: int = 1           # a 100-step restoration already averages over 100 network calls
    train_repeats: int = 3

    @classmethod
    def make(cls, dry: bool) -> "Plan":
        return cls(dry, div=16, warmup=0, repeats=1, tiled_repeats=1, sde_repeats=1, train_repeats=1) if dry \
            else cls(False)

    def px(self, side: int) -> int:
        return side // self.div


@dataclass
class Context:
    plan: Plan
    work: Path
    events: Path
    device: object = None
    stage: str = ""
    budget: float = 0.0
    started: float = 0.0
    rows: list = field(default_factory=list)

    # -- events -------------------------------------------------------------------------------
    def emit(self, **event) -> None:
        event["t"] = time.time()
        with open(self.events, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
            f.flush()

    def elapsed(self) -> float:
        return time.time() - self.started

    def over(self, fraction: float) -> bool:
        """More than ``fraction`` of the stage's budget used (timing loops stop repeating)."""
        return self.elapsed() > fraction * self.budget

    # -- device helpers -----------------------------------------------------------------------
    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        import torch
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        import torch
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float:
        import torch
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 1e9
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9       # KiB on Linux

    def reserved_gb(self) -> float | None:
        import torch
        return torch.cuda.max_memory_reserved(self.device) / 1e9 if self.cuda else None

    def cleanup(self) -> None:
        import gc
        import torch
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def timed(self, fn, warmup: int | None = None, repeats: int | None = None):
        """(median seconds, all timed runs, the last output) of ``fn()``, synchronised; after ``warmup``
        untimed calls, at most ``repeats`` timed ones (fewer once 70 % of the stage's budget is used)."""
        warmup = self.plan.warmup if warmup is None else warmup
        repeats = self.plan.repeats if repeats is None else repeats
        out = None
        for _ in range(warmup):
            out = fn()
        self.sync()
        times = []
        for i in range(max(1, repeats)):
            if i and self.over(0.7):
                break
            start = time.perf_counter()
            out = fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times), times, out

    # -- rows ---------------------------------------------------------------------------------
    def case(self, name: str, fn) -> dict:
        """Run one measurement ``fn() -> {seconds, peak_gb, details, notes}``; its row (status ok, or failed
        with a one-line error; a non-finite number fails it) is emitted at once, so it survives a stop."""
        import torch
        row = {"stage": self.stage, "case": name, "status": "ok"}
        try:
            self.reset_peak()
            row.update(fn())
            bad = [k for k, v in _numbers(row) if not math.isfinite(v)]
            if bad:
                row.update(status="failed", error=f"non-finite {', '.join(bad)}")
            elif (row.get("details") or {}).get("nonfinite_output", 0) > 0:
                row.update(status="failed", error="the restored image has non-finite values")
        except Exception as err:          # noqa: BLE001  (one failing case is a row of the table)
            import traceback
            traceback.print_exc()
            row.update(status="failed", error=_one_line(err))
            if isinstance(err, torch.OutOfMemoryError):
                row["error"] = "out of memory: " + row["error"]
            if _fatal(err):
                row["fatal"] = True
        self.rows.append(row)
        self.emit(event="case", stage=self.stage, row=row)
        print(f"[{self.stage}] {name}: {row['status']} {row.get('seconds', '')} {row.get('error', '')}", flush=True)
        if row.get("fatal"):
            raise RuntimeError(f"{name}: {row['error']}")
        self.cleanup()
        return row

    def random_batch(self, side: int, batch: int = 1, seed: int = 0) -> dict:
        """A dataset-like batch of random LQ images (content does not change timing or memory)."""
        import torch
        lq = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed)).to(self.device)
        names = [f"random{i}" for i in range(batch)]
        return {"lq": lq, "lq_path": [f"{n}.png" for n in names], "name": names}

    # -- building methods as test.py does -------------------------------------------------------
    def options(self, file: str, overrides: list[str]) -> tuple[dict, list[str]]:
        """The options file with ``overrides``; weight files it names that are missing are replaced by
        random initial weights (``osir.bench.efficiency_options``, which lists what it replaced)."""
        from osir.bench import efficiency_options
        opt, notes = efficiency_options(ROOT / file, overrides, self.work / "scratch")
        return opt, notes

    def build(self, opt: dict, precision: str):
        """``build_method`` + ``setup`` + networks on the device, as osir/test.py does (no
        ``prepare_inference`` yet: the caller decides when)."""
        import torch
        from osir.engine.trainer import build_method
        torch.manual_seed(opt.seed)
        method = build_method(opt)
        method.setup(self.device, {"fp32": "no"}.get(precision, precision))
        for net in method.networks.values():
            net.to(self.device)
        return method

    def precision_note(self, precision: str) -> list[str]:
        if precision == "fp16" and not self.cuda:
            return ["fp16 autocast does not run on the CPU: this row runs in fp32"]
        return []

    # -- OSEDiff --------------------------------------------------------------------------------
    @property
    def sd(self) -> Path:
        return self.work / "sd"

    @property
    def pkl(self) -> Path:
        return self.work / "osediff.pkl"

    def osediff_options(self, file: str, overrides: list[str], train: bool = False, after_setup: bool = True):
        if after_setup and not (self.work / "setup.done").is_file():
            raise RuntimeError("setup did not finish: no SD folder / osediff.pkl to build OSEDiff from")
        import inspect
        from osir.core.registry import METHODS
        extra, notes = [], []
        accepted = inspect.signature(METHODS.get("OSEDiff", "method.type")).parameters   # options of this osir
        if "train_prompt" in accepted:
            extra.append("method.train_prompt=null")      # RAM's tagger needs its weights file
            if train:
                notes.append("training prompts: method.prompt (empty); RAM's tags of the GT (the release's training "
                             "prompts) are not computed")
        if "process_size" in accepted and self.plan.dry:  # the release enlarges LQs to 512 / scale: tiny here
            extra.append(f"method.process_size={self.plan.px(512)}")
        opt, replaced = self.options(file, [f"method.sd_path={self.sd}", "method.build_tiny=false", *extra, *overrides])
        if train:
            opt.method["lpips_weights_path"] = str(self.work / "lpips_vgg.pth")
            opt.method["lpips_vgg_path"] = str(self.work / "vgg16.pth")
            notes.append("LPIPS-VGG with random weights (the loss network's cost, not its values)")
        return opt, replaced + notes

    def dry_tiling(self, tiling: dict | None) -> dict | None:
        """The options' ``method.tiling`` scaled to the dry run's tiny model (every size / 8, multiples of 4)."""
        if tiling is None or not self.plan.dry:
            return tiling
        return {k: max(4, v // 8 // 4 * 4) if isinstance(v, int) and not isinstance(v, bool) else v
                for k, v in tiling.items()}


def _numbers(row: dict, prefix: str = ""):
    for k, v in row.items():
        if isinstance(v, dict):
            yield from _numbers(v, f"{prefix}{k}.")
        elif isinstance(v, float):
            yield f"{prefix}{k}", v


def _nonfinite(out) -> float:
    """The fraction of non-finite values in a restored image (a failed precision shows up here)."""
    import torch
    return float((~torch.isfinite(out.float())).float().mean())


def _one_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(err).__name__}: {text}"[:300]


def _fatal(err: BaseException) -> bool:
    """A CUDA error that leaves the context unusable: the worker stops and a fresh one continues."""
    text = str(err)
    return "CUDA error" in text or "illegal memory access" in text or type(err).__name__ == "AcceleratorError"


def _reset_accelerate() -> None:
    """accelerate keeps one process-wide state (mixed precision, distributed type): reset it between
    training stages, as tests/conftest.py does between tests."""
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# ---------------------------------------------------------------------------- stages
def stage_setup(ctx: Context) -> None:
    import torch
    from osir.methods.osediff.tiny import build_random_sd, build_tiny_sd
    (ctx.work / "setup.done").unlink(missing_ok=True)
    if ctx.sd.exists():
        shutil.rmtree(ctx.sd)

    def sd_folder():
        start = time.perf_counter()
        if ctx.plan.dry:
            build_tiny_sd(ctx.sd)
            what = "tiny SD-architecture components (osir.methods.osediff.tiny.build_tiny_sd)"
        else:
            what = f"SD 2.1-base architecture, random weights ({SD_CONFIGS.relative_to(ROOT)})"
            try:
                with torch.device(ctx.device):     # random initialisation on the GPU is faster
                    build_random_sd(ctx.sd, SD_CONFIGS)
                what += ", initialised on the GPU"
            except Exception as err:            # noqa: BLE001  (then on the CPU, as the function is written)
                print(f"building on the GPU failed ({_one_line(err)}): building on the CPU", flush=True)
                shutil.rmtree(ctx.sd, ignore_errors=True)
                build_random_sd(ctx.sd, SD_CONFIGS)
                what += f", initialised on the CPU (on the GPU: {_one_line(err)})"
        seconds = time.perf_counter() - start
        sizes = {part: sum(f.stat().st_size for f in (ctx.sd / part).rglob("*") if f.is_file()) / 1e9
                 for part in ("unet", "vae", "text_encoder")}
        return {"seconds": seconds, "peak_gb": ctx.peak_gb(), "details": {f"{k}_gb": v for k, v in sizes.items()},
                "notes": [what]}
    ctx.case("SD folder", sd_folder)

    def lora_file():
        from osir.engine.trainer import build_method
        start = time.perf_counter()
        opt, notes = ctx.osediff_options("options/test/osediff.yml", ["method.release_path=null",
                                                                       "method.merge_lora=false"], after_setup=False)
        torch.manual_seed(0)
        method = build_method(opt)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():           # peft starts LoRA B at zero: random B so that merging changes weights
            for net in (method.networks["unet"], method.networks["vae"]):
                for name, p in net.named_parameters():
                    if "lora_B" in name:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        method.export_release(ctx.pkl)
        return {"seconds": time.perf_counter() - start, "peak_gb": ctx.peak_gb(),
                "details": {"pkl_mb": ctx.pkl.stat().st_size / 1e6},
                "notes": ["osediff.pkl in the release layout (OSEDiff.export_release), random LoRA"] + notes}
    ctx.case("osediff.pkl (release layout)", lora_file)

    def lpips_files():
        import torchvision
        start = time.perf_counter()
        g = torch.Generator().manual_seed(0)
        with torch.device("meta"):          # the layout only: torchvision's own initialisation takes seconds
            layout = torchvision.models.vgg16().state_dict()
        torch.save({k: torch.randn(v.shape, generator=g, dtype=torch.float16) * 0.02 for k, v in layout.items()},
                   ctx.work / "vgg16.pth")
        # pyiqa's LPIPS file: the five 1x1 linear layers over VGG's feature channels (non-negative weights)
        lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) * 0.1 for i, c in enumerate((64, 128, 256, 512, 512))}
        torch.save(lins, ctx.work / "lpips_vgg.pth")
        return {"seconds": time.perf_counter() - start, "peak_gb": ctx.peak_gb(),
                "notes": ["random VGG16 (torchvision layout) and LPIPS linear layers (pyiqa layout)"]}
    ctx.case("LPIPS-VGG files", lpips_files)
    if all(r["status"] == "ok" for r in ctx.rows):
        (ctx.work / "setup.done").write_text("ok")


def _osediff_split(ctx: Context, method, batch: dict) -> dict:
    """Prompt, upscale + VAE encode, UNet, VAE decode of one restoration, each timed on its own."""
    prompts = [""] * batch["lq"].shape[0]
    split = {}
    split["prompt_s"], _, text = ctx.timed(lambda: method.encode_prompts(prompts))
    split["encode_s"], _, z_lq = ctx.timed(lambda: method.encode(method.upscale(batch["lq"])))
    split["unet_s"], _, z = ctx.timed(lambda: method.one_step(z_lq, text))
    split["decode_s"], _, _ = ctx.timed(lambda: method.decode(z))
    return split


def _osediff_measure(ctx: Context, method, batch: dict, keep: dict | None = None, compare: dict | None = None,
                     split: bool = True, repeats: int | None = None) -> dict:
    from osir.inference import restore_image
    seconds, runs, out = ctx.timed(lambda: restore_image(method, batch), repeats=repeats)
    result = {"seconds": seconds, "peak_gb": ctx.peak_gb(), "details": {"runs": len(runs),
                                                                         "nonfinite_output": _nonfinite(out)}}
    if ctx.cuda:
        result["details"]["reserved_gb"] = ctx.reserved_gb()
    if keep is not None:
        keep["out"] = out.float()
    if compare is not None and "out" in compare:
        diff = (out.float() - compare["out"]).abs()          # outputs in [0, 1] (8-bit levels / 255)
        result["details"].update(vs_unmerged_max=float(diff.max()), vs_unmerged_mean=float(diff.mean()))
    if split:
        result["details"].update(_osediff_split(ctx, method, batch))
    return result


def stage_osediff_infer(ctx: Context) -> None:
    from osir.engine.validation import evaluation_mode
    side = ctx.plan.px(512)
    for precision in ("fp32", "bf16", "fp16"):
        opt, notes = ctx.osediff_options("options/test/osediff.yml", [f"method.release_path={ctx.pkl}",
                                                                       "method.tiling=null", "method.merge_lora=true"])
        method = ctx.build(opt, precision)
        batch = ctx.random_batch(side // method.scale)
        kept = {}
        notes = notes + ctx.precision_note(precision)
        with evaluation_mode(method):
            ctx.case(f"512² {precision}, LoRA unmerged",
                     lambda: {**_osediff_measure(ctx, method, batch, keep=kept), "notes": notes})
            method.prepare_inference()          # merge_lora: fold the generator's LoRA into the base weights
            ctx.case(f"512² {precision} merged",
                     lambda: {**_osediff_measure(ctx, method, batch, compare=kept), "notes": notes})
        method = kept = None          # free the model before the next precision's
        ctx.cleanup()


def stage_osediff_compile(ctx: Context) -> None:
    from osir.engine.validation import evaluation_mode
    from osir.inference import restore_image
    side = ctx.plan.px(512)
    opt, notes = ctx.osediff_options("options/test/osediff.yml", [f"method.release_path={ctx.pkl}",
                                                                   "method.tiling=null", "method.merge_lora=true"])
    method = ctx.build(opt, "bf16")
    method.prepare_inference()
    batch = ctx.random_batch(side // method.scale)
    # the dry run traces with dynamo but skips inductor's code generation (minutes on 2 CPU cores)
    kwargs = {"backend": "eager"} if ctx.plan.dry else {}
    mode = "torch.compile backend eager (dry run)" if ctx.plan.dry else "torch.compile (inductor, default mode)"

    def compiled():
        vae = method.net("vae").vae
        start = time.perf_counter()
        for module in (method.net("unet"), vae.encoder, vae.decoder):
            module.compile(**kwargs)              # in place: the method keeps calling the same modules
        restore_image(method, batch)              # the first call compiles
        ctx.sync()
        compile_s = time.perf_counter() - start
        result = _osediff_measure(ctx, method, batch, split=False)
        result["details"]["compile_s"] = compile_s
        return {**result, "notes": notes + [mode]}
    with evaluation_mode(method):
        ctx.case("512² bf16 merged, eager",
                 lambda: {**_osediff_measure(ctx, method, batch, split=False), "notes": notes})
        ctx.case("512² bf16 merged, compiled UNet+VAE", compiled)


def stage_osediff_tiled(ctx: Context) -> None:
    from osir.bench import CallCounter
    from osir.engine.validation import evaluation_mode
    opt, notes = ctx.osediff_options("options/test/osediff.yml", [f"method.release_path={ctx.pkl}",
                                                                   "method.merge_lora=true"])
    opt.method["tiling"] = ctx.dry_tiling(opt.method.get("tiling"))
    method = ctx.build(opt, "bf16")
    method.prepare_inference()
    notes = notes + [f"method.tiling {opt.method['tiling']}"]
    with evaluation_mode(method):
        for side in (1024, 2048):
            batch = ctx.random_batch(ctx.plan.px(side) // method.scale)

            def run():
                counter = CallCounter(method)
                try:
                    result = _osediff_measure(ctx, counter.counted, batch, split=False,   # restores counted
                                              repeats=ctx.plan.tiled_repeats)
                    result["details"]["unet_calls"] = counter.calls["unet"] / max(1, counter.restores)
                finally:
                    counter.remove()
                return {**result, "notes": notes}
            ctx.case(f"{side}² bf16 merged, tiled", run)


def stage_osediff_train(ctx: Context) -> None:
    import torch
    from osir.engine.trainer import Trainer
    side = ctx.plan.px(512)
    for ckpt in (True, False):
        _reset_accelerate()
        opt, notes = ctx.osediff_options("options/osediff.yml", [
            "method.prompt={type: EmptyPrompt}", f"method.gradient_checkpointing={str(ckpt).lower()}",
            "train.mixed_precision=bf16", f"train.force_cpu={str(ctx.plan.dry).lower()}",
            f"datasets.train={{type: SyntheticPairDataset, io_backend: skimage, dataroot_gt: astronaut, "
            f"gt_size: {side}, batch_size: 1, num_workers: 0}}", "datasets.val=null",
            f"path.experiments_root={ctx.work / 'experiments'}", f"path.tb_logger_root={ctx.work / 'tb'}",
            "logger.tensorboard=false", "logger.progress_bar=false", f"name=gpu_check_osediff_{int(ckpt)}"], train=True)
        trainer = Trainer(opt)
        method = trainer.method
        tag = "grad ckpt" if ckpt else "no ckpt"
        for b in (1, 4):
            def run():
                torch.manual_seed(0)
                g = torch.Generator().manual_seed(b)
                gt = torch.rand(b, 3, side, side, generator=g).to(ctx.device)
                lq = torch.rand(b, 3, side // 4, side // 4, generator=g).to(ctx.device)
                names = [f"r{i}" for i in range(b)]
                batch = {"gt": gt, "lq": lq, "lq_path": [f"{n}.png" for n in names], "name": names}
                losses = {}

                def step():
                    with trainer.accelerator.accumulate(*[method.networks[n] for n in trainer.trained]):
                        losses.update(method.training_step(batch))
                seconds, runs, _ = ctx.timed(step, warmup=min(1, ctx.plan.warmup), repeats=ctx.plan.train_repeats)
                details = {"runs": len(runs), **{k: float(v) for k, v in losses.items()}}
                if ctx.cuda:
                    details["reserved_gb"] = ctx.reserved_gb()
                return {"seconds": seconds, "peak_gb": ctx.peak_gb(), "details": details,
                        "notes": notes + ["seconds per training_step (networks, losses, both optimisers)"]}
            ctx.case(f"512² b{b} bf16 {tag}", run)
        trainer = method = None
        ctx.cleanup()


#: the SDE methods: options file and the dry run's tiny networks
SDE = {
    "irsde": ("options/test/irsde.yml",
              ["method.network={type: ConditionalUNet, in_nc: 3, out_nc: 3, nf: 8, depth: 2}"]),
    "refusion": ("options/refusion.yml", ["method.network={type: ConditionalNAFNet, img_channel: 3, width: 8, "
                                          "enc_blk_nums: [1, 1], middle_blk_num: 1, dec_blk_nums: [1, 1]}"]),
    "daclip_uir": ("options/test/daclip_uir.yml", [
        "method.daclip_path=null",
        "method.clip_config={embed_dim: 16, vision_cfg: {image_size: 32, patch_size: 8, width: 32, layers: 2, "
        "head_width: 16}, text_cfg: {context_length: 16, vocab_size: 49408, width: 16, heads: 2, layers: 1}}",
        "method.network={type: DACLIPUNet, in_nc: 3, out_nc: 3, nf: 16, ch_mult: [1, 2], context_dim: 16, "
        "use_degra_context: true, use_image_context: true}"]),
}


def _sde_stage(ctx: Context, key: str) -> None:
    from osir.bench import CallCounter, noise_network
    from osir.engine.validation import evaluation_mode
    from osir.inference import restore_image
    import torch
    file, dry_overrides = SDE[key]
    side = ctx.plan.px(256)
    settings = [("100 steps, options' sampler", ["method.sample_steps=100"]),
                (f"{FEW_STEPS[key]} posterior steps",
                 ["method.sampler=posterior", f"method.sample_steps={FEW_STEPS[key]}"])]
    for label, steps in settings:
        for precision in ("fp32", "bf16"):
            def run():
                opt, notes = ctx.options(file, (dry_overrides if ctx.plan.dry else []) + steps)
                method = ctx.build(opt, precision)
                method.prepare_inference()
                batch = ctx.random_batch(side)
                counter = CallCounter(method)
                generator = torch.Generator(device=ctx.device)

                def restore():
                    generator.manual_seed(0)
                    return restore_image(counter.counted, batch, generator=generator)   # restores counted
                try:
                    with evaluation_mode(method):
                        seconds, runs, out = ctx.timed(restore, warmup=min(1, ctx.plan.warmup),
                                                       repeats=ctx.plan.sde_repeats)
                    noise = noise_network(method, counter)
                    nfe = counter.samples[noise] / max(1, counter.restore_samples)
                finally:
                    counter.remove()
                sampler = opt.method.get("sampler")
                return {"seconds": seconds, "peak_gb": ctx.peak_gb(),
                        "details": {"nfe": float(nfe), "s_per_nfe": seconds / nfe if nfe else float("nan"),
                                    "runs": len(runs), "nonfinite_output": _nonfinite(out)},
                        "notes": notes + [f"sampler {sampler}"] + ctx.precision_note(precision)}
            ctx.case(f"256² {label}, {precision}", run)


def stage_irsde(ctx):
    _sde_stage(ctx, "irsde")


def stage_refusion(ctx):
    _sde_stage(ctx, "refusion")


def stage_daclip_uir(ctx):
    _sde_stage(ctx, "daclip_uir")


def stage_rrdbnet(ctx: Context) -> None:
    from osir.engine.validation import evaluation_mode
    from osir.inference import restore_image
    side = ctx.plan.px(512)
    dry = ["method.network={type: RRDBNet, num_in_ch: 3, num_out_ch: 3, num_feat: 8, num_block: 1, "
           "num_grow_ch: 8, scale: 4}"] if ctx.plan.dry else []
    for precision in ("fp16", "fp32"):
        def run():
            opt, notes = ctx.options("options/realesrnet.yml", dry)
            method = ctx.build(opt, precision)
            method.prepare_inference()
            batch = ctx.random_batch(side)
            with evaluation_mode(method):
                seconds, runs, out = ctx.timed(lambda: restore_image(method, batch))
            net = opt.method["network"]
            return {"seconds": seconds, "peak_gb": ctx.peak_gb(),
                    "details": {"output_side": float(out.shape[-1]), "runs": len(runs),
                                "nonfinite_output": _nonfinite(out)},
                    "notes": notes + [f"RRDBNet {net['num_block']} blocks, {net['num_feat']} features, growth "
                                      f"{net['num_grow_ch']}; whole image"] + ctx.precision_note(precision)}
        ctx.case(f"x4plus 512² -> 2048², {precision}", run)


def _finite_losses(losses: dict) -> dict:
    values = {k: float(v) for k, v in losses.items()}
    if not values:
        raise RuntimeError("the training run logged no losses")
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite loss(es) {bad}")
    return values


def stage_two_optimizers(ctx: Context) -> None:
    import torch
    from osir.engine.trainer import Trainer
    from osir.core.options import load_options

    def run():
        _reset_accelerate()
        precision = "fp16"
        overrides = [
            "method.gan_weight=0.1",
            "method.discriminator={type: UNetDiscriminatorSN, num_in_ch: 3, num_feat: "
            f"{8 if ctx.plan.dry else 64}, skip_connection: true}}",
            "train.optimizers={g: {type: Adam, lr: 1.0e-4, betas: [0.9, 0.99]}, d: {type: Adam, lr: 1.0e-4, "
            "betas: [0.9, 0.99]}}",
            f"train.mixed_precision={precision}", "train.grad_clip=1.0", "train.total_iter=2", "train.ema={}",
            f"train.force_cpu={str(ctx.plan.dry).lower()}", "datasets.val=null", "datasets.train.num_workers=0",
            f"datasets.train.gt_size={32 if ctx.plan.dry else 96}", "datasets.train.batch_size=4",
            "val.freq=1000000", "logger.print_freq=1", "logger.checkpoint_freq=1000000", "logger.tensorboard=false",
            "logger.progress_bar=false", f"path.experiments_root={ctx.work / 'experiments'}", "name=gpu_check_two_opt"]
        opt = load_options(ROOT / "options" / "demo_sr.yml", overrides)
        torch.manual_seed(0)
        trainer = Trainer(opt)
        start = time.perf_counter()
        result = trainer.train()
        ctx.sync()
        seconds = (time.perf_counter() - start) / opt.train.total_iter
        losses = _finite_losses(result["train"])
        scalers = getattr(trainer.method, "scalers", {}) or {}
        if ctx.cuda and len(scalers) != 2:
            raise RuntimeError(f"fp16 with 2 optimisers should give each its own GradScaler; found {len(scalers)}")
        details = {**losses, "optimizers": float(len(trainer.optimizers)), "grad_scalers": float(len(scalers))}
        for name, scaler in scalers.items():
            details[f"scale_{name}"] = float(scaler.get_scale())
        notes = ["Real-ESRGAN: the SR demo's RRDBNet + options/realesrgan.yml's UNetDiscriminatorSN, optimisers g "
                 "and d, grad clip 1.0",
                 f"mixed precision {trainer.accelerator.mixed_precision} on {trainer.accelerator.device}",
                 "seconds: Trainer.train() wall time / iterations (incl. data and the final checkpoint)"]
        return {"seconds": seconds, "peak_gb": ctx.peak_gb(), "details": details, "notes": notes}
    ctx.case("2 iterations, fp16, 2 optimisers", run)


FSDP_CHILD = "--fsdp-child"


def stage_fsdp(ctx: Context) -> None:
    import socket
    import yaml

    def run():
        config = yaml.safe_load((ROOT / "options" / "accelerate" / "fsdp.yaml").read_text())
        config["num_processes"] = 1
        config["fsdp_config"]["fsdp_min_num_params"] = 10_000     # the demo network is small: wrap its blocks
        fsdp_file = ctx.work / "fsdp_1proc.yaml"
        fsdp_file.write_text(yaml.safe_dump(config))
        result_file = ctx.work / "fsdp_result.json"
        result_file.unlink(missing_ok=True)
        overrides = [f"train.accelerate_config={fsdp_file}", "train.ema={}", "train.total_iter=2",
                     "train.mixed_precision=bf16", "datasets.val=null", "datasets.train.num_workers=0",
                     f"datasets.train.gt_size={32 if ctx.plan.dry else 128}", "datasets.train.batch_size=4",
                     "val.freq=1000000", "logger.print_freq=1", "logger.checkpoint_freq=1000000",
                     "logger.tensorboard=false", "logger.progress_bar=false",
                     f"path.experiments_root={ctx.work / 'experiments'}", "name=gpu_check_fsdp"]
        if ctx.plan.dry:
            overrides.append("method.network={type: ConditionalUNet, in_nc: 3, out_nc: 3, nf: 8, depth: 2}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        # one process of a world of size 1, rendezvous through the environment (what torchrun would set)
        env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        if not ctx.cuda:
            env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
        start = time.perf_counter()
        left = max(5.0, ctx.budget - ctx.elapsed() - 2)
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), FSDP_CHILD, str(result_file), *overrides],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=left)
        seconds = time.perf_counter() - start
        sys.stdout.write(done.stdout[-4000:])
        sys.stderr.write(done.stderr[-8000:])
        if done.returncode != 0 or not result_file.is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"the FSDP process exited {done.returncode}: {lines[-1] if lines else 'no output'}")
        child = json.loads(result_file.read_text())
        notes = []
        if ctx.cuda and not child["sharded"]:
            raise RuntimeError(f"FSDP was not in effect (distributed type {child['distributed_type']})")
        if not ctx.cuda:
            # accelerate turns an FSDP config into FSDP only for accelerator back-ends (accelerate/state.py):
            # on the CPU the same launch trains as MULTI_CPU, which is what the dry run can check
            notes.append("dry run: accelerate selects FSDP only on accelerators; the CPU launch trains as "
                         f"{child['distributed_type']}")
        losses = _finite_losses(child["losses"])
        return {"seconds": child["train_s"] / 2, "peak_gb": child["peak_gb"],
                "details": {**losses, "world_size": float(child["world_size"]), "launch_s": seconds,
                            "distributed_type": child["distributed_type"], "backend": child["backend"]},
                "notes": [f"{child['distributed_type']} on {child['device']}, backend {child['backend']}, "
                          f"{child['mixed_precision']}; IR-SDE demo network; seconds: train() / iterations"] + notes}
    ctx.case("IR-SDE demo, FSDP, 1 process, 2 iterations", run)


def fsdp_child(result_file: str, overrides: list[str]) -> int:
    """Run as rank 0 of a world of size 1: Trainer(options/demo.yml + overrides).train(), then write
    whether FSDP was in effect, the losses and the peak memory."""
    import torch
    import torch.distributed as dist
    from osir.engine.trainer import Trainer
    from osir.core.options import load_options
    opt = load_options(ROOT / "options" / "demo.yml", overrides)
    trainer = Trainer(opt)
    acc = trainer.accelerator
    if acc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(acc.device)
    start = time.perf_counter()
    result = trainer.train()
    if acc.device.type == "cuda":
        torch.cuda.synchronize(acc.device)
        peak = torch.cuda.max_memory_allocated(acc.device) / 1e9
    else:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    out = {"sharded": bool(trainer.sharded), "distributed_type": acc.distributed_type.value,
           "backend": dist.get_backend() if dist.is_initialized() else None,
           "world_size": dist.get_world_size() if dist.is_initialized() else 1, "device": str(acc.device),
           "mixed_precision": acc.mixed_precision, "losses": result["train"],
           "train_s": time.perf_counter() - start, "peak_gb": peak}
    if acc.is_main_process:
        Path(result_file).write_text(json.dumps(out))
    acc.wait_for_everyone()
    acc.end_training()
    return 0


STAGE_FUNCS = {"setup": stage_setup, "osediff_infer": stage_osediff_infer, "osediff_compile": stage_osediff_compile,
               "osediff_train": stage_osediff_train, "osediff_tiled": stage_osediff_tiled, "irsde": stage_irsde,
               "refusion": stage_refusion, "daclip_uir": stage_daclip_uir, "rrdbnet": stage_rrdbnet,
               "two_optimizers": stage_two_optimizers, "fsdp": stage_fsdp}


def environment(device) -> dict:
    import platform
    import torch
    env = {"device_type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for package in ("diffusers", "transformers", "peft", "accelerate", "osir"):
        try:
            from importlib.metadata import version
            env[package] = version(package)
        except Exception:          # noqa: BLE001
            env[package] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device=torch.cuda.get_device_name(device), gpu_memory_gb=props.total_memory / 1e9,
                   cudnn=torch.backends.cudnn.version(), matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
                   cudnn_tf32=torch.backends.cudnn.allow_tf32, capability=f"{props.major}.{props.minor}")
    else:
        cpu = platform.processor() or platform.machine()
        env.update(device=f"CPU ({cpu}), torch threads: {torch.get_num_threads()}")
    return env


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    import resource
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def worker_main(args) -> int:
    import torch
    plan = Plan.make(args.dry_run)
    ctx = Context(plan, Path(args.work), Path(args.events))
    ctx.device = torch.device("cpu") if args.dry_run else torch.device("cuda")
    if args.dry_run:
        torch.set_num_threads(1)       # tiny networks: more threads only add contention (50x slower on a loaded box)
    ctx.emit(event="env", environment=environment(ctx.device))
    stages = args.stages.split(",")
    for i, name in enumerate(stages):
        budget = share(name, stages[i:], args.deadline - time.time())
        ctx.stage, ctx.budget, ctx.started, ctx.rows = name, budget, time.time(), []
        cpu = _cpu_seconds()
        if budget < MIN_STAGE_S:
            ctx.emit(event="end", stage=name, status="skipped", error=f"no time left ({budget:.1f} s)", seconds=0.0)
            continue
        if name in NEEDS_SETUP and not (ctx.work / "setup.done").is_file():
            ctx.emit(event="end", stage=name, status="skipped", error="setup did not finish", seconds=0.0)
            continue
        ctx.emit(event="start", stage=name, budget=budget)
        print(f"== {name} (budget {budget:.0f} s)", flush=True)
        status, error = "ok", None
        try:
            STAGE_FUNCS[name](ctx)
        except Exception as err:          # noqa: BLE001  (a failing stage is recorded; the run goes on)
            import traceback
            traceback.print_exc()
            status, error = "failed", _one_line(err)
            if _fatal(err):
                ctx.emit(event="end", stage=name, status=status, error=error, seconds=ctx.elapsed(),
                         cpu_s=_cpu_seconds() - cpu)
                return 3                   # the parent continues with a fresh worker
        failed = [r for r in ctx.rows if r["status"] != "ok"]
        if failed and status == "ok":
            status, error = "failed", f"{len(failed)} of {len(ctx.rows)} cases failed: {failed[0]['error']}"
        ctx.emit(event="end", stage=name, status=status, error=error, seconds=ctx.elapsed(),
                 cpu_s=_cpu_seconds() - cpu)
        ctx.cleanup()
    return 0


# ============================================================================ the parent (no torch)
def read_events(path: Path, offset: int) -> tuple[list[dict], int]:
    """The complete lines appended to the events file since byte ``offset``, and the new offset."""
    if not path.is_file():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    complete = data[:data.rfind(b"\n") + 1]
    events = [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]
    return events, offset + len(complete)


def run_stages(stages: list[str], args, work: Path, log_file: Path, deadline: float, t0: float) -> tuple[dict, dict]:
    """Run ``stages`` in worker processes, each stage stopped at its budget; returns (stage results, the
    worker's description of the machine)."""
    results = {s: {"status": "not run", "budget_s": None, "seconds": None, "error": None, "cases": []} for s in stages}
    machine: dict = {}
    events_file = work / "events.jsonl"
    pending = list(stages)
    state = {"offset": 0, "current": None, "deadline": None}

    def finish(name: str, **update) -> None:
        results[name].update(update)
        if results[name]["budget_s"] is None:
            results[name]["budget_s"] = 0.0
        _progress(t0, name, results[name])
        if name in pending:
            pending.remove(name)
        if state["current"] == name:
            state["current"] = None

    def drain() -> None:
        events, state["offset"] = read_events(events_file, state["offset"])
        for ev in events:
            kind, name = ev["event"], ev.get("stage")
            if kind == "env":
                machine.update(ev["environment"])
            elif kind == "start":
                state["current"], state["deadline"] = name, ev["t"] + ev["budget"]
                results[name].update(status="running", budget_s=ev["budget"], started=ev["t"])
            elif kind == "case":
                results[name]["cases"].append(ev["row"])
            elif kind == "end":
                finish(name, status=ev["status"], error=ev.get("error"), seconds=ev.get("seconds"),
                       cpu_s=ev.get("cpu_s"))

    def watch(proc) -> None:
        """Follow one worker until it exits, or stop it when its stage overruns its budget."""
        while True:
            drain()
            code = proc.poll()
            if code is not None:
                drain()                          # events written just before the exit
                name = state["current"] or (pending[0] if code != 0 and pending else None)
                if name is not None:             # died inside a stage (or at start-up: charged to the next one)
                    started = results[name].get("started")
                    finish(name, status="failed", seconds=time.time() - started if started else None,
                           error=f"worker exited with code {code} ({_last_line(log_file)})")
                return
            now = time.time()
            name = state["current"]
            if name is not None and now > state["deadline"]:
                _kill(proc)
                budget = results[name]["budget_s"]
                finish(name, status="timed out", seconds=budget, error=f"stopped at its budget of {budget:.0f} s")
                return
            if now > deadline + 30:              # a hang outside any stage
                _kill(proc)
                return
            time.sleep(0.2)

    with open(log_file, "a", encoding="utf-8") as log:
        while pending:
            if deadline - time.time() < MIN_STAGE_S:
                for name in list(pending):
                    finish(name, status="skipped", error="the run's --budget was spent")
                break
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--work", str(work), "--events",
                   str(events_file), "--stages", ",".join(pending), "--deadline", repr(deadline)]
            if args.dry_run:
                cmd.append("--dry-run")
            worker_env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.dry_run else None
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                    env=worker_env)
            try:
                watch(proc)
            except BaseException:                # e.g. Ctrl-C: the worker runs in a session of its own
                _kill(proc)
                raise
    for result in results.values():
        result.pop("started", None)
    return results, machine


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)     # the worker and what it started (compile workers, the FSDP process)
    except ProcessLookupError:
        pass
    proc.wait()


def _last_line(log_file: Path) -> str:
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "no output"


def _progress(t0: float, name: str, result: dict) -> None:
    took = result.get("seconds")
    took = f"{took:.1f} s" if isinstance(took, (int, float)) else "-"
    error = f": {result['error']}" if result.get("error") else ""
    print(f"[{time.time() - t0:6.1f} s] {name}: {result['status']} ({took}){error}", flush=True)


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}"
    return str(value)


def target_cell(row: dict, env: dict, dry: bool) -> str:
    for stage, case, key, limit, unit, card in TARGETS:
        if row["stage"] == stage and row["case"] == case:
            text = f"≤ {limit:g} {unit}" + (f" ({card})" if card else "")
            if dry:
                return f"{text}: n/a (dry run)"
            value = row.get(key)
            if row["status"] != "ok" or value is None:
                return f"{text}: not measured"
            met = "yes" if value <= limit else "no"
            if card and card not in str(env.get("device", "")):
                met += f" (on {env.get('device', '?')}, not an {card})"
            return f"{text}: {met}"
    return ""


def details_cell(row: dict) -> str:
    parts = [f"{k} {_fmt(v, 3)}" for k, v in (row.get("details") or {}).items()
             if k != "runs" and not (k == "nonfinite_output" and v == 0)]
    if row.get("error"):
        parts.insert(0, row["error"])
    return "; ".join(parts)


def markdown_table(results: dict, env: dict, dry: bool) -> str:
    lines = ["| stage | case | status | s | peak GB | details | target / met |", "|---|---|---|---:|---:|---|---|"]
    for stage, result in results.items():
        for row in result["cases"]:
            lines.append(f"| {stage} | {row['case']} | {row['status']} | {_fmt(row.get('seconds'))} | "
                         f"{_fmt(row.get('peak_gb'), 3)} | {details_cell(row)} | {target_cell(row, env, dry)} |")
        if result["status"] != "ok" or not result["cases"]:
            lines.append(f"| {stage} | (stage) | {result['status']} | {_fmt(result.get('seconds'))} | - | "
                         f"{result.get('error') or ''} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "gpu_check"),
                        help="folder for gpu_check.json and gpu_check.log")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480)")
    parser.add_argument("--only", action="append", default=[], metavar="STAGE[,STAGE]",
                        help=f"run only these stages ({', '.join(STAGES)}); setup joins any osediff_* stage")
    parser.add_argument("--dry-run", action="store_true", help="every stage on the CPU with tiny components")
    parser.add_argument("--workdir", help="where the SD folder and other built files go (default: a temporary "
                                          "folder, removed at the end)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--events", help=argparse.SUPPRESS)
    parser.add_argument("--stages", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == FSDP_CHILD:
        return fsdp_child(argv[1], argv[2:])
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget:g}")
    selected = [s for item in args.only for s in item.split(",") if s]
    unknown = [s for s in selected if s not in STAGES]
    if unknown:
        parser.error(f"--only: unknown stage '{unknown[0]}'; stages: {', '.join(STAGES)}")
    stages = [s for s in STAGES if not selected or s in selected or (s == "setup" and NEEDS_SETUP & set(selected))]
    if not args.dry_run:
        import torch
        if not torch.cuda.is_available():
            print(f"{PROG}: error: no CUDA device on this machine; --dry-run runs the stages on the CPU with tiny "
                  "components", file=sys.stderr)
            return 2
    t0 = time.time()
    deadline = t0 + args.budget - 2.0           # 2 s for the table and the JSON
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    log_file = output / "gpu_check.log"
    log_file.write_text("")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "events.jsonl").unlink(missing_ok=True)
    try:
        results, env = run_stages(stages, args, work, log_file, deadline, t0)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown_table(results, env, args.dry_run)
    targets = []
    for stage, case, key, limit, unit, card in TARGETS:
        row = next((r for r in results.get(stage, {}).get("cases", []) if r["case"] == case), None)
        targets.append({"stage": stage, "case": case, "metric": key, "limit": limit, "unit": unit, "card": card,
                        "value": row.get(key) if row else None,
                        "met": target_cell(row, env, args.dry_run) if row else "not run"})
    report = {"check": "osir GPU check (benchmarks/gpu_check.py, issue 26)",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "dry_run": args.dry_run,
              "budget_s": args.budget, "wall_s": time.time() - t0, "stages_selected": stages,
              "environment": env, "device": env.get("device"), "torch": env.get("torch"),
              "stages": results, "targets": targets, "table": table}
    (output / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print()
    print(f"GPU check on {env.get('device', '?')}, torch {env.get('torch', '?')}, {report['date']}"
          f"{' (dry run: CPU, tiny components)' if args.dry_run else ''}; {report['wall_s']:.0f} s")
    print(table)
    print(f"\nwrote {output / 'gpu_check.json'}")
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
