"""What a method can declare, and the engine honours (README: "What a method can declare")."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from osir.core import checkpoint as ckpt
from osir.engine.ema import ParameterEMA
from osir.core.method import Method
from osir.engine.trainer import Trainer, build_optimizers
from osir.engine.validation import evaluation_mode
from osir.core.options import load_options
from osir.core.registry import METHODS, OptionsError
from tests.conftest import refiner_options, tiny_options, write_images, write_yaml

ROOT = Path(__file__).resolve().parents[1]


def trainer_for(tmp_path, opt, name="o.yml", overrides=()):
    return Trainer(load_options(write_yaml(tmp_path / name, opt), list(overrides)))


# -- optimisers over parameter groups ---------------------------------------------------------
def test_one_optimiser_steps_two_networks_and_ema_covers_one(tmp_path):
    trainer = trainer_for(tmp_path, refiner_options(tmp_path))
    method = trainer.method
    stepped = {id(p) for g in trainer.optimizers["g"].param_groups for p in g["params"]}
    for name in ("body", "head"):
        assert all(id(p) in stepped for p in method.net(name).parameters())
    assert not any(id(p) in stepped for p in method.networks["vae"].parameters())
    assert set(trainer.ema) == {"body"}
    before = {n: {k: v.clone() for k, v in method.net(n).state_dict().items()} for n in ("body", "head", "vae")}
    trainer.train()
    changed = {n: any(not torch.equal(before[n][k], v) for k, v in method.net(n).state_dict().items()) for n in before}
    assert changed == {"body": True, "head": True, "vae": False}
    models = sorted(p.name for p in (tmp_path / "experiments" / "tiny" / "models").iterdir())
    assert models == ["net_body_3.safetensors", "net_body_6.safetensors", "net_body_ema_3.safetensors",
                      "net_body_ema_6.safetensors", "net_head_3.safetensors", "net_head_6.safetensors"]


@pytest.mark.parametrize("optimizers, message", [
    ({"g": {"type": "Adam", "params": ["body"]}},
     r"network 'head' has trainable parameters that no optimiser steps \(weight, bias\)"),
    ({"g": {"type": "Adam", "params": ["body", "head"]}, "h": {"type": "Adam", "params": ["head"]}},
     r"train\.optimizers\.h\.params: group 'head' overlaps train\.optimizers\.g"),
    ({"g": {"type": "Adam", "params": ["body", "haed"]}},
     r"train\.optimizers\.g\.params: unknown parameter group 'haed' \(did you mean 'head'\?\); groups of "
     r"LatentRefiner: body, head, vae"),
    ({"g": {"type": "Adam", "params": ["vae"]}}, r"train\.optimizers\.g: groups \['vae'\] hold no trainable"),
])
def test_optimiser_group_errors_name_the_key(tmp_path, optimizers, message):
    opt = refiner_options(tmp_path, **{"train.optimizers": optimizers, "train.ema": {}})
    with pytest.raises(OptionsError, match=message):
        trainer_for(tmp_path, opt)


def test_weight_decay_exclusion_follows_the_method_declaration():
    class Net(Method):
        def __init__(self):
            super().__init__()
            self.networks["g"] = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(4))
            self.networks["g"].logit_scale = nn.Parameter(torch.ones([]))
    method = Net()
    spec = {"type": "AdamW", "lr": 1e-3, "weight_decay": 0.1, "exclude_from_weight_decay": True}
    optimizers, trained = build_optimizers(method, {"g": spec})
    groups = optimizers["g"].param_groups
    names = {id(p): n for n, p in method.networks["g"].named_parameters()}
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [names[id(p)] for p in groups[0]["params"]] == ["0.weight"]
    assert sorted(names[id(p)] for p in groups[1]["params"]) == ["0.bias", "1.bias", "1.weight", "logit_scale"]
    assert sorted(trained["g"]) == sorted(names.values())


def test_optimiser_options_are_checked_against_the_real_signature(tmp_path):
    base = write_yaml(tmp_path / "o.yml", tiny_options(tmp_path))
    with pytest.raises(OptionsError, match=r"train\.optimizers\.g\.beta: unknown key \(did you mean 'betas'\?\)"):
        load_options(base, ["train.optimizers.g.beta=[0.9, 0.9]"])
    with pytest.raises(OptionsError, match=r"train\.optimizers\.g\.lr: 'fast' is not a valid"):
        load_options(base, ["train.optimizers.g.lr=fast"])
    lion = load_options(base, ["train.optimizers.g.type=Lion"])["train"]["optimizers"]["g"]
    assert lion["betas"] == [0.9, 0.99] and lion["lr"] == 1e-3
    adam = load_options(base, ["train.optimizers.g.lr=2e-4"])["train"]["optimizers"]["g"]
    assert adam["lr"] == 2e-4 and adam["betas"] == [0.9, 0.999] and adam["eps"] == 1e-8
    with pytest.raises(OptionsError, match=r"train\.optimizers\.g: Invalid beta parameter at index 0: 1\.5"):
        trainer_for(tmp_path, tiny_options(tmp_path), overrides=["train.optimizers.g.betas=[1.5, 0.9]"])


# -- EMA ------------------------------------------------------------------------------------------
def test_parameter_ema_matches_the_recursion_and_swaps_without_copying():
    p = nn.Parameter(torch.zeros(3))
    ema = ParameterEMA({"p": p}, decay=0.9, update_every=2)
    expected, values = torch.zeros(3), []
    for it in range(1, 7):
        with torch.no_grad():
            p.add_(1.0)
        ema.update(it)
        if it % 2 == 0:
            expected = 0.9 * expected + 0.1 * p.detach()
        values.append(p.detach().clone())
    assert torch.allclose(ema.shadow[0], expected) and ema.num_updates == 3
    storage = p.data.data_ptr()
    with ema.swapped():
        assert torch.allclose(p, expected) and p.data.data_ptr() != storage
    assert torch.equal(p, values[-1]) and p.data.data_ptr() == storage


def test_ema_of_a_partly_frozen_network_holds_only_its_trained_tensors(tmp_path):
    opt = refiner_options(tmp_path)
    trainer = trainer_for(tmp_path, opt)
    body = trainer.method.net("body")
    body[0].weight.requires_grad_(False)   # frozen *after* the optimisers were built: the policy stays
    assert trainer.ema["body"].names == ["0.weight", "0.bias"]
    opt["train"]["ema"] = {"vae": {"decay": 0.9}}
    with pytest.raises(OptionsError, match=r"train\.ema\.vae: network 'vae' is frozen"):
        trainer_for(tmp_path, opt, "p.yml")


# -- checkpoints ----------------------------------------------------------------------------------
class PartlyFrozen(Method):
    """A network with frozen base weights and a trained adapter (the LoRA pattern)."""

    def __init__(self):
        super().__init__()
        net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1))
        net[0].requires_grad_(False)
        self.networks["g"] = net

    def training_step(self, batch):
        loss = (self.networks["g"](batch["lq"]) - batch["gt"]).abs().mean()
        self.optimize("g", loss)
        return {"l_pix": loss.item()}

    def restore(self, batch, generator=None):
        return self.net("g")(batch["lq"])


METHODS.register(PartlyFrozen)


def partly_frozen_options(tmp_path, **overrides):
    opt = tiny_options(tmp_path, **{"logger.print_freq": 1, **overrides})
    opt["method"] = {"type": "PartlyFrozen"}
    return opt


def test_partly_frozen_network_saves_and_resumes_only_its_trained_tensors(tmp_path):
    from tests.test_engine import losses_of
    opt = partly_frozen_options(tmp_path, **{"train.total_iter": 6})
    trainer_for(tmp_path, {**opt, "name": "straight"}).train()
    models = tmp_path / "experiments" / "straight" / "models"
    assert sorted(load_file(models / "net_g_6.safetensors")) == ["1.bias", "1.weight"]
    assert sorted(load_file(models / "net_g_ema_6.safetensors")) == ["1.bias", "1.weight"]
    part = trainer_for(tmp_path, {**opt, "name": "resumed"}, "r.yml", ["train.total_iter=3"])
    assert part.ema["g"].names == ["1.weight", "1.bias"]            # the frozen conv has no EMA copy
    part.train()
    Trainer(load_options(tmp_path / "r.yml"), auto_resume=True).train()
    resumed = tmp_path / "experiments" / "resumed"
    assert losses_of(resumed, "l_pix") == losses_of(tmp_path / "experiments" / "straight", "l_pix")
    assert len(losses_of(resumed, "l_pix")) == 6
    for name in ("net_g_6", "net_g_ema_6"):
        a, b = load_file(models / f"{name}.safetensors"), load_file(resumed / "models" / f"{name}.safetensors")
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(ckpt.CheckpointError, match=r"net_g_3\.safetensors' does not fit network 'g': 1 missing keys: 1\.bias"):
        save_file({"1.weight": torch.zeros(3, 3, 1, 1)}, str(resumed / "models" / "net_g_3.safetensors"))
        trainer_for(tmp_path, {**opt, "name": "resumed"}, "r.yml",
                    [f"path.resume_state={resumed / 'training_states' / '3.state'}"])


def test_auto_resume_skips_a_corrupt_newest_checkpoint_and_repeats_the_losses(tmp_path):
    from tests.test_engine import losses_of
    opt = tiny_options(tmp_path, **{"logger.print_freq": 1, "logger.checkpoint_freq": 2, "train.total_iter": 6})
    trainer_for(tmp_path, {**opt, "name": "straight"}).train()
    trainer_for(tmp_path, {**opt, "name": "crashed"}, "c.yml", ["train.total_iter=4"]).train()
    exp = tmp_path / "experiments" / "crashed"
    weights = exp / "models" / "net_g_4.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])            # a crash while writing iteration 4
    resumed = Trainer(load_options(tmp_path / "c.yml"), auto_resume=True)
    assert resumed.start_iter == 2
    log = "".join(p.read_text() for p in exp.glob("train_*.log"))
    assert "auto_resume: skipping 4.state: cannot read" in log and "net_g_4.safetensors" in log
    resumed.train()
    straight = losses_of(tmp_path / "experiments" / "straight")
    assert losses_of(exp) == straight[:4] + straight[2:]          # 1-4, then 3-6 again after the resume


def test_auto_resume_refuses_rather_than_archives_when_no_state_fits(tmp_path):
    opt = tiny_options(tmp_path, **{"train.total_iter": 3})
    trainer_for(tmp_path, opt).train()
    with pytest.raises(ckpt.CheckpointError, match=r"--auto_resume: no complete training state in .* fits these "
                                                   r"options \(auto_resume: skipping 3\.state: .*shape mismatches"):
        Trainer(load_options(write_yaml(tmp_path / "o.yml", opt), ["method.network.nf=8"]), auto_resume=True)
    assert not list((tmp_path / "experiments").glob("tiny_archived_*"))


def test_ema_update_every_zero_is_an_options_error_before_any_work(tmp_path):
    with pytest.raises(OptionsError, match=r"train\.ema\.g\.update_every: must be greater than 0, got 0"):
        trainer_for(tmp_path, tiny_options(tmp_path), overrides=["train.ema.g.update_every=0"])
    assert not (tmp_path / "experiments").exists()


def test_an_explicit_resume_state_that_is_missing_or_incomplete_names_the_file(tmp_path):
    opt = tiny_options(tmp_path, **{"train.total_iter": 3})
    trainer_for(tmp_path, opt).train()
    exp = tmp_path / "experiments" / "tiny"
    (exp / "models" / "net_g_ema_3.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"incomplete: '.*net_g_ema_3\.safetensors' is missing"):
        trainer_for(tmp_path, opt, overrides=[f"path.resume_state={exp / 'training_states' / '3.state'}"])
    # a missing state file is named by the preflight (issue 27), before anything is built
    with pytest.raises(OptionsError, match=r"path\.resume_state: file '.*7\.state' not found"):
        trainer_for(tmp_path, opt, overrides=[f"path.resume_state={exp / 'training_states' / '7.state'}"])
    assert exp.is_dir() and not list(tmp_path.glob("experiments/tiny_archived_*"))


def test_atomic_write_fsyncs_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    ckpt.save_state_dict({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    assert calls == ["fsync", "replace", "fsync"]          # file, rename, folder
    assert torch.equal(load_file(tmp_path / "w.safetensors")["w"], torch.ones(2))


def test_state_dicts_with_aliased_tensors_save_and_load_on_cpu(tmp_path):
    """open_clip-style aliasing: two keys share one tensor (DA-CLIP's release keeps visual.* twice)."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = nn.Linear(4, 4)
            self.controller = nn.Module()
            self.controller.visual = self.visual           # the same module under two names
    net = Tied()
    state = net.state_dict()
    assert state["visual.weight"].data_ptr() == state["controller.visual.weight"].data_ptr()
    with pytest.raises(RuntimeError, match="share memory"):
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp_path / "plain.safetensors"))
    ckpt.save_network(net, tmp_path / "tied.safetensors")
    other = Tied()
    ckpt.load_network(other, tmp_path / "tied.safetensors")
    assert torch.equal(other.visual.weight, net.visual.weight) and other.controller.visual is other.visual


