"""The training loop, on accelerate (CPU or GPU, DDP under torchrun / ``accelerate launch``, FSDP
from an accelerate config file, mixed precision, gradient accumulation).

Experiment layout (BasicSR's): ``experiments/<name>/{models, training_states, visualization}``,
``train_<name>_<time>.log`` and ``options.yml``; tensorboard under ``tb_logger/<name>``.  Every
check of the options (method, optimisers, EMA, datasets, degradation, metrics, the state to resume)
runs before the experiment folder is touched, so a typo leaves an old experiment where it was.

One run at a time per experiment folder: the main process takes ``experiments/<name>.lock``
(``osir.engine.lock``) before the folder is archived or written, and releases it when training ends;
temporary files of a save cut short (``kill -9``) are removed at the next start.  SIGINT / SIGTERM
during training end the current iteration (during a validation: its current batch, the rest abandoned),
save the training state of the last completed iteration like a periodic checkpoint and raise
``TrainingInterrupted`` (``osir/train.py`` exits 130 / 143 without a traceback).

Randomness is a function of (seed, process, iteration): data samples carry their own seeds
(``SeededSampler``) and the torch generator is re-seeded before every micro-batch, so a resumed
run repeats exactly the losses of an uninterrupted one without restoring generator states.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
import weakref
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from torch.utils.data import DataLoader

from osir.data.datasets import WithDegradationParams
from osir.data.sampler import SeededSampler
from osir.core import checkpoint as ckpt
from osir.core.progress import Progress
from osir.engine import lock
from osir.engine.distributed import ddp_kwargs, fsdp_plugin
from osir.engine.ema import ParameterEMA
from osir.engine.logging import TensorboardWriter, get_logger
from osir.core.method import Method
from osir.engine.validation import ValidationAbandoned, describe, evaluation_mode, validate
from osir.inference.load import build_method   # the one loader builds every method (training too)
from osir.metrics.suite import MetricSuite
from osir.core.errors import TrainingInterrupted  # noqa: F401  (raised here; defined where train.py reads it)
from osir.core.options import EMAOptions, LoaderOptions, Options, as_options, check_files, dump_options
from osir.core.registry import BATCH_DEGRADATIONS, DATASETS, OPTIMIZERS, SCHEDULERS, OptionsError, nearest

LOADER_KEYS = tuple(f.name for f in dataclasses.fields(LoaderOptions))
OSIR_OPTIMIZER_KEYS = ("type", "params", "exclude_from_weight_decay")


def build_dataset(spec: dict, key_path: str):
    """A dataset from its options section (loader keys removed)."""
    return DATASETS.build({k: v for k, v in spec.items() if k not in LOADER_KEYS}, key_path)


def reference_note(seconds_per_iter: float | None, machine: str | None) -> str:
    """``logger.reference_seconds_per_iter`` as shown beside a run's own rate: "reference 0.54 s/it on 2 CPU
    cores" ("" when the options give none), so a slow machine can be told from a stuck run."""
    if seconds_per_iter is None:
        return ""
    return f"reference {seconds_per_iter:.3g} s/it" + (f" on {machine}" if machine else "")


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


