"""Engine: experiment layout, resume equality, DDP, train.py / test.py end to end."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from osir.engine.trainer import Trainer
from osir.core.options import load_options
from tests.conftest import tiny_options, train_on_two_cpu_processes, write_images, write_yaml

ROOT = Path(__file__).resolve().parents[1]


def losses_of(log_dir: Path, key: str = "l_ml") -> list[float]:
    """Per-iteration losses from the experiment log (print_freq 1)."""
    out = []
    for log in sorted(log_dir.glob("train_*.log")):
        for line in log.read_text().splitlines():
            if f" {key} " in line:
                out.append(float(line.split(f" {key} ")[1].split()[0]))
    return out


def run_train(opt_file, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "osir" / "train.py"), "-opt", str(opt_file), *extra],
                          capture_output=True, text=True, env=env, cwd=opt_file.parent)


def test_experiment_layout_and_resume_gives_the_same_losses(tmp_path):
    """Run 6 iterations straight; run 3, 'crash', --auto_resume to 6: same losses and weights."""
    opt = tiny_options(tmp_path, **{"logger.print_freq": 1, "train.total_iter": 6})
    straight = load_options(write_yaml(tmp_path / "a.yml", {**opt, "name": "straight"}))
    Trainer(straight).train()
    exp = tmp_path / "experiments" / "straight"
    assert (exp / "options.yml").exists() and list(exp.glob("train_straight_*.log"))
    assert (exp / "training_states" / "3.state").exists() and (exp / "models" / "net_g_6.safetensors").exists()
    assert (exp / "models" / "net_g_ema_6.safetensors").exists() and (exp / "visualization").is_dir()

    part = load_options(write_yaml(tmp_path / "b.yml", {**opt, "name": "resumed"}), ["train.total_iter=3"])
    Trainer(part).train()
    rest = load_options(tmp_path / "b.yml")
    Trainer(rest, auto_resume=True).train()
    res = tmp_path / "experiments" / "resumed"
    assert losses_of(exp) == losses_of(res) and len(losses_of(exp)) == 6
    for name in ("net_g_6", "net_g_ema_6"):
        a, b = load_file(exp / "models" / f"{name}.safetensors"), load_file(res / "models" / f"{name}.safetensors")
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    state = torch.load(res / "training_states" / "6.state", weights_only=True)
    assert state["iter"] == 6 and "g" in state["optimizers"]


def test_new_run_archives_an_existing_experiment(tmp_path):
    opt = load_options(write_yaml(tmp_path / "a.yml", tiny_options(tmp_path)), ["train.total_iter=1"])
    Trainer(opt).train()
    Trainer(opt).train()
    assert len(list((tmp_path / "experiments").glob("tiny_archived_*"))) == 1


def test_optimizer_for_unknown_network_is_an_options_error(tmp_path):
    opt = load_options(write_yaml(tmp_path / "a.yml", tiny_options(tmp_path)), ["train.optimizers.d.type=Adam"])
    from osir.core.registry import OptionsError
    with pytest.raises(OptionsError, match=r"train\.optimizers\.d \(no params: the optimiser's name\): unknown "
                                           r"parameter group 'd'; groups of IRSDE: g"):
        Trainer(opt)


def test_train_and_test_scripts_end_to_end(tmp_path):
    opt = tiny_options(tmp_path)
    train_file = write_yaml(tmp_path / "train.yml", opt)
    done = run_train(train_file, "--set", "train.total_iter=2", "val.freq=1")
    assert done.returncode == 0, done.stderr
    assert "[val] psnr: input" in done.stdout
    weights = tmp_path / "experiments" / "tiny" / "models" / "net_g_ema_2.safetensors"
    lq = write_images(tmp_path / "lq_only", 2, (24, 20), seed=5)
    test_file = write_yaml(tmp_path / "test.yml", {
        "_base_": "train.yml", "name": "tiny_test",
        "path": {"pretrained": {"g": str(weights)}},
        "datasets": {"train": None, "val": None,
                     "noisy": {**opt["datasets"]["val"]},
                     "real": {"type": "SingleImageDataset", "dataroot_lq": str(lq)}},
        "tile": {"size": 16, "overlap": 4}})
    assert sorted(load_options(test_file)["datasets"]) == ["noisy", "real"]   # null drops the base's sets
    done = subprocess.run([sys.executable, "-m", "osir.test", "-opt", str(test_file)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "results" / "tiny_test"
    assert sorted(p.name for p in (out / "noisy").glob("*.png")) == ["img0.png", "img1.png", "img2.png", "img3.png"]
    assert sorted(p.name for p in (out / "real").glob("*.png")) == ["img0.png", "img1.png"]
    result = json.loads((out / "noisy" / "metrics.json").read_text())
    assert result["count"] == 4 and "psnr" in result["mean"] and result["seed"] == 3
    assert result["checkpoints"]["g"]["sha256"] and result["pyiqa"] and result["metrics"]["psnr"]["test_y_channel"] is False
    assert (out / "noisy" / "metrics.csv").read_text().splitlines()[-1].startswith("mean,")
    assert "noisy" in done.stdout and "psnr" in done.stdout


def test_bad_options_exit_with_a_message(tmp_path):
    f = write_yaml(tmp_path / "o.yml", tiny_options(tmp_path))
    done = run_train(f, "--set", "train.total_iters=5")
    assert done.returncode == 2
    assert "train.total_iters: unknown key (did you mean 'total_iter'?)" in done.stderr


@pytest.mark.timeout(300)
def test_ddp_two_processes_keep_identical_weights(tmp_path):
    """torchrun with 2 CPU processes (gloo): after training, both ranks hold the same weights."""
    opt = tiny_options(tmp_path, **{"train.total_iter": 3, "train.ema": {}})
    f = write_yaml(tmp_path / "ddp.yml", opt)
    done, r0, r1 = train_on_two_cpu_processes(f, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    log = next((tmp_path / "experiments" / "tiny").glob("train_*.log")).read_text()
    assert " x2 (no)" in log                                           # two processes
    from accelerate.utils import set_seed
    from osir.engine.trainer import build_method
    set_seed(opt["seed"])
    initial = build_method(load_options(f)).networks["g"].state_dict()
    assert any(not torch.equal(initial[k], r0[f"g.{k}"]) for k in initial)   # the ranks trained, in step


def test_accumulation_clipping_and_bf16_step_once_per_iteration(tmp_path):
    opt = tiny_options(tmp_path, **{"train.total_iter": 2, "train.grad_accum_steps": 2, "train.grad_clip": 0.01,
                                    "train.mixed_precision": "bf16", "val.freq": 100})
    trainer = Trainer(load_options(write_yaml(tmp_path / "o.yml", opt)))
    result = trainer.train()
    state = trainer.optimizers["g"].state_dict()["state"]
    assert all(int(s["step"]) == 2 for s in state.values())          # 2 iterations x 2 micro-batches -> 2 steps
    assert all(math.isfinite(v) for v in result["train"].values())
    assert trainer.accelerator.mixed_precision == "bf16"
