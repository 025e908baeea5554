"""What an independent review of issue 23 found beyond tests/test_bad_input.py's table (whose rows for these
cases are in tests/bad_input_review_cases.py):

* every YAML file osir reads goes through one safe reader (``osir.core.options.load_yaml``: the options
  reader's alias limit, duplicate-key warning, one-line errors), so an alias bomb in a run's options.yml, a
  degradation or model card, an accelerate config or an ``osir export --set`` value is refused while reading,
  and ``osir recognize`` of weights beside such a run prints one short line (HEAD printed the expanded value);
* writers that named no file or could leave a truncated / temporary file: the lock file when ``os.link`` is
  not available (the ``O_EXCL`` fallback), model cards, compare's plots and the int8 ONNX file.

A full disk is simulated at the lowest level Python's own writers reach, ``Path.open`` for writing (under
``Path.write_bytes`` and ``Path.write_text``), or at the library writer (``onnx.save_model``, ``os.fdopen``):
half the bytes reach the file, then the error a full disk gives (``OSError(ENOSPC)``)."""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest

from osir.core.options import OptionsError
from tests.bad_input_review_cases import alias_bomb, run_with_bomb
from tests.conftest import write_images

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")

OSIR = Path(__file__).resolve().parents[1] / "osir"
BOMB = re.compile(r"not valid YAML: aliases expand to more than 100000 values \(an alias bomb\?\)")


class _HalfThenFull:
    """A file object whose first write writes half its data, then fails as a full disk does."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def full_disk(monkeypatch) -> None:
    """From now on every file opened for writing through ``Path.open`` fills the disk at its first write."""
    real = Path.open

    def open_(self, mode="r", *args, **kwargs):
        f = real(self, mode, *args, **kwargs)
        return _HalfThenFull(f) if any(c in mode for c in "wax+") else f
    monkeypatch.setattr(Path, "open", open_)


# ----------------------------------------------------------------------------- YAML (issue 23.13)
def test_no_yaml_reader_of_osir_bypasses_the_safe_one():
    """``yaml.safe_load`` / ``yaml.load`` expand an alias bomb: only osir/core/options.py parses YAML."""
    calls = [f"{p.relative_to(OSIR)}:{n}" for p in OSIR.rglob("*.py") if p != OSIR / "core" / "options.py"
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"\byaml\.(safe_|full_|unsafe_)?load(_all)?\(", line)]
    assert calls == []


def test_recognize_beside_a_run_with_an_alias_bomb_prints_one_short_line(tmp_path, capsys):
    from osir.recognize import main as recognize_main
    argv = run_with_bomb(tmp_path)
    capsys.readouterr()
    assert recognize_main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err) < 600 and err.count("\n") == 1, (len(out), len(err), err[:600])
    assert BOMB.search(err) and "options.yml" in err


@pytest.mark.parametrize("content, message", [
    ("- a\n- b\n", r": not an osir run's options \(the top level is not a mapping\)$"),
    ("name: x\nmethod: RealESRGAN\n", r": method: expected a mapping, got 'RealESRGAN'$"),
])
def test_a_run_options_file_that_is_not_one_is_an_error_naming_it(tmp_path, content, message):
    """Not release settings used silently in place of the run's (HEAD: a note, or a ValueError traceback)."""
    from osir.recognize import recognize
    weights = Path(run_with_bomb(tmp_path)[0])
    (tmp_path / "run" / "options.yml").write_text(content)
    with pytest.raises(OptionsError, match=r"the run's options '.*run/options\.yml' \(beside 'net_g_5\.safetensors'\)"
                                           + message):
        recognize(weights)


def test_an_accelerate_config_is_read_safely(tmp_path):
    from osir.engine.distributed import fsdp_plugin
    config = tmp_path / "accelerate.yaml"
    config.write_text(f"distributed_type: {alias_bomb()}\n")
    with pytest.raises(OptionsError, match=r"^train\.accelerate_config: '.*accelerate\.yaml': " + BOMB.pattern):
        fsdp_plugin(str(config))
    config.write_text("- distributed_type: FSDP\n")
    with pytest.raises(OptionsError, match=r"'.*accelerate\.yaml': not an accelerate config \(the top level is not"):
        fsdp_plugin(str(config))
    config.write_text("distributed_type: FSDP\nfsdp_config: [fsdp_offload_params]\n")
    with pytest.raises(OptionsError, match=r"'.*accelerate\.yaml': fsdp_config: expected a mapping, got "
                                           r"\['fsdp_offload_params'\]$"):
        fsdp_plugin(str(config))


def test_a_model_card_is_read_safely(tmp_path):
    from osir.model_card import read_model_card, write_model_card
    (tmp_path / "w.bin").write_bytes(b"weights")
    card = write_model_card(tmp_path / "w.bin", method="M", hyper_parameters={"a": 1})
    assert read_model_card(tmp_path / "w.bin")["hyper_parameters"] == {"a": 1}       # round trip
    card.write_text(card.read_text() + f"notes: {alias_bomb()}\n")
    with pytest.raises(OptionsError, match=r"^model card '.*w\.card\.yaml': " + BOMB.pattern):
        read_model_card(tmp_path / "w.bin")
    card.write_text("- a list\n")
    with pytest.raises(OptionsError, match=r"w\.card\.yaml': file\.sha256: missing \(not a model card\)$"):
        read_model_card(tmp_path / "w.bin")