def build_optimizers(method: Method, specs: dict) -> tuple[dict, dict[str, list[str]]]:
    """The optimisers of ``train.optimizers`` over the method's parameter groups, and for each
    trained network the names of the parameters they step.  Every trainable parameter of every
    network must be stepped by exactly one optimiser."""
    groups = method.parameter_groups()
    owner = {}
    for net_name, net in method.networks.items():
        for pname, p in net.named_parameters():
            owner.setdefault(id(p), (net_name, pname))
    if not specs:
        raise OptionsError(f"train.optimizers: name at least one optimiser; parameter groups: {', '.join(groups)}")
    claimed, optimizers = {}, {}
    for opt_name, spec in specs.items():
        key = f"train.optimizers.{opt_name}"
        names = spec.get("params") or [opt_name]
        params = []
        for group in names:
            if group not in groups:
                where = f"{key}.params" if spec.get("params") else f"{key} (no params: the optimiser's name)"
                raise OptionsError(f"{where}: unknown parameter group '{group}'{nearest(group, groups)}; "
                                   f"groups of {type(method).__name__}: {', '.join(groups)}")
            for p in groups[group]:
                if not p.requires_grad:
                    continue
                if id(p) not in owner:
                    raise OptionsError(f"{key}: group '{group}' holds a parameter of no network in method.networks")
                if claimed.get(id(p), opt_name) != opt_name:
                    raise OptionsError(f"{key}.params: group '{group}' overlaps train.optimizers.{claimed[id(p)]} "
                                       f"(parameter '{'.'.join(owner[id(p)])}')")
                if id(p) not in claimed:
                    claimed[id(p)] = opt_name
                    params.append(p)
        if not params:
            raise OptionsError(f"{key}: groups {names} hold no trainable parameters")
        if spec.get("exclude_from_weight_decay"):
            no_decay = [p for p in params if method.no_weight_decay(*owner[id(p)], p)]
            decay = [p for p in params if not method.no_weight_decay(*owner[id(p)], p)]
            params = [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        kwargs = {k: v for k, v in spec.items() if k not in OSIR_OPTIMIZER_KEYS}
        try:
            optimizers[opt_name] = OPTIMIZERS.get(spec["type"], f"{key}.type")(params, **kwargs)
        except (TypeError, ValueError) as err:
            raise OptionsError(f"{key}: {err}") from None
    unclaimed = {}
    for net_name, net in method.networks.items():
        for pname, p in net.named_parameters():
            if p.requires_grad and id(p) not in claimed:
                unclaimed.setdefault(net_name, []).append(pname)
    if unclaimed:
        net_name, names = next(iter(unclaimed.items()))
        more = f" ... (+{len(names) - 3} more)" if len(names) > 3 else ""
        raise OptionsError(f"train.optimizers: network '{net_name}' has trainable parameters that no optimiser steps "
                           f"({', '.join(names[:3])}{more}); name its group in an optimiser's params "
                           f"(groups: {', '.join(groups)}), or freeze them in the method")
    trained = {}
    for net_name, net in method.networks.items():
        names = [pname for pname, p in net.named_parameters() if id(p) in claimed]
        if names:
            trained[net_name] = names
    return optimizers, trained


def build_emas(method: Method, specs: dict[str, EMAOptions | None], trained: dict[str, list[str]]) -> dict[str, ParameterEMA]:
    emas = {}
    for net_name, spec in specs.items():
        if spec is None:
            continue
        if net_name not in method.networks:
            raise OptionsError(f"train.ema.{net_name}: the method has no network '{net_name}'"
                               f"{nearest(net_name, method.networks)}; networks: {', '.join(method.networks)}")
        if net_name not in trained:
            raise OptionsError(f"train.ema.{net_name}: network '{net_name}' is frozen (no optimiser steps it)")
        params = dict(method.networks[net_name].named_parameters())
        try:
            emas[net_name] = ParameterEMA({n: params[n] for n in trained[net_name]}, spec.decay, spec.update_every)
        except ValueError as err:
            raise OptionsError(f"train.ema.{net_name}: {err}") from None
    return emas


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else str(n)


def _iteration_seed(seed: int, rank: int, iteration: int, micro: int) -> int:
    return (((seed * 1_000_003 + rank) * 1_000_033 + iteration) * 97 + micro) % (2 ** 63)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT (Ctrl-C reaches the whole process group: the main process finishes
    its iteration and ends them) and end quietly on SIGTERM, with exit status 0 and no traceback: SIGTERM is
    also how Python ends leftover daemonic children at exit (``multiprocessing``'s exit handler terminates,
    then joins them), so a worker that ignored it would keep a finished or failed run from exiting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))


