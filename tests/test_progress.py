"""Issue 27 point 4: progress in every long-running command (``osir.core.progress``): a bar on a terminal,
otherwise plain lines with done/total, rate and ETA; rates in s/image below one image per second.  Point 5:
the trainer's log line in s/it beside the options' reference figure."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from osir.core.progress import Progress, format_rate
from tests.conftest import tiny_options, write_images, write_yaml

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines_of(total, seconds_per_item, count=None, **kw):
    """The plain lines of ``count`` (default ``total``) items, each taking ``seconds_per_item``."""
    clock, out = FakeClock(), io.StringIO()
    with Progress(total, "osir.metrics", file=out, clock=clock, terminal=False, **kw) as progress:
        for _ in range(total if count is None else count):
            clock.now += seconds_per_item
            progress.update()
    return out.getvalue().splitlines()


def test_rates_below_one_per_second_read_as_seconds_per_image():
    assert format_rate(3, 41.1) == "13.7 s/image"               # 0.07 images/s would read "0.07 images/s"
    assert format_rate(9, 4) == "2.25 images/s"
    assert format_rate(1, 1) == "1.00 images/s"                  # one per second: still a rate
    assert format_rate(2, 5, "iteration") == "2.5 s/iteration"
    assert format_rate(8, 2, "it", "it") == "4.00 it/s"
    assert format_rate(0, 0) == "? images/s"


def test_plain_lines_of_a_slow_run_have_done_total_rate_and_eta():
    lines = lines_of(100, 13.7, count=40, interval=3600)
    assert lines[0] == "osir.metrics: 1/100 images (1%), 13.7 s/image, elapsed 00:13, ETA 22:36"
    assert len(lines) == 1 + 40 // 5                            # the first item, then every 5 (100 / 20)
    assert lines[-2] == "osir.metrics: 35/100 images (35%), 13.7 s/image, elapsed 07:59, ETA 14:50"
    # closed after 40 of 100 items without an error: the 40th item's line, written on item 40, is not repeated
    assert lines[-1] == "osir.metrics: 40/100 images (40%), 13.7 s/image, elapsed 09:08, ETA 13:42"


def test_the_last_line_is_written_at_the_end_with_the_total_time():
    lines = lines_of(7, 0.25, every=3)
    assert [line.split(",")[0] for line in lines] == [f"osir.metrics: {n}/7 images ({100 * n // 7}%)"
                                                      for n in (1, 3, 6, 7)]
    assert lines[-1] == "osir.metrics: 7/7 images (100%), 4.00 images/s, elapsed 00:01"


def test_a_long_gap_writes_a_line_before_the_next_multiple_of_every():
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(50, "osir.degrade", file=out, clock=clock, terminal=False, every=10, interval=30)
    for seconds in (1, 1, 40, 1):           # items 1..4: item 3 arrives 40 s after item 2's (silent) end
        clock.now += seconds
        progress.update()
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == \
        ["osir.degrade: 1/50 images (2%)", "osir.degrade: 3/50 images (6%)"]


def test_an_error_ends_without_a_last_progress_line_and_disable_writes_nothing():
    out, clock = io.StringIO(), FakeClock()
    with pytest.raises(RuntimeError), Progress(3, "x", file=out, clock=clock, terminal=False, every=5) as p:
        p.update()
        p.update()
        raise RuntimeError("image 3 is broken")
    assert out.getvalue().splitlines() == ["x: 1/3 images (33%), ? images/s, elapsed 00:00"]
    assert lines_of(4, 1.0, disable=True) == []


def test_a_terminal_gets_a_bar_and_the_trainer_bar_reads_seconds_per_iteration():
    out = io.StringIO()
    with Progress(4, "demo (reference 0.54 s/it on 2 CPU cores)", "it", "it", file=out, terminal=True,
                  seconds_per_item=True) as bar:
        for _ in range(4):
            bar.update()                     # fast: tqdm alone would read it/s
    text = out.getvalue()
    assert "\r" in text and "4/4" in text and "s/it" in text and "it/s" not in text
    assert "demo (reference 0.54 s/it on 2 CPU cores)" in text


# ----------------------------------------------------------------------------- the commands, stderr not a terminal
def run_module(*args, cwd):
    """``python *args`` on this checkout's osir (not another installed copy), stderr a pipe."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def progress_lines(stderr: str, label: str) -> list[str]:
    """``label: n/2 images ...`` lines of ``stderr``, checked for the rate's form."""
    found = [line for line in stderr.splitlines() if line.startswith(f"{label}: ") and " images (" in line]
    for line in found:
        assert re.search(r"images \(\d+%\), (\d+\.\d\d images/s|\d+\.\d s/image), elapsed \d\d:\d\d", line), line
    return found


