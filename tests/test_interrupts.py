"""Interrupted and concurrent training runs (issue 23, points 2 and 3), on real ``python osir/train.py -opt``
subprocesses sent real signals: the experiment folder's lock, the save on SIGINT / SIGTERM and
``--auto_resume`` from it with the same losses, a second Ctrl-C, and the temporary files of a save cut
short by ``kill -9``, removed at the next start."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from osir.engine.trainer import Trainer
from osir.core.options import load_options
from osir.train import main as train_main
from tests.conftest import tiny_options, write_images, write_yaml
from tests.test_engine import losses_of

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
LONG = {"logger.print_freq": 1, "train.total_iter": 100_000, "logger.checkpoint_freq": 100_000}


def options(tmp_path, **overrides) -> dict:
    """The tiny experiment without a validation set (validation plays no part here)."""
    opt = tiny_options(tmp_path, **overrides)
    del opt["datasets"]["val"]
    return opt


class Run:
    """``python osir/train.py -opt <file> ...`` in its own session (its own process group, as a terminal's
    foreground job is), output in a file."""

    def __init__(self, opt_file: Path, *extra, env=None, tag="run"):
        self.out = opt_file.parent / f"{tag}.out"
        with open(self.out, "w") as sink:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "osir" / "train.py"), "-opt", str(opt_file), *extra],
                                         stdout=sink, stderr=subprocess.STDOUT, env={**ENV, **(env or {})},
                                         cwd=opt_file.parent, start_new_session=True)

    @property
    def text(self) -> str:
        return self.out.read_text()

    def wait_for(self, text: str) -> None:
        """Until ``text`` is in the output (a bound only against a hung run: nothing here is timed)."""
        for _ in range(6000):
            if text in self.text:
                return
            assert self.proc.poll() is None, f"the run ended ({self.proc.returncode}) before '{text}':\n{self.text[-3000:]}"
            time.sleep(0.05)
        raise AssertionError(f"no '{text}' after 300 s:\n{self.text[-3000:]}")

    def wait_until_stopped(self) -> None:
        """Until the process has stopped itself (SIGSTOP from tests/plugins/pause_in_save.py)."""
        _, status = os.waitpid(self.proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"the run ended before pausing in its save:\n{self.text[-3000:]}"

    def finish(self) -> int:
        return self.proc.wait(timeout=300)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def runs():
    started = []
    yield lambda *args, **kwargs: started.append(Run(*args, **kwargs)) or started[-1]
    for run in started:       # a failed test leaves no training process behind
        run.kill()


def train_straight(tmp_path, opt, total):
    """The same experiment run uninterrupted to ``total`` in this process; its experiment folder."""
    Trainer(load_options(write_yaml(tmp_path / "straight.yml", {**opt, "name": "straight"}),
                         [f"train.total_iter={total}"])).train()
    return tmp_path / "experiments" / "straight"


def log_of(exp: Path) -> str:
    return "".join(p.read_text() for p in sorted(exp.glob("train_*.log")))


def interrupted_at(text: str, signame: str) -> int:
    marker = f"interrupted ({signame}) at iteration "
    assert marker in text, text[-3000:]
    return int(text.split(marker)[1].split(":")[0])


@pytest.mark.parametrize("signum, to_group, workers", [(signal.SIGINT, True, 2), (signal.SIGTERM, False, 0)],
                         ids=["ctrl-c-to-the-process-group-with-loader-workers", "sigterm-to-the-trainer"])
def test_a_signal_saves_the_iteration_and_auto_resume_repeats_the_losses(tmp_path, runs, signum, to_group, workers):
    opt = options(tmp_path, **LONG, **{"datasets.train.num_workers": workers})
    opt_file = write_yaml(tmp_path / "o.yml", opt)
    run = runs(opt_file)
    run.wait_for("iter 2/")
    (os.killpg if to_group else os.kill)(run.proc.pid, signum)
    assert run.finish() == 128 + signum, run.text[-3000:]
    name = signal.Signals(signum).name
    n = interrupted_at(run.text, name)
    exp = tmp_path / "experiments" / "tiny"
    state = exp / "training_states" / f"{n}.state"
    assert f"iteration {n}: training state saved to {state}; resume with --auto_resume" in run.text
    assert "Traceback" not in run.text and "KeyboardInterrupt" not in run.text, run.text[-3000:]
    assert sorted(p.name for p in (exp / "training_states").iterdir()) == [state.name]   # the save of the signal
    assert not (tmp_path / "experiments" / "tiny.lock").exists()                         # released

    assert train_main(["-opt", str(opt_file), "--auto_resume", "--set", f"train.total_iter={n + 2}"]) == 0
    assert f"resumed from {state} at iteration {n}" in log_of(exp)
    straight = train_straight(tmp_path, opt, n + 2)
    assert losses_of(exp) == losses_of(straight) and len(losses_of(exp)) == n + 2
    for weights in (f"net_g_{n + 2}", f"net_g_ema_{n + 2}"):
        a, b = (load_file(folder / "models" / f"{weights}.safetensors") for folder in (exp, straight))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_second_start_is_refused_while_the_first_runs_and_archives_nothing(tmp_path, runs, capsys):
    opt_file = write_yaml(tmp_path / "o.yml", options(tmp_path, **LONG))
    first = runs(opt_file, tag="first")
    first.wait_for("iter 1/")
    exp, lock_file = tmp_path / "experiments" / "tiny", tmp_path / "experiments" / "tiny.lock"
    for extra in ([], ["--auto_resume"]):           # the second start: this test's process, a different PID
        capsys.readouterr()
        assert train_main(["-opt", str(opt_file), "--set", "train.total_iter=1", *extra]) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
        assert lines[0].startswith(f"osir: error: experiment folder '{exp}' is in use by process {first.proc.pid}, "
                                   f"since ")
        assert lines[0].endswith(f"(lock '{lock_file}'); wait for that run to end, stop it, or choose another name")
        assert [p.name for p in (tmp_path / "experiments").iterdir() if p.is_dir()] == ["tiny"]   # nothing archived

    os.kill(first.proc.pid, signal.SIGTERM)
    assert first.finish() == 143, first.text[-3000:]
    n = interrupted_at(first.text, "SIGTERM")
    assert (exp / "training_states" / f"{n}.state").is_file()   # the first run's state, in its own folder
    assert not lock_file.exists()


def test_kill_9_during_a_save_leaves_temporary_files_that_the_next_start_removes(tmp_path, runs):
    opt = options(tmp_path, **{"logger.print_freq": 1, "logger.checkpoint_freq": 2, "train.total_iter": 6})
    crashed = write_yaml(tmp_path / "crash.yml", {**opt, "imports": ["tests.plugins.pause_in_save"]})
    run = runs(crashed, env={"OSIR_PAUSE_IN_SAVE": r"net_g_4\.safetensors"})
    run.wait_until_stopped()                          # in the save of iteration 4, its temporary file written
    exp = tmp_path / "experiments" / "tiny"
    orphans = list((exp / "models").glob(".net_g_4.safetensors.*.tmp"))
    assert len(orphans) == 1, sorted(p.name for p in (exp / "models").iterdir())
    os.kill(run.proc.pid, signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert json.loads((tmp_path / "experiments" / "tiny.lock").read_text())["pid"] == run.proc.pid   # left behind

    assert train_main(["-opt", str(write_yaml(tmp_path / "o.yml", opt)), "--auto_resume"]) == 0
    log = log_of(exp)
    assert f"removed 1 temporary file(s) of a save that was cut short: models/{orphans[0].name}" in log
    assert f"took over the stale lock '{tmp_path / 'experiments' / 'tiny.lock'}' (process {run.proc.pid} has ended)" in log
    assert not [p for p in exp.rglob("*.tmp")] and not (tmp_path / "experiments" / "tiny.lock").exists()
    assert f"resumed from {exp / 'training_states' / '2.state'} at iteration 2" in log
    straight = losses_of(train_straight(tmp_path, opt, 6))
    assert losses_of(exp) == straight[:4] + straight[2:]       # 1-4 before the kill, 3-6 again after the resume


def test_a_second_ctrl_c_during_the_save_stops_at_once_and_leaves_no_partial_file(tmp_path, runs):
    opt = options(tmp_path, **LONG, imports=["tests.plugins.pause_in_save"])
    run = runs(write_yaml(tmp_path / "o.yml", opt), env={"OSIR_PAUSE_IN_SAVE": r"net_g_\d+\.safetensors"})
    run.wait_for("iter 2/")
    os.killpg(run.proc.pid, signal.SIGINT)            # the first Ctrl-C: the run starts saving its iteration
    run.wait_until_stopped()                          # ... and pauses inside that save
    time.sleep(2.5)                                   # sooner than 2 s, a second SIGINT counts as the same request
    os.killpg(run.proc.pid, signal.SIGINT)            # the second Ctrl-C, delivered when it goes on
    os.killpg(run.proc.pid, signal.SIGCONT)
    assert run.finish() == 130, run.text[-3000:]
    exp = tmp_path / "experiments" / "tiny"
    assert "osir: stopped at once by a second SIGINT: the current iteration was not saved; --auto_resume continues " \
           f"from the newest complete training state in '{exp / 'training_states'}'" in run.text
    assert "Traceback" not in run.text, run.text[-3000:]
    assert not list((exp / "training_states").iterdir()) and not list(exp.rglob("*.tmp"))
    assert not (tmp_path / "experiments" / "tiny.lock").exists()


def test_a_lock_from_another_host_refuses_and_one_of_an_ended_process_is_taken_over(tmp_path):
    opt = load_options(write_yaml(tmp_path / "o.yml", options(tmp_path)), ["train.total_iter=1"])
    lock_file = tmp_path / "experiments" / "tiny.lock"
    lock_file.parent.mkdir(parents=True)
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": f"not-{socket.gethostname()}"}))
    with pytest.raises(FileExistsError, match=rf"experiment folder '.*tiny' is in use by process {os.getpid()} "
                                                    rf"on not-{socket.gethostname()} \(lock '.*tiny\.lock'\); .*delete "
                                                    r"the lock only if that run is gone"):
        Trainer(opt)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_file.write_text(json.dumps({"pid": int(ended.stdout), "host": socket.gethostname()}))
    trainer = Trainer(opt)
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    with pytest.raises(FileExistsError, match=r"in use by this process \(another Trainer of it has not "
                                                    r"finished; call its close\(\)\)"):
        Trainer(opt)                                  # a second trainer in one process, the first unfinished
    trainer.train()
    assert not lock_file.exists()
    log = "".join(p.read_text() for p in (tmp_path / "experiments" / "tiny").glob("train_*.log"))
    assert f"took over the stale lock '{lock_file}' (process {int(ended.stdout)} has ended)" in log


def test_a_run_that_fails_with_loader_workers_alive_still_exits(tmp_path):
    """Loader workers end on SIGTERM: Python's exit handler terminates leftover daemonic workers (SIGTERM) and
    joins them, so a worker that ignored SIGTERM kept a failed run from ever exiting (a corrupt image found
    by a worker of a persistent loader: the error is one line, then the process must end)."""
    opt = options(tmp_path, **{"datasets.train.num_workers": 2})
    (tmp_path / "gt" / "img1.png").write_bytes(b"not a png at all")
    opt_file = write_yaml(tmp_path / "o.yml", opt)
    done = subprocess.run([sys.executable, str(ROOT / "osir" / "train.py"), "-opt", str(opt_file)], env=ENV,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "cannot decode image" in done.stderr


VAL_IMAGES = 60


@pytest.mark.parametrize("signum, val_freq, checkpoint_freq, total, pause_at, stop_at", [
    (signal.SIGINT, 3, 100_000, 100_000, 3, 3),      # a periodic validation of an iteration not yet saved
    (signal.SIGTERM, 2, 2, 100_000, 2, 2),           # a validation of an iteration just checkpointed
    (signal.SIGINT, 100_000, 100_000, 2, 5, 2),      # the final validation, after the final save
], ids=["ctrl-c-in-a-validation", "sigterm-in-a-validation-after-a-checkpoint", "ctrl-c-in-the-final-validation"])
def test_a_signal_during_validation_abandons_it_and_saves_the_iteration(tmp_path, runs, signum, val_freq,
                                                                        checkpoint_freq, total, pause_at, stop_at):
    """The run pauses itself after restoring validation image ``pause_at`` of 60 (tests/plugins/
    pause_in_validation.py, batches of one); the signal reaches it there: the validation stops after that
    image, nothing of it is reported as a result, the state of the iteration validated is saved once, and
    ``--auto_resume`` from it repeats the losses of an uninterrupted run."""
    opt = options(tmp_path, **{"logger.print_freq": 1, "train.total_iter": total, "logger.checkpoint_freq":
                               checkpoint_freq, "val.freq": val_freq, "val.max_images": None,
                               "datasets.train.num_workers": 2})
    opt["datasets"]["val"] = {"type": "SyntheticPairDataset", "dataroot_gt": str(write_images(
        tmp_path / "val", VAL_IMAGES, (32, 32), seed=1)), "degradation": {"type": "GaussianNoise", "sigma": 25}}
    run = runs(write_yaml(tmp_path / "paused.yml", {**opt, "imports": ["tests.plugins.pause_in_validation"]}),
               env={"OSIR_PAUSE_IN_VALIDATION": str(pause_at)})
    run.wait_until_stopped()                          # inside a validation, image `pause_at` restored
    (os.killpg if signum == signal.SIGINT else os.kill)(run.proc.pid, signum)
    os.killpg(run.proc.pid, signal.SIGCONT)
    assert run.finish() == 128 + signum, run.text[-3000:]
    exp = tmp_path / "experiments" / "tiny"
    log = log_of(exp)
    assert f"validation [val] at iteration {stop_at} abandoned after {pause_at} of " \
           f"{VAL_IMAGES} images: stop requested" in log, log[-3000:]
    assert f"validation [val] iter {stop_at}:" not in log                       # no partial mean as a result
    assert interrupted_at(run.text, signal.Signals(signum).name) == stop_at
    state = exp / "training_states" / f"{stop_at}.state"
    assert sorted(p.name for p in (exp / "training_states").iterdir()) == [state.name]
    assert log.count(f"saved checkpoint at iteration {stop_at}") == 1         # saved once
    assert f"iter {stop_at + 1}/" not in log                                    # no further iteration trained
    assert "Traceback" not in run.text, run.text[-3000:]
    assert not (tmp_path / "experiments" / "tiny.lock").exists()

    resumed = {**opt, "val": {**opt["val"], "max_images": 2}}
    assert train_main(["-opt", str(write_yaml(tmp_path / "o.yml", resumed)), "--auto_resume",
                       "--set", f"train.total_iter={stop_at + 2}"]) == 0
    assert f"resumed from {state} at iteration {stop_at}" in log_of(exp)
    straight = train_straight(tmp_path, resumed, stop_at + 2)
    assert losses_of(exp) == losses_of(straight) and len(losses_of(exp)) == stop_at + 2
    for weights in (f"net_g_{stop_at + 2}", f"net_g_ema_{stop_at + 2}"):
        a, b = (load_file(folder / "models" / f"{weights}.safetensors") for folder in (exp, straight))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def stopped_child(parent: int) -> int | None:
    """The pid of a child of ``parent`` that is stopped (SIGSTOP), from Linux's /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "T" and int(fields[1]) == parent:
            return int(stat.parent.name)
    return None