# ----------------------------------------------------------------------------- compare (issue 23.7)
def test_compare_refuses_a_test_sets_gt_folder_with_one_name_twice(tmp_path, capsys):
    """The same rule for results of ``osir/test.py`` (the GT folder from ``dataset.dataroot_gt``), before any
    file of the report is written."""
    import cv2
    import numpy as np
    from osir.compare import main as compare_main
    write_images(tmp_path / "gt", 1, (16, 16))
    cv2.imwrite(str(tmp_path / "gt" / "img0.jpg"), np.zeros((16, 16, 3), np.uint8))
    results = tmp_path / "results" / "run" / "set"
    write_images(results, 1, (16, 16), seed=2)
    (results / "metrics.json").write_text(json.dumps(
        {"mean": {"psnr": 30.0}, "images": [{"image": "img0.png", "psnr": 30.0}],
         "dataset": {"type": "PairedImageDataset", "dataroot_gt": str(tmp_path / "gt")}}))
    assert compare_main([str(tmp_path / "results"), "--output", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"'.*gt/img0\.jpg' and '.*gt/img0\.png' have the same name 'img0'", err), err
    assert not (tmp_path / "report").exists()


# ----------------------------------------------------------------------------- full disks (issue 23.4)
def test_a_plot_write_error_names_the_plot_and_leaves_nothing(tmp_path, monkeypatch):
    from osir.compare import Group, Run, plots, rank
    data = {"mean": {"psnr": 30.0}, "metrics": {"psnr": {"lower_better": False}},
            "images": [{"image": "a.png", "psnr": 30.0}, {"image": "b.png", "psnr": 28.0}]}
    group = Group(["set"], None, [Run("run", "set", tmp_path / "metrics.json", data, "run")])
    rank(group)
    full_disk(monkeypatch)
    with pytest.raises(OSError, match=r"^cannot write '.*plots/0_set_psnr\.png': No space left on device$"):
        plots(group, tmp_path / "report", 0)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_model_card_write_error_keeps_the_earlier_card(tmp_path, monkeypatch):
    from osir.model_card import card_path, write_model_card
    (tmp_path / "w.bin").write_bytes(b"weights")
    write_model_card(tmp_path / "w.bin", method="before", hyper_parameters={})
    before = card_path(tmp_path / "w.bin").read_bytes()
    full_disk(monkeypatch)
    with pytest.raises(OSError, match=r"^cannot write '.*w\.card\.yaml': No space left on device$"):
        write_model_card(tmp_path / "w.bin", method="after", hyper_parameters={})
    monkeypatch.undo()
    assert card_path(tmp_path / "w.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin", "w.card.yaml"]


def test_a_lock_write_error_without_hard_links_leaves_no_lock(tmp_path, monkeypatch):
    """Where the file system has no hard links the lock is created with O_EXCL and written in place: a full
    disk there removes the half-written lock (which would block the next start as 'being written') and
    names it."""
    from osir.engine import lock

    def no_links(src, dst):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _HalfThenFull(real_fdopen(fd, *a, **k)))
    with pytest.raises(OSError, match=r"^cannot write the lock file '.*tiny\.lock' of experiment folder "
                                      r"'.*experiments/tiny': No space left on device$") as raised:
        lock.acquire(tmp_path / "experiments" / "tiny")
    monkeypatch.undo()
    assert not isinstance(raised.value, FileExistsError) and raised.value.errno == errno.ENOSPC
    assert list((tmp_path / "experiments").iterdir()) == []
    path, warning = lock.acquire(tmp_path / "experiments" / "tiny")        # the next start takes it at once
    assert warning is None
    lock.release(path)


def test_an_int8_write_error_names_the_file_and_leaves_the_fp32_graph(tmp_path, capsys, monkeypatch):
    """The int8 graph is written once, under a temporary name; onnxruntime's intermediate files are removed."""
    import onnx
    from osir.export import main as export_main
    from tests.test_bad_input import _tiny_weights
    real = onnx.save_model
    argv = ["onnx", "--weights", str(_tiny_weights(tmp_path)), "-o", str(tmp_path / "x.onnx"), "--int8",
            "--calibration", str(write_images(tmp_path / "calib", 2, (32, 32)))]

    def save(proto, f, *args, **kwargs):            # the disk fills at the int8 graph, not before
        if "x.int8.onnx" not in os.fspath(f):
            return real(proto, f, *args, **kwargs)
        data = proto.SerializeToString()
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(onnx, "save_model", save)
    capsys.readouterr()
    assert export_main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(r"^osir export: error: cannot write '.*x\.int8\.onnx': No space left on device$", err, re.M), err
    assert "Traceback" not in err
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert left == ["w.safetensors", "x.card.yaml", "x.onnx"], left
    onnx.checker.check_model(str(tmp_path / "x.onnx"))