class _StopRequest:
    """While training: the first SIGINT / SIGTERM asks the loop to stop after the current iteration, or a
    validation after its current batch (``signum`` is set); the same signal again, ``REPEAT_S`` or more
    later, stops at once without saving.
    Sooner it is the same request: torchrun forwards the signal it got to its workers, which the terminal
    has already signalled.  Installed only in the main thread (Python delivers signals there), the previous
    handlers restored on exit."""

    REPEAT_S = 2.0

    def __init__(self, main_process: bool, states: Path):
        self.signum, self.main_process, self.states, self.previous = None, main_process, states, {}
        self.first = 0.0

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            if handler is not None:     # None: a handler not installed from Python, which cannot be restored
                signal.signal(signum, handler)
        self.previous = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum == signum and time.monotonic() - self.first >= self.REPEAT_S:
            self.__exit__()
            raise TrainingInterrupted(f"stopped at once by a second {name}: the current iteration was not saved; "
                                      f"--auto_resume continues from the newest complete training state in "
                                      f"'{self.states}'", signum)
        if self.signum is None:
            self.signum, self.first = signum, time.monotonic()
            if self.main_process:   # os.write: a print could re-enter a write that the signal interrupted
                again = "Ctrl-C again" if signum == signal.SIGINT else f"a second {name}"
                try:
                    os.write(sys.stderr.fileno(), f"\n{name}: stopping after the current iteration (or "
                                                  f"validation batch) to save the training state; {again} "
                                                  f"({self.REPEAT_S:.0f} s or more later) stops at once, "
                                                  f"without saving\n".encode())
                except (OSError, ValueError, AttributeError):
                    pass