# -- setup hook, DDP kwargs, pretrained folders -------------------------------------------------
def test_setup_runs_before_the_ema_copies_and_may_leave_submodules_in_eval(tmp_path):
    from tests.plugins.latent_refiner import LatentRefiner

    class Refined(LatentRefiner):
        def setup(self, device, mixed_precision="no"):
            super().setup(device, mixed_precision)
            self.networks["body"].double()          # visible in the EMA copies only if they come after
            self.networks["body"][1].eval()         # a submodule the method wants in eval while training
    METHODS.register(Refined)
    opt = refiner_options(tmp_path)
    opt["method"]["type"] = "Refined"
    trainer = trainer_for(tmp_path, opt)
    assert trainer.ema["body"].shadow[0].dtype == torch.float64
    body = trainer.method.net("body")
    assert body.training and not body[1].training


def test_setup_casts_the_frozen_folder_before_prepare_and_ddp_kwargs_pass_through(tmp_path):
    opt = refiner_options(tmp_path, **{"train.ddp": {"find_unused_parameters": True, "static_graph": False},
                                       "train.channels_last": True})
    trainer = trainer_for(tmp_path, opt)
    vae = trainer.method.networks["vae"]
    assert vae.dtype == torch.bfloat16 and not vae.training
    assert all(p.dtype == torch.float32 for p in trainer.method.net("body").parameters())   # trained: fp32 masters
    assert trainer.ema["body"].shadow[0].dtype == torch.float32
    assert trainer.accelerator.ddp_handler.find_unused_parameters is True
    assert trainer.method.net("body")[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_path_pretrained_can_name_a_diffusers_folder(tmp_path):
    from diffusers import AutoencoderKL
    from tests.conftest import tiny_vae_folder
    other = tmp_path / "other_vae"
    tiny_vae_folder(other)
    vae = AutoencoderKL.from_pretrained(other)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.5)
    vae.save_pretrained(other)
    opt = refiner_options(tmp_path, **{"path.pretrained": {"vae": str(other)}, "train.mixed_precision": "no"})
    trainer = trainer_for(tmp_path, opt)
    loaded = trainer.method.networks["vae"].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in vae.state_dict().items())
    opt["path"]["pretrained"] = {"body": str(other)}
    with pytest.raises(ckpt.CheckpointError, match=r"path\.pretrained\.body: '.*other_vae' is a folder, but "
                                                   r"network 'body' \(Sequential\) loads from a weights file"):
        trainer_for(tmp_path, opt, "p.yml")