@pytest.fixture
def two_images(tmp_path):
    opt = tiny_options(tmp_path, **{"datasets.val.dataroot_gt": str(write_images(tmp_path / "two", 2, (32, 32)))})
    return opt, write_yaml(tmp_path / "tiny.yml", opt)


def test_test_script_shows_progress_per_image_of_each_set(tmp_path, two_images):
    _, options = two_images
    err = run_module("-m", "osir.test", "-opt", str(options), cwd=tmp_path).stderr
    lines = progress_lines(err, "tiny/val")
    assert [line.split(",")[0] for line in lines] == ["tiny/val: 1/2 images (50%)", "tiny/val: 2/2 images (100%)"]


def test_metrics_command_shows_progress_per_image_scored(tmp_path):
    gt = write_images(tmp_path / "gt", 2, (32, 32))
    restored = write_images(tmp_path / "restored", 2, (32, 32), seed=1)
    metrics = write_yaml(tmp_path / "m.yml", {"metrics": {"psnr": {"type": "psnr"}}})
    err = run_module("-m", "osir.metrics", "--restored", str(restored), "--gt", str(gt), "-opt", str(metrics),
                     "--output", str(tmp_path / "out"), cwd=tmp_path).stderr
    assert [line.split(",")[0] for line in progress_lines(err, "osir.metrics")] == \
        ["osir.metrics: 1/2 images (50%)", "osir.metrics: 2/2 images (100%)"]


def test_degrade_command_shows_progress_per_image(tmp_path):
    gt = write_images(tmp_path / "gt", 2, (40, 48), seed=2)
    opt = write_yaml(tmp_path / "wild.yml", {"degradation": {"type": "WildDegradation", "noise_prob": 1.0}})
    err = run_module("-m", "osir.degrade", "-opt", str(opt), "--input", str(gt), "--output", str(tmp_path / "a"),
                     cwd=tmp_path).stderr
    assert [line.split(",")[0] for line in progress_lines(err, "osir.degrade")] == \
        ["osir.degrade: 1/2 images (50%)", "osir.degrade: 2/2 images (100%)"]


def test_bench_steps_shows_progress_per_point_and_image(tmp_path, two_images):
    _, options = two_images
    err = run_module("-m", "osir.bench", "steps", "-opt", str(options), "--steps", "2", "1", "--warmup", "0",
                     "--device", "cpu", "--threads", "1", "--output", str(tmp_path / "out"), cwd=tmp_path).stderr
    for k, steps in ((1, 2), (2, 1)):
        label = f"osir.bench: tiny: point {k}/2 (posterior steps {steps})"
        assert [line.split(",")[0] for line in progress_lines(err, label)] == \
            [f"{label}: 1/2 images (50%)", f"{label}: 2/2 images (100%)"]


def test_restore_command_shows_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    """tqdm's ``disable=None`` hid osir restore's bar entirely when stderr was a file or a pipe."""
    import torch
    from osir.core.checkpoint import save_network
    from osir.methods.realesrgan import RRDBNet
    torch.manual_seed(0)
    save_network(RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=4), tmp_path / "net_g.safetensors")
    src = write_images(tmp_path / "in", 2, (16, 16))
    done = run_module("-m", "osir", "restore", "--model", "realesrgan-x4", "--weights",
                      str(tmp_path / "net_g.safetensors"), str(src), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert [line.split(",")[0] for line in progress_lines(done.stderr, "osir restore")] == \
        ["osir restore: 1/2 images (50%)", "osir restore: 2/2 images (100%)"]
    assert re.search(r"in \d+\.\d\d s \((\d+\.\d\d images/s|\d+\.\d s/image); model loaded", done.stdout), done.stdout


# ----------------------------------------------------------------------------- the trainer's log line
@pytest.mark.parametrize("reference", [{}, {"logger.reference_seconds_per_iter": 0.54,
                                            "logger.reference_machine": "2 CPU cores"}])
def test_training_log_line_shows_seconds_per_iteration_and_the_reference(tmp_path, reference):
    from osir.core.options import load_options
    from osir.engine.trainer import Trainer
    opt = tiny_options(tmp_path, **{"train.total_iter": 2, "logger.print_freq": 1, "val.freq": 100,
                                    **reference})
    path = write_yaml(tmp_path / "train.yml", opt)
    Trainer(load_options(path)).train()
    (log,) = (tmp_path / "experiments" / "tiny").glob("train_tiny_*.log")
    lines = [line for line in log.read_text().splitlines() if re.search(r"iter \d/2 ", line)]
    note = "; reference 0.54 s/it on 2 CPU cores" if reference else ""
    assert len(lines) == 2
    for line in lines:
        assert re.search(r"\(\d[\d.e+-]* s/it" + re.escape(note) + r"; eta \d+\.\d min\)$", line), line
