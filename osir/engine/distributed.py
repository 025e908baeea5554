"""How training spreads over processes, on accelerate: DDP keyword arguments from the options and an
FSDP plugin from an accelerate config file (``train.accelerate_config``, the file ``accelerate
config`` writes; its ``fsdp_config`` keys are the plugin's fields with an ``fsdp_`` prefix)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from accelerate.utils import DistributedDataParallelKwargs, FullyShardedDataParallelPlugin

from osir.core.options import DDPOptions, load_yaml, short_repr
from osir.core.registry import OptionsError, nearest

_RENAMED = {"transformer_layer_cls_to_wrap": "transformer_cls_names_to_wrap", "offload_params": "cpu_offload"}
#: keys of an accelerate config file that concern the launcher, not the training strategy
_LAUNCHER_KEYS = {"compute_environment", "debug", "downcast_bf16", "enable_cpu_affinity", "gpu_ids", "machine_rank",
                  "main_process_ip", "main_process_port", "main_training_function", "num_machines", "num_processes",
                  "rdzv_backend", "same_network", "tpu_env", "tpu_use_cluster", "tpu_use_sudo", "use_cpu",
                  "mixed_precision", "dynamo_config"}


def ddp_kwargs(ddp: DDPOptions) -> DistributedDataParallelKwargs:
    return DistributedDataParallelKwargs(find_unused_parameters=ddp.find_unused_parameters,
                                         static_graph=ddp.static_graph)


def fsdp_plugin(config_file: str | None) -> FullyShardedDataParallelPlugin | None:
    """The FSDP plugin an accelerate config file describes (None for DDP / single-process files)."""
    if config_file is None:
        return None
    key = "train.accelerate_config"
    path = Path(config_file)
    if not path.is_file():
        raise OptionsError(f"{key}: file not found: '{path}'")
    cfg = load_yaml(path, f"{key}: '{path}'") or {}       # read as options files are: no alias bomb
    if not isinstance(cfg, dict):
        raise OptionsError(f"{key}: '{path}': not an accelerate config (the top level is not a mapping)")
    kind = str(cfg.get("distributed_type", "NO"))
    if kind in ("NO", "MULTI_GPU", "MULTI_CPU"):
        return None
    if kind != "FSDP":
        raise OptionsError(f"{key}: '{path}': distributed_type {kind} is not supported; allowed: NO, MULTI_GPU, "
                           "MULTI_CPU, FSDP")
    for k in cfg:
        if k not in _LAUNCHER_KEYS | {"distributed_type", "fsdp_config"}:
            raise OptionsError(f"{key}: '{path}': unsupported key '{k}' for FSDP training")
    fields = [f.name for f in dataclasses.fields(FullyShardedDataParallelPlugin)]
    kwargs = {}
    fsdp = cfg.get("fsdp_config") or {}
    if not isinstance(fsdp, dict):
        raise OptionsError(f"{key}: '{path}': fsdp_config: expected a mapping, got {short_repr(fsdp)}")
    for k, value in fsdp.items():
        name = k if k in fields else _RENAMED.get(k.removeprefix("fsdp_"), k.removeprefix("fsdp_"))
        if name not in fields:
            raise OptionsError(f"{key}: '{path}': fsdp_config.{k}: unknown FSDP setting"
                               f"{nearest(name, fields)}; allowed: {', '.join(f if f.startswith('fsdp_') else 'fsdp_' + f for f in fields)}")
        kwargs[name] = value
    try:
        return FullyShardedDataParallelPlugin(**kwargs)
    except (TypeError, ValueError) as err:
        raise OptionsError(f"{key}: '{path}': {err}") from None