def test_validation_uses_ema_weights_unless_told_otherwise(tmp_path):
    opt = tiny_options(tmp_path, **{"train.total_iter": 4, "train.ema": {"g": {"decay": 0.99}}})
    ema = trainer_for(tmp_path, {**opt, "name": "ema"}).train()["val"]["val"]["psnr"]["restored"]
    raw = trainer_for(tmp_path, {**opt, "name": "raw", "val": {"freq": 100, "max_images": 1, "use_ema": False}},
                      "raw.yml").train()["val"]["val"]["psnr"]["restored"]
    untrained = tiny_options(tmp_path, **{"train.total_iter": 4, "train.optimizers.g.lr": 1e-12, "train.ema": {}})
    initial = trainer_for(tmp_path, {**untrained, "name": "init"}, "init.yml").train()["val"]["val"]["psnr"]["restored"]
    assert ema != raw and abs(ema - initial) < abs(raw - initial)       # EMA (decay 0.99) ~ the initial weights


def test_pretrained_folder_is_hashed_in_provenance_without_a_false_warning(tmp_path):
    opt = refiner_options(tmp_path)
    train_file = write_yaml(tmp_path / "train.yml", opt)
    trainer = Trainer(load_options(train_file))
    trainer.train()
    models = tmp_path / "experiments" / "tiny" / "models"
    test_file = write_yaml(tmp_path / "test.yml", {
        "_base_": "train.yml", "name": "refiner_test",
        "path": {"pretrained": {"body": str(models / "net_body_ema_6.safetensors"),
                                "head": str(models / "net_head_6.safetensors")}},
        "datasets": {"train": None}})
    done = subprocess.run([sys.executable, "-m", "osir.test", "-opt", str(test_file)], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "no weights" not in done.stderr
    result = json.loads((tmp_path / "results" / "refiner_test" / "val" / "metrics.json").read_text())
    assert result["checkpoints"]["vae"]["sha256"] == ckpt.sha256(tmp_path / "vae")
    assert set(result["checkpoints"]) == {"vae", "body", "head"}
    assert ckpt.sha256(tmp_path / "vae") != ckpt.sha256(tmp_path / "vae" / "config.json")


# -- evaluation done by the engine ---------------------------------------------------------------
class Probe(Method):
    """Records what restore sees; optionally fails."""
    seen: list = []

    def __init__(self, fail: bool = False):
        super().__init__()
        self.networks["g"] = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Dropout(0.5))
        self.fail = fail

    def training_step(self, batch):
        loss = (self.networks["g"](batch["lq"]) - batch["gt"]).abs().mean()
        self.optimize("g", loss)
        return {"l_pix": loss.item()}

    def restore(self, batch, generator=None):
        net = self.net("g")
        Probe.seen.append({"grad": torch.is_grad_enabled(), "training": net.training or net[1].training,
                           "keys": sorted(batch), "shape": tuple(batch["lq"].shape)})
        if self.fail:
            raise RuntimeError("restore failed")
        return net(batch["lq"])