class Trainer:
    """A training run, set up in named phases (as diffusers numbers a pipeline's steps).  Phases 1-3 check
    everything that can fail on the options and touch no file; 4 locks the experiment folder; 5-9 open it,
    prepare the networks with accelerate, resume, build the loader and log what will run."""

    def __init__(self, opt: Options, auto_resume: bool = False):
        opt = as_options(opt)           # typed options (load_options); a plain mapping is validated here
        if opt.train is None:
            raise OptionsError("train: missing required section for training")
        if opt.datasets.get("train") is None:
            raise OptionsError("datasets.train: missing required dataset for training")
        check_files(opt, datasets=True, training=True)                  # 0. every file the options name
        self.opt = opt
        self.accelerator = self._accelerator()                          # 1. devices, precision, DDP / FSDP
        optimizers = self._build_method(auto_resume)                    # 2. method, optimisers, EMA, schedulers
        self._build_data()                                              # 3. datasets, batch degradation, metrics
        self.exp_dir = Path(opt.path.experiments_root) / opt.name
        self._lock_file, self._lock_notes = None, []
        self._take_lock()                                               # 4. one run per experiment folder
        try:
            resume = self._open_experiment(auto_resume)                 # 5. the folder, log file, tensorboard
            self._prepare(optimizers)                                   # 6. accelerate.prepare, frozen parts eval
            self.start_iter = 0
            if resume is not None:
                self._apply_resume(*resume)                             # 7. weights, optimisers, EMA, iteration
            self._build_loader()                                        # 8. the seeded loader from start_iter
            self._log_summary()                                         # 9. what runs where, parameter counts
        except BaseException:
            self.close()
            raise

    def _accelerator(self) -> Accelerator:
        tr = self.opt.train
        # accelerate only sets up multi-process CPU training (gloo) when told it runs on the CPU
        on_cpu = tr.force_cpu or not torch.accelerator.is_available()
        acc = Accelerator(cpu=on_cpu, mixed_precision=tr.mixed_precision,
                          gradient_accumulation_steps=tr.grad_accum_steps,
                          kwargs_handlers=[ddp_kwargs(tr.ddp)],
                          fsdp_plugin=fsdp_plugin(tr.accelerate_config))
        self.sharded = acc.distributed_type.value == "FSDP"
        return acc

    def _build_method(self, auto_resume: bool) -> dict:
        """The method on the device with its optimisers (returned, not yet prepared), EMA and schedulers."""
        opt, tr, acc, sharded = self.opt, self.opt.train, self.accelerator, self.sharded
        set_seed(opt.seed)   # initial weights from the run seed, equal on every process
        self.method = method = build_method(opt)
        for net in method.networks.values():   # networks with trainable parameters train; setup may refine
            net.train(any(p.requires_grad for p in net.parameters()))
        method.setup(acc.device, tr.mixed_precision)
        method.prepare_training()
        for net in method.networks.values():
            net.to(acc.device)
            if tr.channels_last:
                net.to(memory_format=torch.channels_last)
        optimizers, self.trained = build_optimizers(method, tr.optimizers)
        method.trained_parameters = self.trained
        if sharded and tr.ema:
            raise OptionsError("train.ema: EMA of FSDP-sharded parameters is not supported; set train.ema: {}")
        if sharded and tr.mixed_precision == "fp16" and tr.grad_clip and len(optimizers) > 1:
            raise OptionsError("train.mixed_precision: fp16 with clipping and several optimisers is not supported "
                               "under FSDP (its clipping unscales every optimiser); use bf16")
        if sharded and (opt.path.resume_state or auto_resume):
            raise OptionsError("path.resume_state / --auto_resume: resuming FSDP-sharded training is not supported yet")
        self.ema = build_emas(method, tr.ema, self.trained)
        self.schedulers = {n: SCHEDULERS.build(tr.scheduler, "train.scheduler", optimizer=o)
                           for n, o in optimizers.items()} if tr.scheduler else {}
        return optimizers

    def _build_data(self) -> None:
        opt = self.opt
        spec = opt.datasets["train"]
        self.train_set = build_dataset(spec, "datasets.train")
        self.degradation = None
        if opt.degradation is not None:
            self.degradation = BATCH_DEGRADATIONS.build(opt.degradation, "degradation")
            pool = getattr(self.degradation, "pool", None)
            if pool is not None and pool.size % spec["batch_size"]:
                raise OptionsError(f"degradation.pool_size {pool.size} is not a multiple of datasets.train.batch_size "
                                   f"{spec['batch_size']}")
            crop = getattr(self.degradation, "gt_size", None)
            if crop is not None and spec.get("gt_size") is not None and crop > spec["gt_size"]:
                raise OptionsError(f"degradation.gt_size {crop} exceeds datasets.train.gt_size {spec['gt_size']} "
                                   "(the patches it crops from)")
            self.train_set = WithDegradationParams(self.train_set, self.degradation.draw)
        if len(self.train_set) == 0:
            raise OptionsError(f"datasets.train: no images in '{spec.get('dataroot_gt')}'")
        self.val_sets = {k: (build_dataset(v, f"datasets.{k}"), v) for k, v in opt.datasets.items() if k != "train"}
        self.metrics = MetricSuite(opt.metrics, self.accelerator.device)

    def _take_lock(self) -> None:
        """The experiment folder's lock (``osir.engine.lock``), taken by the main process before anything
        is archived or written; every process learns a refusal, so none waits for the others forever."""
        acc, refusal = self.accelerator, None
        if acc.is_main_process:
            try:
                self._lock_file, warning = lock.acquire(self.exp_dir)
                weakref.finalize(self, lock.release, self._lock_file)   # a Trainer dropped unfinished
                self._lock_notes += [warning] if warning else []
            except (lock.ExperimentLocked, OSError) as err:    # in use; or the lock cannot be written
                refusal = (isinstance(err, lock.ExperimentLocked), str(err))
        if acc.num_processes > 1:
            refusal = broadcast_object_list([refusal], from_process=0)[0]
        if refusal is not None:             # every process raises it: none waits at a broadcast forever
            locked, message = refusal
            raise (lock.ExperimentLocked if locked else OSError)(message)

    def close(self) -> None:
        """Release the experiment folder (its lock); ``train()`` does this when it ends, however it ends."""
        if self._lock_file is not None:
            lock.release(self._lock_file)
            self._lock_file = None

    def _open_experiment(self, auto_resume: bool):
        """The training state to resume (read and checked) or None; the experiment folder (an earlier run's
        archived when not resuming), its options.yml, the log file and tensorboard."""
        opt, acc = self.opt, self.accelerator
        name, paths = opt.name, opt.path
        if acc.is_main_process:   # nothing else writes in the folder while its lock is held
            orphans = ckpt.remove_orphans(self.exp_dir)
            if orphans:
                self._lock_notes.append(f"removed {len(orphans)} temporary file(s) of a save that was cut short: "
                                        + ", ".join(str(p.relative_to(self.exp_dir)) for p in orphans))
        resume = self._find_resume(paths.resume_state, auto_resume)
        if acc.is_main_process:
            if resume is None and self.exp_dir.exists():
                ckpt.archive_folder(self.exp_dir)
            for sub in ("models", "training_states", "visualization"):
                (self.exp_dir / sub).mkdir(parents=True, exist_ok=True)
            dump_options(opt, self.exp_dir / "options.yml")
        acc.wait_for_everyone()
        log_file = self.exp_dir / f"train_{name}_{time.strftime('%Y%m%d_%H%M%S')}.log"
        self.logger = get_logger(log_file, acc.is_main_process)
        for warning in self._lock_notes + self._resume_warnings:
            self.logger.warning(warning)
        self.tb = TensorboardWriter(Path(paths.tb_logger_root) / name
                                    if opt.logger.tensorboard and acc.is_main_process else None)
        return resume

    def _prepare(self, optimizers: dict) -> None:
        """accelerate: trained networks and their optimisers in one prepare call (FSDP needs both)."""
        method, acc = self.method, self.accelerator
        trained_names = list(self.trained)
        prepared = acc.prepare(*[method.networks[n] for n in trained_names], *optimizers.values())
        for n, net in zip(trained_names, prepared[:len(trained_names)]):
            method.networks[n] = net
        self.optimizers = dict(zip(optimizers, prepared[len(trained_names):]))
        for n, net in method.networks.items():
            if n not in self.trained:
                net.eval()                      # frozen component
        method.attach(acc, self.optimizers, self.opt.train.grad_clip)

    def _build_loader(self) -> None:
        """The loader, its seeded sampler starting after the samples of ``start_iter`` iterations."""
        opt, acc = self.opt, self.accelerator
        spec = opt.datasets["train"]
        micro_per_iter = opt.train.grad_accum_steps
        sampler = SeededSampler(len(self.train_set), opt.seed, spec["shuffle"], acc.process_index,
                                acc.num_processes, start=self.start_iter * micro_per_iter * spec["batch_size"])
        self.train_loader = DataLoader(self.train_set, batch_size=spec["batch_size"], sampler=sampler,
                                       num_workers=spec["num_workers"], drop_last=True,
                                       pin_memory=acc.device.type == "cuda",
                                       persistent_workers=spec["num_workers"] > 0,
                                       worker_init_fn=ignore_stop_signals)

    def _log_summary(self) -> None:
        method, acc = self.method, self.accelerator
        counts = []
        for k in method.networks:
            named = dict(method.net(k).named_parameters())
            trained = sum(named[n].numel() for n in self.trained.get(k, []))
            counts.append(f"{k} {_count(sum(p.numel() for p in named.values()))} ({_count(trained)} trained)")
        self.logger.info(f"{type(method).__name__} on {acc.device} x{acc.num_processes} "
                         f"({acc.mixed_precision}); {len(self.train_set)} training images; parameters: {', '.join(counts)}")

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint_files(self, it: int) -> dict[str, tuple[str, bool]]:
        """file name -> (network, is_ema) of the checkpoint at iteration ``it``."""
        files = {f"net_{n}_{it}.safetensors": (n, False) for n in self.trained}
        files.update({f"net_{n}_ema_{it}.safetensors": (n, True) for n in self.ema})
        return files

    def _find_resume(self, explicit: str | None, auto: bool):
        """(state path, training state, {file: state dict}) to resume from, read and checked before
        anything is written.  An explicit ``path.resume_state`` that is missing, corrupt or does not
        fit is an error naming the file; ``--auto_resume`` takes the newest complete state and skips
        incomplete or corrupt ones (a crash during a save)."""
        self._resume_warnings = []
        if explicit is not None:
            return self._read_checkpoint(Path(explicit))
        if not auto:
            return None
        states = ckpt.states_newest_first(self.exp_dir / "training_states")
        for path in states:
            try:
                return self._read_checkpoint(path)
            except ckpt.CheckpointError as err:
                self._resume_warnings.append(f"auto_resume: skipping {path.name}: {err}")
        if states:   # states exist but none fits: refuse rather than archive the experiment
            raise ckpt.CheckpointError(f"--auto_resume: no complete training state in '{states[0].parent}' fits "
                                       f"these options ({'; '.join(self._resume_warnings)})")
        return None

    def _read_checkpoint(self, state_path: Path):
        state = ckpt.load_training_state(state_path)
        it = int(state["iter"])
        models = state_path.parent.parent / "models"
        weights = {}
        for file, (name, _) in self._checkpoint_files(it).items():
            path = models / file
            if not path.is_file():
                raise ckpt.CheckpointError(f"checkpoint of iteration {it} is incomplete: '{path}' is missing")
            weights[file] = ckpt.read_state_dict(path)
            expected = self.method.checkpoint_state(name, self.method.net(name).state_dict())
            diff = ckpt.describe_mismatch(expected, weights[file])
            if diff:
                raise ckpt.CheckpointError(f"'{path}' does not fit network '{name}': {diff}")
        for key, names in (("optimizers", list(self.opt.train.optimizers)), ("schedulers", list(self.schedulers)),
                           ("ema", list(self.ema))):
            missing = [n for n in names if n not in state.get(key, {})]
            if missing:
                raise ckpt.CheckpointError(f"'{state_path}' has no {key.rstrip('s')} state for {', '.join(missing)}")
        return state_path, state, weights

    def _apply_resume(self, state_path: Path, state: dict, weights: dict) -> None:
        it = int(state["iter"])
        for file, (name, is_ema) in self._checkpoint_files(it).items():
            if is_ema:
                with self.ema[name].swapped():
                    self.method.load_checkpoint_state(name, weights[file], file)
                self.ema[name].num_updates = int(state["ema"][name])
            else:
                self.method.load_checkpoint_state(name, weights[file], file)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        scalers = self.method.scalers or ({"": self.accelerator.scaler} if self.accelerator.scaler is not None else {})
        for name, scaler in scalers.items():
            if (state.get("scaler") or {}).get(name):
                scaler.load_state_dict(state["scaler"][name])
        self.start_iter = it
        self.logger.info(f"resumed from {state_path} at iteration {it}")

    def save_checkpoint(self, it: int) -> None:
        acc, method = self.accelerator, self.method
        acc.wait_for_everyone()
        models = self.exp_dir / "models"
        for file, (name, is_ema) in self._checkpoint_files(it).items():
            if is_ema:
                with self.ema[name].swapped():
                    full = method.net(name).state_dict()
                    state = method.checkpoint_state(name, full)
                    if acc.is_main_process:
                        ckpt.save_state_dict(state, models / file)
            else:
                full = acc.get_state_dict(method.networks[name])   # every process: FSDP gathers the shards
                if acc.is_main_process:
                    ckpt.save_state_dict(method.checkpoint_state(name, full), models / file)
        if acc.is_main_process:
            state = {"iter": it, "files": list(self._checkpoint_files(it)),
                     "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                     "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                     "ema": {n: e.num_updates for n, e in self.ema.items()},
                     "scaler": {n: sc.state_dict() for n, sc in (self.method.scalers or
                                                                 ({"": acc.scaler} if acc.scaler is not None else {})).items()}}
            ckpt.save_training_state(state, self.exp_dir / "training_states" / f"{it}.state")
            self._prune()
            self.logger.info(f"saved checkpoint at iteration {it}")
        acc.wait_for_everyone()

    def _prune(self) -> None:
        keep = self.opt.logger.keep_checkpoints
        if not keep:
            return
        for old in ckpt.states_newest_first(self.exp_dir / "training_states")[keep:]:
            for file in self._checkpoint_files(int(old.stem)):
                (self.exp_dir / "models" / file).unlink(missing_ok=True)
            old.unlink(missing_ok=True)

    # -- loop --------------------------------------------------------------------------------
    def validate(self, it: int, stop: _StopRequest | None = None) -> dict:
        """Every validation set's summary.  A ``stop`` request cuts it short between batches: the rest of
        the validation is abandoned (one line logged, nothing reported for the set cut short); the caller
        then stops training.  The main process validates alone, or all of them when the networks are
        sharded (every forward needs every process): then every process asks all of them before each batch,
        so all abandon at the same one.  A request that only another process got stops after the
        validation (``_stop_requested``); no process waits for one that has stopped."""
        acc = self.accelerator
        results = {}
        should_stop = None
        if stop is not None:
            should_stop = ((lambda: self._stop_requested(stop) != 0) if self.sharded
                           else (lambda: stop.signum is not None))
        # sharded networks need every process in their forward: then all validate, the main one reports
        if (acc.is_main_process or self.sharded) and self.val_sets:
            vopt = self.opt.val
            emas = list(self.ema.values()) if vopt.use_ema else []
            set_name = None
            try:
                with evaluation_mode(self.method, emas):   # the EMA swapped back out before anything is saved
                    for set_name, (dataset, spec) in self.val_sets.items():
                        save_dir = self.exp_dir / "visualization" if vopt.save_images and acc.is_main_process \
                            else None
                        summary = validate(self.method, dataset, self.metrics, acc.device, save_dir, f"_{it}",
                                           vopt.max_images, self.opt.tile, seed=self.opt.seed,
                                           batch_size=spec["batch_size"], should_stop=should_stop)
                        results[set_name] = summary
                        self.logger.info(f"validation [{set_name}] iter {it}: {describe(summary)}")
                        self.tb.scalars({k: v.get("restored", v.get("value")) for k, v in summary.items()}, it,
                                        f"val/{set_name}/")
            except ValidationAbandoned as cut:
                self.logger.info(f"validation [{set_name}] at iteration {it} abandoned after {cut.done} of "
                                 f"{cut.total} images: stop requested")
        acc.wait_for_everyone()
        return results

    def train(self) -> dict:
        """Train to ``train.total_iter``.  SIGINT / SIGTERM: the current iteration ends, its training state
        is saved (as a periodic checkpoint, so ``--auto_resume`` continues from it) and
        ``TrainingInterrupted`` is raised; a second signal of the same kind stops at once.  The experiment
        folder's lock is released however training ends."""
        acc, log_opt = self.accelerator, self.opt.logger
        reference = reference_note(log_opt.reference_seconds_per_iter, log_opt.reference_machine)
        # a bar on a terminal, in s/it beside the reference; elsewhere the print_freq log lines carry the rate
        bar = Progress(self.opt.train.total_iter, self.opt.name + (f" ({reference})" if reference else ""), "it",
                       "it", initial=self.start_iter, lines=False, seconds_per_item=True,
                       disable=not (acc.is_main_process and log_opt.progress_bar))
        try:
            with _StopRequest(acc.is_main_process, self.exp_dir / "training_states") as stop:
                return self._train(stop, bar)
        finally:
            bar.close()
            self.tb.close()
            self.close()

    def _stop_requested(self, stop: _StopRequest) -> int:
        """The signal that stops training (0: none); every process agrees, so all save the same iteration."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return stop.signum or 0
        return int(acc.reduce(torch.tensor([stop.signum or 0], device=acc.device), "max").item())

    def _train(self, stop: _StopRequest, bar) -> dict:
        acc, tr, log_opt = self.accelerator, self.opt.train, self.opt.logger
        total = tr.total_iter
        nets = [self.method.networks[n] for n in self.trained]
        data = iter(self.train_loader)
        window, last = {}, {}
        since, since_it = time.time(), self.start_iter      # the rate is measured since the last log line
        for it in range(self.start_iter + 1, total + 1):
            for micro in range(tr.grad_accum_steps):
                batch = to_device(next(data), acc.device)
                torch.manual_seed(_iteration_seed(self.opt.seed, acc.process_index, it, micro))
                if self.degradation is not None:
                    batch.update(self.degradation(batch["gt"], batch.pop("degradation_params")))   # lq, gt, ...
                with acc.accumulate(*nets):
                    logs = self.method.training_step(batch)
                for k, v in logs.items():
                    window.setdefault(k, []).append(float(v))
            for sched in self.schedulers.values():
                sched.step()
            for ema in self.ema.values():
                ema.update(it)
            if not all(math.isfinite(v[-1]) for v in window.values()):
                raise FloatingPointError(f"iteration {it}: non-finite loss {({k: v[-1] for k, v in window.items()})}")
            bar.update(1)
            bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in window.items()})
            if it % log_opt.print_freq == 0 or it == total:
                # seconds per iteration since the last log line (validations and checkpoints included, as in the
                # reference figure of a whole demo run): the machine's speed now, not an average since the start
                now = time.time()
                per_iter, since, since_it = max(now - since, 1e-9) / (it - since_it), now, it
                last = {k: sum(v) / len(v) for k, v in window.items()}
                lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]
                reference = reference_note(log_opt.reference_seconds_per_iter, log_opt.reference_machine)
                self.logger.info(f"iter {it}/{total} lr {lr:.3g} " + " ".join(f"{k} {v:.4g}" for k, v in last.items())
                                 + f" ({per_iter:.3g} s/it" + (f"; {reference}" if reference else "")
                                 + f"; eta {(total - it) * per_iter / 60:.1f} min)")
                self.tb.scalars({**last, "lr": lr}, it, "train/")
                window = {}
            saved = it % log_opt.checkpoint_freq == 0 and it != total
            if saved:
                self.save_checkpoint(it)
            signum = self._stop_requested(stop)
            if not signum and it % self.opt.val.freq == 0 and it != total:
                self.validate(it, stop)
                signum = self._stop_requested(stop)   # a request during the validation: the same save as before it
            if signum:
                self._interrupted(it, signum, saved)
        bar.close()
        self.save_checkpoint(total)
        results = self.validate(total, stop)
        signum = self._stop_requested(stop)
        if signum:                                    # the final validation cut short; its state is saved
            self._interrupted(total, signum, saved=True)
        return {"train": last, "val": results}

    def _interrupted(self, it: int, signum: int, saved: bool):
        """Save the training state of iteration ``it`` unless it is saved, say where, and stop."""
        if not saved:
            self.save_checkpoint(it)
        state = self.exp_dir / "training_states" / f"{it}.state"
        self.logger.info(f"interrupted ({signal.Signals(signum).name}) at iteration {it}: training "
                         f"state saved to {state}; resume with --auto_resume")
        raise TrainingInterrupted(f"interrupted at iteration {it}: training state saved to {state}", signum, it, state)