@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the paused worker in Linux's /proc")
def test_ctrl_c_during_validation_under_torchrun_stops_every_process_at_the_same_iteration(tmp_path):
    """torchrun, 2 CPU processes: the main process validates alone (paused after image 3 of 60) while the
    other waits for it; Ctrl-C reaches both (and torchrun, which sends SIGINT again): the validation is
    abandoned, both processes agree on saving iteration 3, and every process ends."""
    opt = options(tmp_path, **LONG, **{"val.freq": 3, "val.max_images": None, "train.ema": {}},
                  imports=["tests.plugins.pause_in_validation"])
    opt["datasets"]["val"] = {"type": "SyntheticPairDataset", "dataroot_gt": str(write_images(
        tmp_path / "val", VAL_IMAGES, (32, 32), seed=1)), "degradation": {"type": "GaussianNoise", "sigma": 25}}
    with socket.socket() as s:          # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = tmp_path / "torchrun.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                 "--master_port", port, str(ROOT / "osir" / "train.py"),
                                 "-opt", str(write_yaml(tmp_path / "o.yml", opt))],
                                stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
                                env={**ENV, "OMP_NUM_THREADS": "1", "OSIR_PAUSE_IN_VALIDATION": "3"})
    try:
        for _ in range(2400):           # a bound only against a hung run: nothing here is timed
            paused = stopped_child(proc.pid)
            if paused or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert paused, f"no worker paused in validation:\n{out.read_text()[-3000:]}"
        os.killpg(proc.pid, signal.SIGINT)
        os.kill(paused, signal.SIGCONT)
        proc.wait(timeout=120)          # torchrun ends once both workers have ended
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.read_text()
    exp = tmp_path / "experiments" / "tiny"
    assert f"validation [val] at iteration 3 abandoned after 3 of {VAL_IMAGES} images: stop requested" in text, \
        text[-3000:]
    assert interrupted_at(text, "SIGINT") == 3
    assert sorted(p.name for p in (exp / "training_states").iterdir()) == ["3.state"]
    assert text.count("saved checkpoint at iteration 3") == 1 and "iter 4/" not in text
    assert f'File "{ROOT / "osir"}' not in text, text[-3000:]     # no traceback of osir's (torchrun prints its own)
    assert not (tmp_path / "experiments" / "tiny.lock").exists()