METHODS.register(Probe)


def test_validation_runs_in_eval_under_no_grad_restores_modes_and_gets_the_whole_batch(tmp_path):
    opt = tiny_options(tmp_path, **{"train.total_iter": 1})
    opt["method"] = {"type": "Probe"}
    opt["datasets"]["val"]["batch_size"] = 2
    Probe.seen = []
    trainer = trainer_for(tmp_path, opt)
    trainer.train()
    assert Probe.seen and all(not s["grad"] and not s["training"] for s in Probe.seen)
    assert Probe.seen[0]["keys"] == ["degradation", "gt", "gt_path", "lq", "lq_path", "name"]
    assert Probe.seen[0]["shape"] == (1, 3, 32, 32)         # val.max_images 1
    method = trainer.method
    method.networks["g"].train()
    method.net("g")[1].eval()                                  # a submodule deliberately in eval
    method.fail = True
    with pytest.raises(RuntimeError, match="restore failed"):
        trainer.validate(1)
    assert method.net("g").training and not method.net("g")[1].training and torch.is_grad_enabled()


def test_a_method_can_define_its_own_evaluation(tmp_path):
    class Retrieval(Probe):
        def evaluate(self, dataset, batch_size=1):
            return {"accuracy": 0.75, "count": float(len(dataset))}
    METHODS.register(Retrieval)
    opt = tiny_options(tmp_path, **{"train.total_iter": 1})
    opt["method"] = {"type": "Retrieval"}
    result = trainer_for(tmp_path, opt).train()
    assert result["val"]["val"] == {"accuracy": {"value": 0.75}, "count": {"value": 4.0}}


