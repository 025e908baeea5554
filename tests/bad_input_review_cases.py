"""Rows of tests/test_bad_input.py's table for the cases an independent review of issue 23 found (YAML readers
beyond the options file, degradation cards, compare's same-stem GT, write errors that named no file).  Same
format as ``CASES`` there: (title, main function, argv builder, message regex[, allowed globs]).

* YAML (issue 23.13): every YAML file osir reads goes through ``osir.core.options.load_yaml`` (the options
  reader's alias limit): an alias bomb in a run's ``options.yml`` read beside its weights (``osir recognize``),
  in a degradation card, or in an ``osir export --set`` value is one line naming the file or key;
* a degradation card of the wrong structure (``images:`` a list, a seed that is not an integer) is one line
  naming the card and the key, not an AttributeError / TypeError traceback;
* ``python -m osir.compare`` with ``gt/img0.png`` and ``gt/img0.jpg``: both named (issue 23.7), not the jpg
  used silently;
* a full disk (issue 23.4) while taking the experiment lock, writing an ONNX file or compare's thumbnails:
  one line naming the file, nothing under its name, no temporary file.

The builders import tests.test_bad_input's helpers inside the function (that module imports this one)."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from osir.compare import main as compare_main
from osir.degrade import main as degrade_main
from osir.export import main as export_main
from osir.recognize import main as recognize_main
from osir.train import main as train_main
from tests.conftest import write_images


def alias_bomb(levels: int = 6) -> str:
    """A flow sequence of nested anchors, nine aliases each: 9**levels values from a few hundred bytes
    (issue 23.13 used 9**9)."""
    nested = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    nested += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(nested)}]"


def run_with_bomb(tmp: Path) -> list:
    """Tiny Real-ESRGAN weights in an osir run's ``models/`` folder whose ``options.yml`` holds an alias
    bomb in the network's section (HEAD copied it into the hyper-parameters and printed it whole)."""
    from tests.test_bad_input import _rrdb_x4
    from osir.core.checkpoint import save_network
    weights = tmp / "run" / "models" / "net_g_5.safetensors"
    weights.parent.mkdir(parents=True)
    save_network(_rrdb_x4(), weights)
    (tmp / "run" / "options.yml").write_text(
        "name: run\nmethod:\n  type: RealESRGAN\n  network: {type: RRDBNet, num_in_ch: 3, num_out_ch: 3, scale: 4, "
        f"num_feat: 8, num_block: 1, num_grow_ch: 32, extra: {alias_bomb()}}}\n")
    return [str(weights)]


def _card(tmp: Path, text: str | None = None, **card) -> list:
    """``osir.degrade --card`` with a card of ``card``'s entries (or ``text``) and one 96x96 GT image."""
    write_images(tmp / "hr", 1, (96, 96))
    if text is None:
        text = json.dumps({"osir": "0", "degradation": {"type": "RealESRGANDegradation", "preset": "realesrgan_x4"},
                           "seed": 0, "images": {"img0": 1}, **card})            # JSON is YAML
    (tmp / "card.yml").write_text(text)
    return ["--card", str(tmp / "card.yml"), "--input", str(tmp / "hr"), "--output", str(tmp / "out")]


def _compare_same_stem_gt(tmp: Path) -> list:
    """One osir.metrics result whose GT folder holds img0.png and a different img0.jpg."""
    write_images(tmp / "restored", 1, (16, 16))
    write_images(tmp / "gt", 1, (16, 16), seed=1)
    cv2.imwrite(str(tmp / "gt" / "img0.jpg"), np.zeros((16, 16, 3), np.uint8))
    return _compare_results(tmp)


def _compare_results(tmp: Path) -> list:
    (tmp / "results" / "run" / "set").mkdir(parents=True)
    (tmp / "results" / "run" / "set" / "metrics.json").write_text(json.dumps(
        {"mean": {"psnr": 30.0}, "metrics": {"psnr": {"type": "psnr", "lower_better": False}},
         "images": [{"image": "img0.png", "psnr": 30.0}], "restored": str(tmp / "restored"), "gt": str(tmp / "gt")}))
    return [str(tmp / "results"), "--output", str(tmp / "report")]


def _compare_pair(tmp: Path) -> list:
    write_images(tmp / "restored", 1, (16, 16))
    write_images(tmp / "gt", 1, (16, 16), seed=1)
    return _compare_results(tmp)


def full_onnx_disk(patches) -> None:
    """From now on ``onnx.save_model`` (the ONNX writer) writes half the model, then fails as a full disk does."""
    import onnx

    def full(proto, f, *args, **kwargs):
        data = proto.SerializeToString()
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    patches.setattr(onnx, "save_model", full)


