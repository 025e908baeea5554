"""The training loop, on accelerate (CPU or GPU, DDP under torchrun / ``accelerate launch``,
mixed precision, gradient accumulation).

Experiment layout (BasicSR's): ``experiments/<name>/{models, training_states, visualization}``,
``train_<name>_<time>.log`` and ``options.yml``; tensorboard under ``tb_logger/<name>``.

Randomness is a function of (seed, process, iteration): data samples carry their own seeds
(``SeededSampler``) and the torch generator is re-seeded before every micro-batch, so a resumed
run repeats exactly the losses of an uninterrupted one without restoring generator states.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from osir.data.datasets import WithDegradationParams
from osir.data.sampler import SeededSampler
from osir.engine import checkpoint as ckpt
from osir.engine.logging import TensorboardWriter, get_logger
from osir.engine.method import Method
from osir.engine.validation import validate
from osir.metrics.suite import MetricSuite
from osir.options import dump_options
from osir.registry import BATCH_DEGRADATIONS, DATASETS, METHODS, OPTIMIZERS, SCHEDULERS, OptionsError

LOADER_KEYS = ("batch_size", "num_workers", "shuffle")


def build_dataset(spec: dict, key_path: str):
    """A dataset from its options section (loader keys removed)."""
    return DATASETS.build({k: v for k, v in spec.items() if k not in LOADER_KEYS}, key_path)


def to_device(batch: dict, device) -> dict:
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            out[key] = value.to(device, non_blocking=True)
        elif isinstance(value, dict):
            out[key] = to_device(value, device)
        else:
            out[key] = value
    return out


def build_method(opt: dict) -> Method:
    method = METHODS.build(opt["method"], "method")
    for name, path in opt["path"]["pretrained"].items():
        if name not in method.networks:
            raise OptionsError(f"path.pretrained.{name}: the method has no network '{name}'; "
                               f"networks: {', '.join(method.networks)}")
        method.load_pretrained(name, path, strict=opt["path"]["strict_load"])
    return method


def _iteration_seed(seed: int, rank: int, iteration: int, micro: int) -> int:
    return (((seed * 1_000_003 + rank) * 1_000_033 + iteration) * 97 + micro) % (2 ** 63)


class Trainer:
    def __init__(self, opt: dict, auto_resume: bool = False):
        if opt.get("train") is None:
            raise OptionsError("train: missing required section for training")
        if opt["datasets"].get("train") is None:
            raise OptionsError("datasets.train: missing required dataset for training")
        self.opt, tr = opt, opt["train"]
        # accelerate only sets up multi-process CPU training (gloo) when told it runs on the CPU
        on_cpu = tr["force_cpu"] or not torch.accelerator.is_available()
        self.accelerator = acc = Accelerator(cpu=on_cpu, mixed_precision=tr["mixed_precision"],
                                             gradient_accumulation_steps=tr["grad_accum_steps"])
        name, paths = opt["name"], opt["path"]
        self.exp_dir = Path(paths["experiments_root"]) / name
        resume = paths["resume_state"]
        if resume is None and auto_resume:
            latest = ckpt.latest_state(self.exp_dir / "training_states")
            resume = str(latest) if latest else None
        if acc.is_main_process:
            if resume is None and self.exp_dir.exists():
                archived = self.exp_dir.with_name(f"{name}_archived_{time.strftime('%Y%m%d_%H%M%S')}")
                shutil.move(str(self.exp_dir), str(archived))
            for sub in ("models", "training_states", "visualization"):
                (self.exp_dir / sub).mkdir(parents=True, exist_ok=True)
            dump_options(opt, self.exp_dir / "options.yml")
        acc.wait_for_everyone()
        log_file = self.exp_dir / f"train_{name}_{time.strftime('%Y%m%d_%H%M%S')}.log"
        self.logger = get_logger(log_file, acc.is_main_process)
        self.tb = TensorboardWriter(Path(paths["tb_logger_root"]) / name
                                    if opt["logger"]["tensorboard"] and acc.is_main_process else None)

        # method, optimisers, schedulers, EMA (initial weights from the run seed, equal on every process)
        set_seed(opt["seed"])
        self.method = method = build_method(opt)
        if not tr["optimizers"]:
            raise OptionsError(f"train.optimizers: name an optimiser for at least one network: {', '.join(method.networks)}")
        optimizers, self.ema = {}, {}
        for net_name, spec in tr["optimizers"].items():
            if net_name not in method.networks:
                raise OptionsError(f"train.optimizers.{net_name}: the method has no network '{net_name}'; "
                                   f"networks: {', '.join(method.networks)}")
            params = [p for p in method.networks[net_name].parameters() if p.requires_grad]
            optimizers[net_name] = OPTIMIZERS.build(spec, f"train.optimizers.{net_name}", params=params)
            if tr["ema_decay"] is not None:
                self.ema[net_name] = AveragedModel(method.networks[net_name], device=acc.device, use_buffers=True,
                                                   multi_avg_fn=get_ema_multi_avg_fn(tr["ema_decay"]))
        self.schedulers = {n: SCHEDULERS.build(tr["scheduler"], "train.scheduler", optimizer=o)
                           for n, o in optimizers.items()} if tr["scheduler"] else {}
        for net_name, net in method.networks.items():
            if net_name in optimizers:
                method.networks[net_name] = acc.prepare(net)
            else:
                net.to(acc.device).requires_grad_(False).eval()   # frozen component
        for net_name in optimizers:
            optimizers[net_name] = acc.prepare(optimizers[net_name])
        method.attach(acc, optimizers, tr["grad_clip"])
        self.optimizers = optimizers

        self.start_iter = 0
        if resume is not None:
            self._resume(resume)

        # data
        spec = opt["datasets"]["train"]
        self.train_set = build_dataset(spec, "datasets.train")
        self.degradation = None
        if opt["degradation"] is not None:
            self.degradation = BATCH_DEGRADATIONS.build(opt["degradation"], "degradation")
            pool = getattr(self.degradation, "pool", None)
            if pool is not None and pool.size % spec["batch_size"]:
                raise OptionsError(f"degradation.pool_size {pool.size} is not a multiple of datasets.train.batch_size "
                                   f"{spec['batch_size']}")
            self.train_set = WithDegradationParams(self.train_set, self.degradation.draw)
        micro_per_iter = tr["grad_accum_steps"]
        sampler = SeededSampler(len(self.train_set), opt["seed"], spec["shuffle"], acc.process_index,
                                acc.num_processes, start=self.start_iter * micro_per_iter * spec["batch_size"])
        self.train_loader = DataLoader(self.train_set, batch_size=spec["batch_size"], sampler=sampler,
                                       num_workers=spec["num_workers"], drop_last=True,
                                       pin_memory=acc.device.type == "cuda",
                                       persistent_workers=spec["num_workers"] > 0)
        self.val_sets = {k: build_dataset(v, f"datasets.{k}") for k, v in opt["datasets"].items() if k != "train"}
        self.metrics = MetricSuite(opt["metrics"], acc.device)
        self.logger.info(f"{type(method).__name__} on {acc.device} x{acc.num_processes} "
                         f"({acc.mixed_precision}); {len(self.train_set)} training images; "
                         f"parameters: " + ", ".join(f"{k} {sum(p.numel() for p in v.parameters()) / 1e6:.2f}M"
                                                     for k, v in method.networks.items()))

    # -- checkpoints -------------------------------------------------------------------------
    def _resume(self, state_path: str) -> None:
        state = ckpt.load_training_state(state_path)
        it = int(state["iter"])
        models = Path(state_path).parent.parent / "models"
        for name, net in self.method.networks.items():
            path = models / f"net_{name}_{it}.safetensors"
            if path.exists():
                ckpt.load_network(self.accelerator.unwrap_model(net), path)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        for name, ema in self.ema.items():
            ckpt.load_network(ema.module, models / f"net_{name}_ema_{it}.safetensors")
            ema.n_averaged.fill_(int(state["ema_n_averaged"][name]))
        self.start_iter = it
        self.logger.info(f"resumed from {state_path} at iteration {it}")

    def save_checkpoint(self, it: int) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            models = self.exp_dir / "models"
            for name, net in self.method.networks.items():
                if name in self.optimizers:
                    ckpt.save_network(acc.unwrap_model(net), models / f"net_{name}_{it}.safetensors")
            for name, ema in self.ema.items():
                ckpt.save_network(ema.module, models / f"net_{name}_ema_{it}.safetensors")
            state = {"iter": it,
                     "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                     "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                     "ema_n_averaged": {n: int(e.n_averaged) for n, e in self.ema.items()}}
            ckpt.save_training_state(state, self.exp_dir / "training_states" / f"{it}.state")
            self._prune()
            self.logger.info(f"saved checkpoint at iteration {it}")
        acc.wait_for_everyone()

    def _prune(self) -> None:
        keep = self.opt["logger"]["keep_checkpoints"]
        if not keep:
            return
        states = sorted((int(p.stem) for p in (self.exp_dir / "training_states").glob("*.state")))
        for old in states[:-keep]:
            (self.exp_dir / "training_states" / f"{old}.state").unlink(missing_ok=True)
            for f in (self.exp_dir / "models").glob(f"net_*_{old}.safetensors"):
                f.unlink()

    # -- loop --------------------------------------------------------------------------------
    def validate(self, it: int) -> dict:
        acc = self.accelerator
        results = {}
        if acc.is_main_process and self.val_sets:
            self.method.eval_networks = {n: e.module for n, e in self.ema.items()} | \
                {n: v for n, v in self.method.networks.items() if n not in self.ema} if self.ema else None
            for set_name, dataset in self.val_sets.items():
                vopt = self.opt["val"]
                save_dir = self.exp_dir / "visualization" if vopt["save_images"] else None
                summary = validate(self.method, dataset, self.metrics, acc.device, save_dir, f"_{it}",
                                   vopt["max_images"], self.opt["tile"], seed=self.opt["seed"])
                results[set_name] = summary
                text = ", ".join(f"{k} {v['restored']:.4f}" + (f" (input {v['input']:.4f})" if "input" in v else "")
                                 for k, v in summary.items())
                self.logger.info(f"validation [{set_name}] iter {it}: {text}")
                self.tb.scalars({k: v["restored"] for k, v in summary.items()}, it, f"val/{set_name}/")
            self.method.eval_networks = None
        acc.wait_for_everyone()
        return results

    def train(self) -> dict:
        acc, tr, log_opt = self.accelerator, self.opt["train"], self.opt["logger"]
        total = tr["total_iter"]
        nets = [n for k, n in self.method.networks.items() if k in self.optimizers]
        data = iter(self.train_loader)
        bar = tqdm(total=total, initial=self.start_iter, dynamic_ncols=True, desc=self.opt["name"],
                   disable=not (acc.is_main_process and log_opt["progress_bar"]))
        window, t0, last = {}, time.time(), {}
        for it in range(self.start_iter + 1, total + 1):
            for net in nets:
                net.train()
            for micro in range(tr["grad_accum_steps"]):
                batch = to_device(next(data), acc.device)
                torch.manual_seed(_iteration_seed(self.opt["seed"], acc.process_index, it, micro))
                if self.degradation is not None:
                    batch["lq"], batch["gt"] = self.degradation(batch["gt"], batch.pop("degradation_params"))
                with acc.accumulate(*nets):
                    logs = self.method.training_step(batch)
                for k, v in logs.items():
                    window.setdefault(k, []).append(float(v))
            for sched in self.schedulers.values():
                sched.step()
            for name, ema in self.ema.items():
                ema.update_parameters(acc.unwrap_model(self.method.networks[name]))
            if not all(math.isfinite(v[-1]) for v in window.values()):
                raise FloatingPointError(f"iteration {it}: non-finite loss {({k: v[-1] for k, v in window.items()})}")
            bar.update(1)
            bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in window.items()})
            if it % log_opt["print_freq"] == 0 or it == total:
                speed = (it - self.start_iter) / max(time.time() - t0, 1e-9)
                last = {k: sum(v) / len(v) for k, v in window.items()}
                lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]
                self.logger.info(f"iter {it}/{total} lr {lr:.3g} " + " ".join(f"{k} {v:.4g}" for k, v in last.items())
                                 + f" ({speed:.2f} it/s, eta {(total - it) / max(speed, 1e-9) / 60:.1f} min)")
                self.tb.scalars({**last, "lr": lr}, it, "train/")
                window = {}
            if it % log_opt["checkpoint_freq"] == 0 and it != total:
                self.save_checkpoint(it)
            if it % self.opt["val"]["freq"] == 0 and it != total:
                self.validate(it)
        bar.close()
        self.save_checkpoint(total)
        results = self.validate(total)
        self.tb.close()
        return {"train": last, "val": results}