def test_test_sets_restore_in_batches_with_the_same_outputs(tmp_path):
    from osir.engine.validation import iterate
    from osir.engine.trainer import build_dataset
    import tests.plugins.l1_method  # noqa: F401  (registers PlainL1)
    opt = tiny_options(tmp_path)
    dataset = build_dataset(opt["datasets"]["val"], "datasets.val")
    method = METHODS.build({"type": "PlainL1", "network": {"type": "TinyConvNet", "channels": 4}})
    with evaluation_mode(method):
        one = [r for _, r, _, _ in iterate(method, dataset, None, "cpu", batch_size=1)]
        three = [r for _, r, _, _ in iterate(method, dataset, None, "cpu", batch_size=3)]
    assert len(one) == len(three) == 4 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(one, three))
    write_images(tmp_path / "mixed", 1, (24, 24))
    write_images(tmp_path / "mixed" / "sub", 1, (32, 32))
    mixed = build_dataset({"type": "SingleImageDataset", "dataroot_lq": str(tmp_path / "mixed")}, "d")
    with pytest.raises(ValueError, match=r"cannot batch images of different sizes: '.*img0\.png' is 24x24, "
                                         r"'.*sub/img0\.png' is 32x32; set the test set's batch_size to 1"):
        list(iterate(method, mixed, None, "cpu", batch_size=2))