def on_a_full_disk(main, fill=None):
    """``main`` run with the disk full (``fill(patches)``, default tests.test_bad_input's ``fill_disk``: every
    ``Path.write_bytes`` writes half, then fails), the patch undone when it returns (a builder's patch would
    outlive the test where the table's module is imported under two names)."""
    def run(argv):
        from tests.test_bad_input import fill_disk
        with pytest.MonkeyPatch.context() as patches:
            (fill or fill_disk)(patches)
            return main(argv)
    run.__name__ = f"{getattr(main, '__module__', '')}.main on a full disk"
    return run


def _tiny_export(tmp: Path) -> list:
    from tests.test_bad_input import _tiny_weights
    return ["onnx", "--weights", str(_tiny_weights(tmp)), "-o", str(tmp / "x.onnx")]


def _train_argv(tmp: Path) -> list:
    from tests.test_bad_input import _train
    return _train(tmp)


_BOMB = r"not valid YAML: aliases expand to more than 100000 values \(an alias bomb\?\)"
_SEED = r"expected a seed \(an integer from 0 to 2\*\*64 - 1\), got "

REVIEW_CASES: list = [
    # every YAML file is read as options files are (issue 23.13)
    ("recognize: an alias bomb in the run's options.yml", recognize_main, run_with_bomb,
     r"^osir recognize: options error: the run's options '.*run/options\.yml' \(beside 'net_g_5\.safetensors'\): "
     + _BOMB + r" in \".*run/options\.yml\", line 4"),
    ("degrade: an alias bomb in a card", degrade_main,
     lambda t: _card(t, "osir: '0'\ndegradation: {type: RealESRGANDegradation, preset: realesrgan_x4}\n"
                        f"seed: 0\nimages: {{img0: {alias_bomb()}}}\n"),
     r"^osir\.degrade: options error: --card '.*card\.yml': not a readable degradation card \(" + _BOMB),
    ("export: --set value that is not YAML", export_main,
     lambda t: ["onnx", "--weights", str(t / "w.safetensors"), "-o", str(t / "x.onnx"), "--set", "num_block=["],
     r"^osir export: options error: --set num_block: not valid YAML: while parsing a flow node"),
    ("export: an alias bomb in --set", export_main,
     lambda t: ["onnx", "--weights", str(t / "w.safetensors"), "-o", str(t / "x.onnx"), "--set",
                f"num_block={alias_bomb()}"],
     r"^osir export: options error: --set num_block: " + _BOMB),
    # a degradation card's structure, naming the card and the key
    ("degrade: card images: a list", degrade_main, lambda t: _card(t, images=["img0"]),
     r"--card '.*card\.yml': images: expected a mapping of image name to seed, got \['img0'\]$"),
    ("degrade: card seed of an image not an integer", degrade_main, lambda t: _card(t, images={"img0": "abc"}),
     r"--card '.*card\.yml': images\.img0: " + _SEED + "'abc'$"),
    ("degrade: card base seed a fraction", degrade_main, lambda t: _card(t, seed=1.5),
     r"--card '.*card\.yml': seed: " + _SEED + r"1\.5$"),
    ("degrade: card degradation of an unknown type", degrade_main,
     lambda t: _card(t, degradation={"type": "Nope"}),
     r"--card '.*card\.yml': degradation\.type: unknown"),
    ("degrade: card without images", degrade_main, lambda t: _card(t, text="seed: 0\ndegradation: {}\n"),
     r"--card '.*card\.yml': not a readable degradation card \(no images: key\)$"),
    # compare's GT of one name, two files (issue 23.7)
    ("compare: gt/img0.png and gt/img0.jpg", compare_main, _compare_same_stem_gt,
     r"^osir\.compare: error: '.*gt/img0\.jpg' and '.*gt/img0\.png' have the same name 'img0'"),
    # a full disk (issue 23.4): one line naming the file, nothing under its name, no temporary file
    ("train: disk full while taking the experiment lock", on_a_full_disk(train_main), _train_argv,
     r"^osir: error: cannot write the lock file '.*experiments/tiny\.lock' of experiment folder "
     r"'.*experiments/tiny': No space left on device$", ["experiments"]),
    ("export: disk full while writing the ONNX file", on_a_full_disk(export_main, full_onnx_disk), _tiny_export,
     r"^osir export: error: cannot write '.*x\.onnx': No space left on device$"),
    ("compare: disk full while writing a thumbnail", on_a_full_disk(compare_main), _compare_pair,
     r"^osir\.compare: error: cannot write image '.*report/thumbs/0_set/run\.png': No space left on device$",
     ["report/thumbs/0_set"]),
]
