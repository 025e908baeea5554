"""Mixed precision with several optimisers, and gradient accumulation, as numbers.

accelerate's fp16 path (a GradScaler shared by the prepared optimisers, ``AcceleratedOptimizer.step``
calling ``scaler.step`` then ``scaler.update``) runs on a GPU only; on a CPU the same accelerate
code runs with torch's CPU GradScaler put in its place (``native_amp`` + ``scaler``), which is
what these tests do.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file

from osir.core.method import Method
from osir.engine.trainer import Trainer
from osir.core.options import load_options
from tests.conftest import reset_accelerate, tiny_options, write_yaml

CLIP = 1e6           # clipping is active (unscaling happens) but never shortens the gradient
SCALE = 2.0 ** 12


def make_accelerator(fp16: bool, accum: int, init_scale: float = SCALE, growth_interval: int = 10_000) -> Accelerator:
    reset_accelerate()
    acc = Accelerator(cpu=True, mixed_precision="fp16" if fp16 else "no", gradient_accumulation_steps=accum)
    if fp16:   # accelerate's GPU fp16 setup, with torch's CPU GradScaler
        acc.native_amp = True
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
    return acc


class TwoModels(Method):
    """Two independent regressions, each with its own optimiser, stepped one after the other
    (the pattern of OSEDiff's generator / regulariser and of a GAN's G / D)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.networks["a"] = torch.nn.Linear(4, 1)
        self.networks["b"] = torch.nn.Linear(4, 1)


def run(fp16: bool, clip_with_accelerate: bool = False, accum: int = 2, steps: int = 3, **scaler) -> dict:
    acc = make_accelerator(fp16, accum, **scaler)
    method = TwoModels()
    nets = {n: acc.prepare(m) for n, m in method.networks.items()}
    opts = {n: acc.prepare(torch.optim.SGD(m.parameters(), lr=0.1)) for n, m in nets.items()}
    method.networks = nets
    if not clip_with_accelerate:
        method.attach(acc, opts, CLIP)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps * accum):
        x, y = torch.randn(8, 4, generator=gen), torch.randn(8, 1, generator=gen)
        with acc.accumulate(*nets.values()):
            for name in ("a", "b"):
                loss = F.mse_loss(nets[name](x), y)
                if clip_with_accelerate:   # what osir did before: accelerate.clip_grad_norm_
                    acc.backward(loss)
                    if acc.sync_gradients:
                        acc.clip_grad_norm_(list(nets[name].parameters()), CLIP)
                    opts[name].step()
                    opts[name].zero_grad(set_to_none=True)
                else:
                    method.optimize(name, loss)
    return {n: copy.deepcopy(acc.unwrap_model(m).state_dict()) for n, m in nets.items()}


def max_diff(a: dict, b: dict) -> dict[str, float]:
    return {n: max(float((a[n][k] - b[n][k]).abs().max()) for k in a[n]) for n in a}


FP16_TOL = 5e-4      # fp16 autocast arithmetic (weights ~0.2; measured 6e-5)


def test_two_optimisers_fp16_scaler_and_accumulation_match_fp32():
    reference = run(fp16=False)
    scaled = run(fp16=True)
    assert all(d < FP16_TOL for d in max_diff(reference, scaled).values()), max_diff(reference, scaled)


def test_a_loss_scale_that_changes_every_step_still_matches_fp32():
    """growth_interval 1: the scale doubles after every optimiser step.  One scaler shared by both
    optimisers (accelerate's) would unscale b's first micro-batch with a scale a's step changed;
    each optimiser owns its scaler in osir."""
    reference = run(fp16=False)
    growing = run(fp16=True, init_scale=16.0, growth_interval=1)
    assert all(d < FP16_TOL for d in max_diff(reference, growing).values()), max_diff(reference, growing)


def test_accelerate_clip_grad_norm_unscales_the_other_optimiser_out_of_turn():
    """Why Method.optimize does not call accelerate's clip_grad_norm_: it unscales every prepared
    optimiser, so the second optimiser's gradients, still accumulating, are divided by the scale
    once too often and its update is wrong (no error is raised).  If accelerate fixes this, the
    test fails and the workaround can go."""
    reference = run(fp16=False)
    accelerate_path = run(fp16=True, clip_with_accelerate=True)
    diff = max_diff(reference, accelerate_path)
    assert diff["a"] < FP16_TOL and diff["b"] > 1e-2, diff     # measured: a 6e-5, b 0.08
    no_accum = max_diff(run(fp16=False, accum=1), run(fp16=True, clip_with_accelerate=True, accum=1))
    assert max(no_accum.values()) < FP16_TOL, no_accum        # right without accumulation


def test_accumulating_k_micro_batches_equals_one_k_times_larger_batch(tmp_path):
    """A deterministic method (plain L1, fixed synthetic pairs): batch 4 x 1 == batch 2 x 2 micro-batches."""
    weights = {}
    for name, batch, accum in (("large", 4, 1), ("accum", 2, 2)):
        opt = tiny_options(tmp_path, **{"train.total_iter": 3, "train.ema": {}, "val.freq": 100,
                                        "train.grad_accum_steps": accum, "datasets.train.batch_size": batch,
                                        "datasets.train.use_flip": False})
        opt.update(name=name, imports=["tests.plugins.l1_method"],
                   method={"type": "PlainL1", "network": {"type": "TinyConvNet", "channels": 4}})
        reset_accelerate()
        Trainer(load_options(write_yaml(tmp_path / f"{name}.yml", opt))).train()
        weights[name] = load_file(tmp_path / "experiments" / name / "models" / "net_g_3.safetensors")
    diffs = [float((weights["large"][k] - weights["accum"][k]).abs().max()) for k in weights["large"]]
    assert max(diffs) < 1e-6, diffs


@pytest.mark.parametrize("clip", [None, 0.05])
def test_gradient_clipping_bounds_the_stepped_gradient(clip):
    """With clipping, the gradient an optimiser steps with has norm <= grad_clip (SGD: update / lr)."""
    acc = make_accelerator(True, 1)
    method = TwoModels()
    net = acc.prepare(method.networks["a"])
    before = copy.deepcopy(net.state_dict())
    opt = acc.prepare(torch.optim.SGD(net.parameters(), lr=1.0))
    method.networks, method.grad_clip = {"a": net}, clip
    method.attach(acc, {"a": opt}, clip)
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(2)), torch.randn(8, 1)
    method.optimize("a", F.mse_loss(net(x), y))
    step = torch.cat([(before[k] - v).flatten() for k, v in net.state_dict().items()])
    if clip is None:
        assert float(step.norm()) > 0.5          # the raw gradient is much longer than the clip
    else:
        assert abs(float(step.norm()) - clip) < 1e-4