def test_outputs_keep_the_path_relative_to_the_dataset_root(tmp_path):
    from tests.test_engine import run_train
    lq = tmp_path / "lq"
    write_images(lq / "a", 1, (16, 16), seed=1)
    write_images(lq / "b", 1, (16, 16), seed=2)
    opt = tiny_options(tmp_path)
    train_file = write_yaml(tmp_path / "train.yml", opt)
    assert run_train(train_file, "--set", "train.total_iter=1").returncode == 0
    test_file = write_yaml(tmp_path / "test.yml", {
        "_base_": "train.yml", "name": "rel", "datasets": {"train": None, "val": None,
                                                           "real": {"type": "SingleImageDataset", "dataroot_lq": str(lq)}},
        "path": {"pretrained": {"g": str(tmp_path / "experiments" / "tiny" / "models" / "net_g_ema_1.safetensors")}}})
    done = subprocess.run([sys.executable, "-m", "osir.test", "-opt", str(test_file)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "results" / "rel" / "real"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a/img0.png", "b/img0.png"]
    a, b = (load_png(out / "a" / "img0.png"), load_png(out / "b" / "img0.png"))
    assert not torch.equal(a, b)


def load_png(path):
    from osir.data.io import img2tensor, read_image
    return img2tensor(read_image(path))


# -- options checked before the experiment folder is touched ---------------------------------------
def test_a_typo_found_by_the_trainer_leaves_the_old_experiment_in_place(tmp_path):
    opt = tiny_options(tmp_path, **{"train.total_iter": 1})
    trainer_for(tmp_path, opt).train()
    exp = tmp_path / "experiments" / "tiny"
    before = sorted(p.relative_to(exp).as_posix() for p in exp.rglob("*"))
    for bad in (["train.optimizers.g.params=[gg]"], ["train.ema.d.decay=0.9"], ["train.optimizers.g.betas=[2, 0.9]"]):
        with pytest.raises(OptionsError):
            trainer_for(tmp_path, opt, overrides=bad)
    assert not list((tmp_path / "experiments").glob("tiny_archived_*"))
    assert sorted(p.relative_to(exp).as_posix() for p in exp.rglob("*")) == before


# -- schedulers -----------------------------------------------------------------------------------
def test_warmup_schedulers_follow_their_closed_forms():
    import math
    from osir.core.registry import SCHEDULERS
    lrs = {}
    for spec in ({"type": "WarmupCosine", "warmup_iters": 4, "total_iters": 12, "min_lr_ratio": 0.1},
                 {"type": "WarmupConstant", "warmup_iters": 4}):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
        sched = SCHEDULERS.build(spec, optimizer=opt)
        seen = []
        for _ in range(15):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        lrs[spec["type"]] = seen
    # open_clip's cosine_lr: warmup base * (step + 1) / warmup, then 0.5 * (1 + cos(pi * e / es)) * base
    cosine = [2.0 * (i + 1) / 4 if i < 4 else
              2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i - 4, 8) / 8))) for i in range(15)]
    assert lrs["WarmupCosine"] == pytest.approx(cosine, abs=1e-12)
    assert lrs["WarmupCosine"][-3:] == pytest.approx([0.2, 0.2, 0.2])          # stays at the floor
    assert lrs["WarmupConstant"] == pytest.approx([0.5, 1.0, 1.5] + [2.0] * 12)


# -- distributed --------------------------------------------------------------------------------------
def test_fsdp_is_selected_by_an_accelerate_config_file(tmp_path):
    from osir.engine.distributed import fsdp_plugin
    config = tmp_path / "fsdp.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_processes: 8\n"
                      "fsdp_config:\n  fsdp_version: 2\n  fsdp_auto_wrap_policy: SIZE_BASED_WRAP\n"
                      "  fsdp_min_num_params: 1000000\n  fsdp_offload_params: false\n"
                      "  fsdp_state_dict_type: FULL_STATE_DICT\n")
    plugin = fsdp_plugin(str(config))
    assert plugin.fsdp_version == 2 and plugin.min_num_params == 1_000_000
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    config.write_text("distributed_type: FSDP\nfsdp_config:\n  fsdp_sharding_stratgy: FULL_SHARD\n")
    with pytest.raises(OptionsError, match=r"fsdp_config\.fsdp_sharding_stratgy: unknown FSDP setting "
                                           r"\(did you mean 'sharding_strategy'\?\)"):
        fsdp_plugin(str(config))
    config.write_text("distributed_type: DEEPSPEED\n")
    with pytest.raises(OptionsError, match="distributed_type DEEPSPEED is not supported"):
        fsdp_plugin(str(config))
    shipped = fsdp_plugin(str(ROOT / "options" / "accelerate" / "fsdp.yaml"))
    assert shipped.fsdp_version == 2 and shipped.min_num_params == 1_000_000
    (tmp_path / "ddp.yaml").write_text("distributed_type: MULTI_GPU\nnum_processes: 2\n")
    assert fsdp_plugin(str(tmp_path / "ddp.yaml")) is None


# -- the registry and lazy loading ----------------------------------------------------------------------
def test_registry_imports_nothing_of_osir():
    import ast
    tree = ast.parse((ROOT / "osir" / "core" / "registry.py").read_text())
    imported = [n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names]
    assert not [m for m in imported if m and m.startswith("osir")]


def test_scoring_and_irsde_do_not_import_diffusers_or_open_clip(tmp_path):
    write_images(tmp_path / "scored", 2, (128, 128))
    write_images(tmp_path / "scored_gt", 2, (128, 128))
    probe = ("import sys\n"
             "from osir.metrics.__main__ import main\n"
             f"assert main(['--restored', r'{tmp_path / 'scored'}', '--gt', r'{tmp_path / 'scored_gt'}', '--output', r'{tmp_path}']) == 0\n"
             "from osir.core.options import load_options\n"
             f"load_options(r'{write_yaml(tmp_path / 'o.yml', tiny_options(tmp_path))}')\n"
             "heavy = [m for m in ('diffusers', 'open_clip', 'peft', 'transformers', 'osir.methods.realesrgan')\n"
             "         if m in sys.modules]\n"
             "print('HEAVY', heavy)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout


def test_a_method_whose_dependency_is_missing_is_reported_when_used(tmp_path, monkeypatch):
    from osir.core.registry import Registry
    (tmp_path / "needs_missing.py").write_text("import not_a_real_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("method", "methods_test")
    reg.register_lazy("Fancy", "needs_missing")
    assert "Fancy" in reg.names()
    with pytest.raises(OptionsError, match=r"method\.type: method 'Fancy' needs the package "
                                           r"'not_a_real_package_xyz', which is not installed "
                                           r"\(pip install not_a_real_package_xyz\)"):
        reg.get("Fancy", "method.type")


def test_a_package_outside_osir_registers_a_method_through_its_entry_points(tmp_path, monkeypatch):
    """An installed distribution (here: a dist-info folder on sys.path) declaring
    ``osir.methods: OutsideL1 = outside_pkg``; no ``imports:`` in the options."""
    from osir.core.registry import discover
    (tmp_path / "outside_pkg.py").write_text(
        "from tests.plugins.l1_method import PlainL1\n"
        "from osir.core.registry import METHODS\n"
        "@METHODS.register()\n"
        "class OutsideL1(PlainL1):\n"
        "    pass\n")
    dist = tmp_path / "outside_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[osir.methods]\nOutsideL1 = outside_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    discover(refresh=True)
    opt = tiny_options(tmp_path, **{"train.total_iter": 2, "train.ema": {}})
    opt["method"] = {"type": "OutsideL1", "network": {"type": "TinyConvNet", "channels": 4}}
    assert "outside_pkg" not in sys.modules
    trainer = trainer_for(tmp_path, opt)
    assert type(trainer.method).__name__ == "OutsideL1" and "outside_pkg" in sys.modules
