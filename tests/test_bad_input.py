"""Bad input, as a new user meets it: every case ends in exit code 2 and one line naming the file or
key, with no traceback, from every command (train, test, metrics, degrade, restore, recognize, export, web),
and nothing else happens: no planted pickle runs, no earlier run is archived, no temporary file is left, no
file remains under a name whose write failed, and the failing call creates, moves or removes no file or
folder under the test's folder (a row lists what it may write, as globs, in an optional fifth element).

The builders simulate what a user meets:

* a full disk (issue 23.4) at the lowest level Python writes through, ``Path.write_bytes`` (osir's image
  writer): half the bytes reach the temporary file, then the error a full disk gives (``OSError(ENOSPC)``);
* decompression bombs (issue 23.11): PNGs built with zlib/struct, a 65-byte one claiming 50000x50000 and
  a valid 20000x20000 grey one (389 KB) that OpenCV would decode to 400 MB (4.8 GB as float32 RGB);
* NaN/Inf or truncated weights and a missing optional package (issue 23.14): ``_without`` runs a command
  with ``sys.modules[package] = None``, so that importing it raises ModuleNotFoundError;
* an experiment folder whose lock a live process holds (the test's parent process), or one on another host.
"""
import errno
import functools
import json
import os
import re
import shutil
import socket
import struct
import sys
import zlib
from fnmatch import fnmatch
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from osir.__main__ import main as osir_main
from osir.degrade import main as degrade_main
from osir.core.checkpoint import save_network
from osir.export import main as export_main
from osir.methods.realesrgan import RRDBNet
from osir.metrics.__main__ import main as metrics_main
from osir.recognize import main as recognize_main
from osir.restore import main as restore_main
from osir.test import main as run_test_script
from osir.train import main as train_main
from tests.bad_input_review_cases import REVIEW_CASES
from tests.conftest import FIXTURES, tiny_options, write_images, write_yaml

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")

REALSR = FIXTURES / "realsr"


def _train(tmp, **overrides):
    opt = tiny_options(tmp, **overrides)
    return ["-opt", str(write_yaml(tmp / "o.yml", opt))]


def _corrupt(folder, name="img1.png"):
    (folder / name).write_bytes(b"not a png at all")
    return folder


def _train_with_a_corrupt_image(tmp, **overrides):
    argv = _train(tmp, **overrides)
    _corrupt(tmp / "gt")
    return argv


def _test_with_a_corrupt_image(tmp):
    argv = _test_file(tmp)
    _corrupt(tmp / "gt")
    return argv


def _paired_val(tmp, lq_size=(16, 16), rename=None):
    write_images(tmp / "vgt", 1, (32, 32))
    write_images(tmp / "vlq", 1, lq_size)
    if rename:
        (tmp / "vlq" / "img0.png").rename(tmp / "vlq" / rename)
    return {"type": "PairedImageDataset", "dataroot_gt": str(tmp / "vgt"), "dataroot_lq": str(tmp / "vlq"), "scale": 2}


def _trained_weights(tmp):
    assert train_main(_train(tmp, **{"train.total_iter": 1})) == 0
    return tmp / "experiments" / "tiny" / "models" / "net_g_1.safetensors"


def _test_file(tmp, **extra):
    """A test options file on the tiny images (``path`` is merged into the tiny options' paths, so that
    results stay under ``tmp``)."""
    opt = tiny_options(tmp)
    opt["path"].update(extra.pop("path", {}))
    opt.update({"name": "t", "datasets": {"real": {"type": "SingleImageDataset", "dataroot_lq": str(tmp / "gt")}}},
               **extra)
    opt.pop("train")
    return ["-opt", str(write_yaml(tmp / "t.yml", opt))]


def _truncated(tmp):
    path = tmp / "g.safetensors"
    save_file({"w": torch.zeros(100)}, str(path))
    path.write_bytes(path.read_bytes()[:60])
    return path


def _degrade(tmp, **overrides):
    write_images(tmp / "hr", 1, (96, 96))
    spec = {"type": "RealESRGANDegradation", "preset": "realesrgan_x4", **overrides}
    return ["-opt", str(write_yaml(tmp / "d.yml", {"degradation": spec})), "--input", str(tmp / "hr"),
            "--output", str(tmp / "out")]


def _metrics(tmp, restored=None, gt=None, *extra):
    return ["--restored", str(restored or REALSR / "osediff"), "--gt", str(gt or REALSR / "HR"), *extra]


#: a file that a planted pickle creates when unpickled (it must never exist), and an earlier run's
#: file that a refused start must leave in place (not archived)
MARKER, OLD_RUN = "pickled_code_ran", "experiments/tiny/models/earlier_run.txt"


class _PickledCall:
    """Unpickled with weights_only=False, calls ``open(marker, 'w')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled(tmp, name="w.pth"):
    """A .pth shaped like a state dict whose pickle runs code (writes ``MARKER``)."""
    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"alpha": torch.zeros(1), "beta": _PickledCall(tmp / MARKER)}, tmp / name)
    return str(tmp / name)


def _dists_pickled(tmp):
    return {"d": {"type": "dists", "pretrained_model_path": _pickled(tmp, "dists.pth"), "backbone_path": __file__}}


def _with_old_run(tmp, argv):
    (tmp / OLD_RUN).parent.mkdir(parents=True, exist_ok=True)
    (tmp / OLD_RUN).write_text("an earlier run")
    return argv


def _named(tmp, name, argv=None):
    """``argv`` (default: a training run beside an earlier run whose lock a live process holds) with
    ``--set name=<name>`` (issue 23 review A: ``name: .`` made ``experiments/`` itself the experiment folder,
    archived a running run's folder and took ``experiments.lock``)."""
    return (_locked(tmp) if argv is None else argv) + ["--set", f"name={name}"]


def _earlier_results(tmp, argv):
    """``argv`` beside an earlier ``osir test`` run's results (results/t/earlier.txt)."""
    (tmp / "results" / "t").mkdir(parents=True)
    (tmp / "results" / "t" / "earlier.txt").write_text("an earlier run")
    return argv


def _tiny_pair(tmp, size):
    for sub in ("r", "g"):
        (tmp / sub).mkdir()
        cv2.imwrite(str(tmp / sub / "a.png"), np.full((size, size, 3), 128, np.uint8))
    return tmp / "r", tmp / "g"


def _alias_bomb(tmp, levels=6):
    """A 'billion laughs' options file: ``seed`` holds nested lists of nine aliases each (9**levels values
    from a few hundred bytes; issue 23.13 used 9**9)."""
    nested = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    nested += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    argv = _train(tmp)
    (tmp / "o.yml").write_text((tmp / "o.yml").read_text().replace("seed: 3\n", f"seed: [{', '.join(nested)}]\n"))
    return argv


def _plain_pickle(tmp):
    """A plain ``pickle.dump`` file (protocol 4, no torch zip) whose unpickling writes ``MARKER``."""
    import pickle
    with open(tmp / "plain.pkl", "wb") as f:
        pickle.dump({"w": _PickledCall(tmp / MARKER)}, f, protocol=4)
    return str(tmp / "plain.pkl")


# ----------------------------------------------------------------------------- image faults (issue 23.4, 23.11)
#: the builders' monkeypatches (a full disk, an environment variable), undone after every test
PATCHES = pytest.MonkeyPatch()


@pytest.fixture(autouse=True)
def _undo_patches():
    yield
    PATCHES.undo()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, idat: bytes) -> bytes:
    """An 8-bit grey PNG (signature, IHDR, one IDAT, IEND)."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def bomb_png(width: int = 50000, height: int = 50000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with no pixel data (65 bytes)."""
    return _png(width, height, zlib.compress(b""))


@functools.lru_cache(maxsize=None)
def black_png(width: int, height: int) -> bytes:
    """A valid, fully decodable black grey PNG (rows: filter byte 0 and zeros), compressed row by row."""
    z = zlib.compressobj(9)
    row = bytes(width + 1)
    return _png(width, height, b"".join(z.compress(row) for _ in range(height)) + z.flush())


def hdr_bomb() -> bytes:
    """A Radiance HDR header claiming 50000x50000: a format PIL does not read, OpenCV does (its own limit)."""
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 50000 +X 50000\n" + bytes(64)


def _replace(folder: Path, data: bytes, name: str = "img1.png") -> Path:
    (folder / name).write_bytes(data)
    return folder


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_disk(patches=None) -> None:
    """From now on every ``Path.write_bytes`` writes half its bytes, then fails as a full disk does."""
    real = Path.write_bytes

    def full(self, data):
        data = bytes(data)
        real(self, data[: len(data) // 2])
        raise OSError(ENOSPC.errno, ENOSPC.strerror)

    (patches or PATCHES).setattr(Path, "write_bytes", full)


def _rrdb_x4():
    """A tiny random RRDBNet x4 (num_grow_ch 32, so that spandrel recognises the file)."""
    torch.manual_seed(0)
    return RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=4)


def _tiny_weights(tmp: Path) -> Path:
    """The tiny RRDBNet x4 as osir safetensors (as tests/test_restore.py)."""
    save_network(_rrdb_x4(), tmp / "w.safetensors")
    return tmp / "w.safetensors"


def _restore(tmp: Path, *extra, inputs=None) -> list:
    """``osir restore --model realesrgan-x4`` with the tiny weights, of ``inputs`` (default: one 16x16 image)."""
    if inputs is None:
        write_images(tmp / "in", 1, (16, 16))
        inputs = [tmp / "in" / "img0.png"]
    return ["--model", "realesrgan-x4", "--weights", str(_tiny_weights(tmp)), *map(str, inputs),
            "-o", str(tmp / "out"), *extra]


def _then(action, argv):
    action()
    return argv


# ----------------------------------------------------------------------------- weights and packages (issue 23.14)
def _nan_rrdb(tmp, name="nan.safetensors", wrap=None):
    """Tiny RRDBNet x4 weights with one NaN in conv_first.weight and one Inf in conv_last.bias."""
    state = {k: v.clone().contiguous() for k, v in _rrdb_x4().state_dict().items()}
    state["conv_first.weight"][0, 0, 0, 0] = float("nan")
    state["conv_last.bias"][1] = float("inf")
    if name.endswith(".safetensors"):
        save_file(state, str(tmp / name))
    else:
        torch.save({wrap: state} if wrap else state, tmp / name)
    return str(tmp / name)


def _truncated_rrdb(tmp, name="g.safetensors"):
    """The tiny RRDBNet x4 as safetensors, cut after 200 bytes."""
    save_network(_rrdb_x4(), tmp / name)
    (tmp / name).write_bytes((tmp / name).read_bytes()[:200])
    return str(tmp / name)


def _restore_with(tmp, weights, *extra):
    """``osir restore --weights weights`` of one 16x16 image."""
    return ["--weights", weights, *extra, str(write_images(tmp / "in", 1, (16, 16)) / "img0.png"), "-o",
            str(tmp / "out")]


def _nan_unet(tmp):
    """The tiny IR-SDE network's own weights with one NaN in init_conv.weight."""
    from osir.engine.trainer import build_method
    from osir.core.options import load_options
    state = build_method(load_options(_train(tmp)[1], [])).networks["g"].state_dict()
    state = {k: v.clone().contiguous() for k, v in state.items()}
    state["init_conv.weight"].view(-1)[0] = float("nan")
    save_file(state, str(tmp / "nan_unet.safetensors"))
    return str(tmp / "nan_unet.safetensors")


def _metrics_opt(tmp, metrics, *extra):
    """``osir.metrics`` on the RealSR fixture with an options file holding ``metrics``."""
    return _metrics(tmp, None, None, "-opt", str(write_yaml(tmp / "m.yml", {"metrics": metrics})), *extra)


def _nan_brisque(tmp):
    """pyiqa's BRISQUE SVM file under --weights-dir, holding a NaN (read by pyiqa's own torch.load)."""
    (tmp / "w" / "pyiqa").mkdir(parents=True)
    torch.save({"sv": torch.tensor([1.0, float("nan")])}, tmp / "w" / "pyiqa" / "brisque_svm_weights.pth")
    return _metrics_opt(tmp, {"b": {"type": "pyiqa", "metric": "brisque"}}, "--weights-dir", str(tmp / "w"))


def _without(package, main, *also):
    """``main`` run as if ``package`` were not installed (``sys.modules[package] = None`` makes ``import``
    raise ModuleNotFoundError); ``also``: modules already imported that import it, dropped for the call."""
    def run(argv):
        saved = {name: sys.modules.pop(name) for name in (package, *also) if name in sys.modules}
        sys.modules[package] = None
        try:
            return main(argv)
        finally:
            sys.modules.pop(package, None)
            for name in also:
                sys.modules.pop(name, None)
            sys.modules.update(saved)
    run.__name__ = f"{getattr(main, '__module__', '')}.main without {package}"
    return run


_NAN_RRDB = (r"weights file '.*nan\.{}' holds non-finite values in {}conv_first\.weight \(1 NaN of 216\), "
             r"{}conv_last\.bias \(1 Inf of 3\)$")


# ----------------------------------------------------------------------------- locks
def _locked(tmp, **record):
    """An experiment folder whose lock a live process holds (the test's parent process)."""
    argv = _with_old_run(tmp, _train(tmp))
    (tmp / "experiments" / "tiny.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                               **record}))
    return argv


# what a failing call may write (globs of paths under tmp_path; a folder holding an allowed path is allowed)
#: a training run that fails at its first batch: its options, its log and its (empty) folders
RUN_STARTED = ["experiments/tiny/options.yml", "experiments/tiny/train_tiny_*.log", "experiments/tiny/models",
               "experiments/tiny/training_states", "experiments/tiny/visualization"]
#: a training run that fails in its first validation (iteration 3): also the checkpoint saved just before it
FIRST_CHECKPOINT = RUN_STARTED + ["experiments/tiny/models/net_g_3.safetensors",
                                  "experiments/tiny/models/net_g_ema_3.safetensors",
                                  "experiments/tiny/training_states/3.state"]
#: ``osir test`` fails at img1: the result of img0, restored before it, stays
FIRST_RESULT = ["results/t/real/img0.png"]

# (id, command, argv builder, message regex[, what the failing call may write: globs as above])
CASES = [
    # YAML (issue 23.13): an alias bomb or a recursive alias is refused while reading; echoed values are short
    ("YAML alias bomb", train_main, _alias_bomb,
     r"o\.yml: not valid YAML: aliases expand to more than 100000 values \(an alias bomb\?\) "
     r"in .*o\.yml\", line 2"),
    ("YAML alias inside its own anchor", train_main,
     lambda t: (_train(t), (t / "o.yml").write_text((t / "o.yml").read_text().replace("seed: 3", "seed: &s [1, *s]"))
                )[0],
     r"o\.yml: not valid YAML: alias \*s is inside its own anchor \(a recursive structure\)"),
    ("a long value is echoed short", train_main, lambda t: _train(t, seed=list(range(5000))),
     r"seed: \[0, 1, 2, 3, \.\.\.\] is not a valid int \("),
    ("a list as a type name", train_main, lambda t: _train(t, **{"method.type": list(range(5000))}),
     r"method\.type: expected a method name, got \[0, 1, 2, 3, \.\.\.\]$"),
    # weights (issue 23.16): torch's refusal without its colour codes or its advice to unpickle anyway
    ("pretrained weights: a plain pickle", train_main,
     lambda t: _train(t, **{"path.pretrained": {"g": _plain_pickle(t)}}),
     r"cannot read '.*plain\.pkl' as a weights-only torch file: torch's weights-only reader refused its pickle "
     r"\(Unsupported operand 149\); osir does not load pickled code: convert the file where you trust it"),
    ("options file missing", train_main, lambda t: ["-opt", str(t / "nope.yml")], r"options file not found: .*nope\.yml"),
    ("unknown key", train_main, lambda t: _train(t) + ["--set", "train.totl_iter=3"],
     r"train\.totl_iter: unknown key \(did you mean 'total_iter'\?\)"),
    ("bad --set", train_main, lambda t: _train(t) + ["--set", "train.total_iter"], r"--set expects key\.path=value"),
    ("missing data folder", train_main, lambda t: _train(t, **{"datasets.train.dataroot_gt": str(t / "missing")}),
     r"1 file or folder the options name are missing: datasets\.train\.dataroot_gt: folder '.*missing' not found "
     r"\(the ground-truth \(GT\) images\)"),       # preflight (issue 27): before anything is built
    ("empty data folder", train_main,
     lambda t: (t / "empty").mkdir() or _train(t, **{"datasets.train.dataroot_gt": str(t / "empty")}),
     r"no images \(.*\) in '.*empty'"),
    ("corrupt training image", train_main, _train_with_a_corrupt_image,
     r"cannot decode image '.*img1\.png' \(corrupt or not an image\)", RUN_STARTED),
    ("corrupt image in a loader worker", train_main,
     lambda t: _train_with_a_corrupt_image(t, **{"datasets.train.num_workers": 1}),
     r"cannot decode image '.*img1\.png' \(corrupt or not an image\)", RUN_STARTED),
    ("GT/LQ size mismatch", train_main, lambda t: _train(t, **{"datasets.val": _paired_val(t, (20, 20))}),
     r"size mismatch: GT '.*vgt/img0\.png' is 32x32, LQ '.*vlq/img0\.png' is 20x20 \(scale 2\)", FIRST_CHECKPOINT),
    ("unmatched names", train_main, lambda t: _train(t, **{"datasets.val": _paired_val(t, rename="other.png")}),
     r"GT image '.*img0\.png' has no LQ partner 'img0' in '.*vlq'"),
    ("truncated safetensors", train_main, lambda t: _train(t, **{"path.pretrained": {"g": str(_truncated(t))}}),
     r"cannot read '.*g\.safetensors' as safetensors"),
    ("weights of another network", train_main,
     lambda t: (save_file({"w": torch.zeros(2)}, str(t / "other.safetensors")),
                _train(t, **{"path.pretrained": {"g": str(t / "other.safetensors")}}))[1],
     r"'.*other\.safetensors' does not fit ConditionalUNet: \d+ missing keys"),
    ("resume state missing", train_main, lambda t: _train(t, **{"path.resume_state": str(t / "5.state")}),
     r"path\.resume_state: file '.*5\.state' not found \(a training state to resume from\)"),   # preflight
    ("image smaller than a metric's window", train_main,
     lambda t: _train(t, **{"metrics": {"ssim": {"type": "ssim"}}, "datasets.val.dataroot_gt":
                            str(write_images(t / "small", 1, (8, 8)))}),
     r"metrics\.ssim: '.*img0\.png' is 8x8, smaller than the 11x11 the metric needs", FIRST_CHECKPOINT),
    ("optimiser over an unknown group", train_main, lambda t: _train(t, **{"train.optimizers.g.params": ["gg"]}),
     r"train\.optimizers\.g\.params: unknown parameter group 'gg' \(did you mean 'g'\?\)"),
    ("test: corrupt test image", run_test_script, _test_with_a_corrupt_image, r"cannot decode image '.*img1\.png'",
     FIRST_RESULT),
    ("test: folder for a plain network", run_test_script, lambda t: _test_file(t, path={"pretrained": {"g": str(t)}}),
     r"path\.pretrained\.g: '.*' is a folder, but network 'g' \(ConditionalUNet\) loads from a weights file"),
    ("test: truncated weights", run_test_script, lambda t: _test_file(t, path={"pretrained": {"g": str(_truncated(t))}}),
     r"cannot read '.*g\.safetensors' as safetensors"),
    ("metrics: restored folder missing", metrics_main, lambda t: _metrics(t, t / "nothing"),
     r"1 file or folder the arguments name are missing: --restored: folder '.*nothing' not found \(the restored images\)"),
    ("metrics: restored and GT the same folder", metrics_main, lambda t: _metrics(t, REALSR / "HR"),
     r"--restored and --gt are the same folder"),
    ("metrics: output into the GT folder", metrics_main,
     lambda t: _metrics(t, None, None, "--output", str(REALSR / "HR")),
     r"--output '.*HR' lies in the GT folder '.*HR': osir\.metrics does not write into it"),
    ("metrics: restored without GT", metrics_main,
     lambda t: _metrics(t, None, shutil.copytree(REALSR / "HR", t / "hr", ignore=shutil.ignore_patterns("Canon*"))),
     r"restored image '.*Canon_004_LR4\.png' has no GT partner in '.*hr'"),
    ("metrics: size mismatch", metrics_main,
     lambda t: _metrics(t, write_images(t / "r", 1, (32, 32)), write_images(t / "g", 1, (40, 40))),
     r"size mismatch: '.*r/img0\.png' is 32x32, GT '.*g/img0\.png' is 40x40"),
    ("metrics: 1x1 image", metrics_main, lambda t: _metrics(t, *_tiny_pair(t, 1)),
     r"metrics\.ssim: '.*a\.png' is 1x1, smaller than the 11x11 the metric needs"),
    ("metrics: options file without metrics", metrics_main,
     lambda t: _metrics(t) + ["-opt", str(write_yaml(t / "m.yml", {"name": "x"}))], r"no metrics: section"),
    ("degrade: resize_prob of the wrong length", degrade_main, lambda t: _degrade(t, resize_prob=[0.5, 0.5]),
     r"degradation\.resize_prob: expected 3 probabilities \(up, down, keep\), got 2"),
    ("degrade: resize_prob not summing to 1", degrade_main, lambda t: _degrade(t, resize_prob=[0.5, 0.4, 0.3]),
     r"degradation\.resize_prob: probabilities must sum to 1, got 1\.2"),
    ("degrade: probability above 1", degrade_main, lambda t: _degrade(t, final_sinc_prob=1.5),
     r"degradation\.final_sinc_prob: probabilities must lie in \[0, 1\], got 1\.5"),
    ("degrade: empty input folder", degrade_main,
     lambda t: (t / "e").mkdir() or [*_degrade(t)[:2], "--input", str(t / "e"), "--output", str(t / "o")],
     r"no images \(.*\) in '.*e'"),
    ("degrade: image too small for the degradation", degrade_main,
     lambda t: [*_degrade(t)[:2], "--input", str(write_images(t / "small", 1, (32, 32))), "--output", str(t / "o")],
     r"GT patches of 32x32 are too small for this degradation"),
    ("degradation crop larger than the patches", train_main,
     lambda t: _train(t, degradation={"type": "RealESRGANDegradation", "gt_size": 64}),
     r"degradation\.gt_size 64 exceeds datasets\.train\.gt_size 16"),
    ("bad mask option", train_main,
     lambda t: _train(t, **{"datasets.train.degradation": {"type": "RandomMask", "strokes": [4, 1]}}),
     r"degradation: strokes and width must be \[low, high\], got \[4, 1\]"),
    ("metrics: output is an existing file", metrics_main,
     lambda t: (t / "f").write_text("x") and _metrics(t, None, None, "--output", str(t / "f")), r"File exists|Not a directory"),
    ("metrics: restored inside the GT folder", metrics_main,
     lambda t: _metrics(t, shutil.copytree(REALSR / "osediff", t / "hr" / "sr"), shutil.copytree(REALSR / "HR", t / "hr",
                                                                                                   dirs_exist_ok=True)),
     r"--restored '.*hr/sr' lies inside the GT folder '.*hr'"),
    ("degrade: unreadable card", degrade_main,
     lambda t: (t / "card.yml").write_text("[: nope") and ["--card", str(t / "card.yml"), "--input", str(t),
                                                           "--output", str(t / "o")],
     r"--card '.*card\.yml': not a readable degradation card"),
    # metric weights files are read as weights only (issue 23.1): the planted pickle never runs
    ("metrics: pickled code in a weights file", metrics_main,
     lambda t: _metrics(t) + ["-opt", str(write_yaml(t / "m.yml", {"metrics": _dists_pickled(t)}))],
     r"checkpoint error: refused '.*dists\.pth': not a weights-only file \(it would call io\.open\); "
     r"osir runs no pickled code"),
    ("metrics: pickled code found through --weights-dir", metrics_main,
     lambda t: (_pickled(t, "w/pyiqa/brisque_svm_weights.pth"),
                _metrics(t) + ["-opt", str(write_yaml(t / "m.yml", {"metrics": {"b": {"type": "pyiqa",
                                                                                     "metric": "brisque"}}})),
                               "--weights-dir", str(t / "w")])[1],
     r"refused '.*w/pyiqa/brisque_svm_weights\.pth': not a weights-only file \(it would call io\.open"),
    ("train: pickled code in a metric's weights", train_main,
     lambda t: _with_old_run(t, _train(t, metrics=_dists_pickled(t))),
     r"refused '.*dists\.pth': not a weights-only file \(it would call io\.open"),
    ("test: pickled code in a metric's weights", run_test_script,
     lambda t: _test_file(t, metrics={"l": {"type": "lpips", "backbone_path": _pickled(t, "alex.pth"),
                                            "pretrained_model_path": __file__}}),
     r"refused '.*alex\.pth': not a weights-only file \(it would call io\.open"),
    # numbers (issue 23.9, 23.12): options errors naming the key, before an earlier run is archived
    ("negative total_iter", train_main, lambda t: _with_old_run(t, _train(t) + ["--set", "train.total_iter=-3"]),
     r"options error: train\.total_iter: must be greater than 0, got -3"),
    ("zero validation frequency", train_main, lambda t: _with_old_run(t, _train(t, **{"val.freq": 0})),
     r"val\.freq: must be greater than 0, got 0"),
    ("zero checkpoint frequency", train_main, lambda t: _with_old_run(t, _train(t, **{"logger.checkpoint_freq": 0})),
     r"logger\.checkpoint_freq: must be greater than 0, got 0"),
    ("zero batch size", train_main, lambda t: _with_old_run(t, _train(t, **{"datasets.train.batch_size": 0})),
     r"datasets\.train\.batch_size: must be greater than 0, got 0"),
    ("zero gradient accumulation", train_main, lambda t: _train(t) + ["--set", "train.grad_accum_steps=0"],
     r"train\.grad_accum_steps: must be greater than 0, got 0"),
    ("negative seed", train_main, lambda t: _with_old_run(t, _train(t, seed=-1)),
     r"seed: must be greater than or equal to 0, got -1"),
    ("test: zero batch size", run_test_script, lambda t: _test_file(t) + ["--set", "datasets.real.batch_size=0"],
     r"datasets\.real\.batch_size: must be greater than 0"),
    # the experiment's name is one folder name (issue 23 review A): refused before any lock is taken or folder archived
    ("name: '.' (the experiments root itself)", train_main, lambda t: _named(t, "."),
     r"osir: options error: name: must be one folder name \(not empty, no '/' or '\\', not '\.' or '\.\.', no leading "
     r"or trailing whitespace, no NUL\), got '\.'$"),
    ("name: '..'", train_main, lambda t: _named(t, ".."), r"name: must be one folder name \(.*\), got '\.\.'$"),
    ("name: 'a/b'", train_main, lambda t: _named(t, "a/b", _with_old_run(t, _train(t))),
     r"name: must be one folder name \(.*\), got 'a/b'$"),
    ("name: ' tiny' (leading space)", train_main, lambda t: _with_old_run(t, _train(t, name=" tiny")),
     r"name: must be one folder name \(.*\), got ' tiny'$"),
    ("test: name '.' (the results root itself)", run_test_script,
     lambda t: _earlier_results(t, _named(t, ".", _test_file(t))), r"name: must be one folder name \(.*\), got '\.'$"),
    # sizes and scales are positive (issue 23 review D): options errors before an earlier run is archived
    ("gt_size 0", train_main, lambda t: _with_old_run(t, _train(t, **{"datasets.train.gt_size": 0})),
     r"osir: options error: datasets\.train\.gt_size: must be greater than 0, got 0$"),
    ("gt_size -16", train_main, lambda t: _with_old_run(t, _train(t, **{"datasets.train.gt_size": -16})),
     r"osir: options error: datasets\.train\.gt_size: must be greater than 0, got -16$"),
    ("paired set: scale 0", train_main, lambda t: _with_old_run(t, _train(t, **{"datasets.val": {**_paired_val(t),
                                                                                                "scale": 0}})),
     r"datasets\.val\.scale: must be greater than 0, got 0$"),
    ("paired set: gt_size not a multiple of scale", train_main,
     lambda t: _with_old_run(t, _train(t, **{"datasets.val": {**_paired_val(t), "gt_size": 15}})),
     r"osir: options error: datasets\.val: gt_size 15 is not a multiple of scale 2$"),
    ("degradation: BicubicDownscale scale 0", train_main,
     lambda t: _with_old_run(t, _train(t, **{"datasets.train.degradation": {"type": "BicubicDownscale", "scale": 0}})),
     r"datasets\.train\.degradation\.scale: must be greater than 0, got 0$"),
    ("degradation: RandomMask negative stroke width", train_main,
     lambda t: _with_old_run(t, _train(t, **{"datasets.train.degradation": {"type": "RandomMask", "width": [-3, -1]}})),
     r"datasets\.train\.degradation\.width\[0\]: must be greater than 0, got -3$"),
    ("degradation: RandomMask max_box 0", train_main,
     lambda t: _with_old_run(t, _train(t, **{"datasets.train.degradation": {"type": "RandomMask", "max_box": 0,
                                                                            "box_prob": 1}})),
     r"datasets\.train\.degradation\.max_box: must be greater than or equal to 0\.1, got 0"),
    ("degradation: GaussianBlur kernel_size -1", train_main,
     lambda t: _with_old_run(t, _train(t, **{"datasets.train.degradation": {"type": "GaussianBlur",
                                                                            "kernel_size": -1}})),
     r"datasets\.train\.degradation\.kernel_size: must be greater than 0, got -1$"),
    # NaN/Inf (issue 23.6): an input names the file; an output names the image, the network and its weights
    ("metrics: NaN in a float TIFF", metrics_main,
     lambda t: _metrics(t, _nan_tiff(t / "nr" / "a.tif").parent, _tiny_pair(t, 16)[1]),
     r"image '.*nr/a\.tif' holds 1 NaN/Inf value\(s\) \(first at x=5, y=3\)"),
    ("test: NaN in a float TIFF", run_test_script, lambda t: (_test_file(t), _nan_tiff(t / "gt" / "a.tif"))[0],
     r"image '.*gt/a\.tif' holds 1 NaN/Inf value\(s\)"),
    ("test: weights overflowing to NaN", run_test_script,
     lambda t: _test_file(t, path={"pretrained": {"g": _overflowing(t)}}),
     r"restoring '.*gt/img0\.png' with IRSDE gave \d+ NaN/Inf value\(s\): the weights of network 'g' from "
     r"'.*huge\.safetensors' are the likely cause"),
    # two files of one name where folders are matched by name (issue 23.7): both named
    ("metrics: a.png and a.jpg among the restored images", metrics_main,
     lambda t: _metrics(t, _same_stem(t / "r"), write_images(t / "g", 2, (96, 96))),
     r"'.*r/img1\.jpg' and '.*r/img1\.png' have the same name 'img1'"),
    ("metrics: a.png and a.jpg among the GT images", metrics_main,
     lambda t: _metrics(t, write_images(t / "r", 2, (96, 96)), _same_stem(t / "g")),
     r"'.*g/img1\.jpg' and '.*g/img1\.png' have the same name 'img1'"),
    ("paired set with a.png and a.jpg", train_main,
     lambda t: _train(t, **{"datasets.val": {**_paired_val(t), "dataroot_gt": str(_same_stem(t / "vgt", "img0"))}}),
     r"'.*vgt/img0\.jpg' and '.*vgt/img0\.png' have the same name 'img0'"),
    ("degrade: a.png and a.jpg", degrade_main,
     lambda t: [*_degrade(t)[:2], "--input", str(_same_stem(t / "hr2")), "--output", str(t / "o")],
     r"'.*hr2/img1\.jpg' and '.*hr2/img1\.png' have the same name 'img1'"),
    # image faults (issue 23.11): the header's pixel count against the limit, before decoding
    ("training image: a PNG header claiming 50000x50000", train_main,
     lambda t: _then(lambda: _replace(t / "gt", bomb_png()), _train(t)),
     r"image '.*gt/img1\.png' is 50000x50000 \(2500 megapixels\), over the limit of 178\.957 megapixels "
     r"\(a decompression bomb\?\); a larger limit: OSIR_MAX_IMAGE_PIXELS=<pixels> or --max-megapixels", RUN_STARTED),
    ("metrics: a valid 20000x20000 grey PNG (389 KB)", metrics_main,
     lambda t: _metrics(t, _replace(write_images(t / "r", 1, (32, 32)), black_png(20000, 20000), "img0.png"),
                        write_images(t / "g", 1, (32, 32))),
     r"image '.*r/img0\.png' is 20000x20000 \(400 megapixels\), over the limit of 178\.957 megapixels"),
    ("degrade: an image just above OSIR_MAX_IMAGE_PIXELS", degrade_main,
     lambda t: _then(lambda: PATCHES.setenv("OSIR_MAX_IMAGE_PIXELS", "9000"), _degrade(t)),
     r"image '.*hr/img0\.png' is 96x96 \(0\.009216 megapixels\), over the limit of 0\.009 megapixels"),
    ("training image: a header beyond OpenCV's own limit (a format PIL cannot read)", train_main,
     lambda t: _then(lambda: _replace(t / "gt", hdr_bomb()), _train(t)),
     r"cannot decode image '.*gt/img1\.png' \(its header claims more pixels than OpenCV's own limit, "
     r"OPENCV_IO_MAX_IMAGE_PIXELS", RUN_STARTED),
    ("test: an empty image file", run_test_script, lambda t: _then(lambda: _replace(t / "gt", b""), _test_file(t)),
     r"image '.*gt/img1\.png' is an empty file \(0 bytes\)", FIRST_RESULT),
    ("restore: --max-megapixels 0", restore_main, lambda t: _restore(t, "--max-megapixels", "0"),
     r"osir restore: options error: --max-megapixels must be a number of megapixels above 0, got 0$"),
    ("restore: OSIR_MAX_IMAGE_PIXELS not a number", restore_main,
     lambda t: _then(lambda: PATCHES.setenv("OSIR_MAX_IMAGE_PIXELS", "lots"), _restore(t)),
     r"OSIR_MAX_IMAGE_PIXELS='lots': expected a number of pixels of at least 1 \(default 178956970\)$"),
    # limits that say what is wrong (issue 23 review G): below one pixel, infinity, NaN, not above 0
    ("restore: --max-megapixels 1e-9 (less than one pixel)", restore_main,
     lambda t: _restore(t, "--max-megapixels", "1e-9"),
     r"osir restore: options error: --max-megapixels 1e-09 is 0\.001 pixels, less than one pixel: give at least "
     r"1e-06 \(one pixel\)$"),
    ("restore: --max-megapixels inf", restore_main, lambda t: _restore(t, "--max-megapixels", "inf"),
     r"osir restore: options error: --max-megapixels inf is not a limit: give a large number of megapixels instead "
     r"\(the default is 178\.957\)$"),
    *[(f"restore: OSIR_MAX_IMAGE_PIXELS={value}", restore_main,
       lambda t, value=value: _then(lambda: PATCHES.setenv("OSIR_MAX_IMAGE_PIXELS", value), _restore(t)),
       rf"osir restore: error: OSIR_MAX_IMAGE_PIXELS='{re.escape(value)}': {why} \(default 178956970\)$")
      for value, why in [("0.5", "less than one pixel; expected a number of pixels of at least 1"),
                         ("nan", "not a number; expected a number of pixels of at least 1"),
                         ("-1", "not above 0; expected a number of pixels of at least 1"),
                         ("inf", "infinity is not a limit; give a large number of pixels instead")]],
    # a full disk (issue 23.4): one line naming the file, nothing under its name, no temporary file left
    ("restore: disk full while writing the output", restore_main, lambda t: _then(fill_disk, _restore(t)),
     r"osir restore: error: cannot write image '.*out/img0\.png': No space left on device$", ["out"]),
    ("degrade: disk full while writing an image", degrade_main, lambda t: _then(fill_disk, _degrade(t)),
     r"osir\.degrade: error: cannot write image '.*out/GT/img0\.png': No space left on device$", ["out/GT"]),
    ("test: disk full while writing a restored image", run_test_script, lambda t: _then(fill_disk, _test_file(t)),
     r"cannot write image '.*results/t/real/img0\.png': No space left on device$", ["results/t/real"]),
    # NaN / Inf pretrained weights (issue 23.14): refused where the file is read, naming the file and the tensors
    ("restore: NaN weights", restore_main, lambda t: _restore_with(t, _nan_rrdb(t)),
     r"osir restore: checkpoint error: " + _NAN_RRDB.format("safetensors", "", "")),
    ("restore: NaN in a release file's params_ema", restore_main,
     lambda t: _restore_with(t, _nan_rrdb(t, "nan.pth", "params_ema"), "--model", "realesrgan-x4"),
     _NAN_RRDB.format("pth", r"params_ema\.", r"params_ema\.")),
    ("recognize: NaN weights", recognize_main, lambda t: [_nan_rrdb(t)], _NAN_RRDB.format("safetensors", "", "")),
    ("export: NaN weights", export_main,
     lambda t: ["onnx", "--model", "realesrgan", "--weights", _nan_rrdb(t), "-o", str(t / "x.onnx")],
     _NAN_RRDB.format("safetensors", "", "")),
    ("train: NaN path.pretrained", train_main, lambda t: _train(t, **{"path.pretrained": {"g": _nan_unet(t)}}),
     r"osir: checkpoint error: weights file '.*nan_unet\.safetensors' holds non-finite values in "
     r"init_conv\.weight \(1 NaN of \d+\)$"),
    ("test: NaN path.pretrained", run_test_script, lambda t: _test_file(t, path={"pretrained": {"g": _nan_unet(t)}}),
     r"weights file '.*nan_unet\.safetensors' holds non-finite values in init_conv\.weight \(1 NaN of \d+\)$"),
    ("metrics: NaN in a metric's weights", metrics_main,
     lambda t: _metrics_opt(t, {"d": {"type": "dists", "pretrained_model_path": _nan_rrdb(t, "dists.pth"),
                                      "backbone_path": __file__}}),
     r"weights file '.*dists\.pth' holds non-finite values in conv_first\.weight"),
    ("metrics: NaN in a file pyiqa reads itself", metrics_main, _nan_brisque,
     r"weights file '.*w/pyiqa/brisque_svm_weights\.pth' holds non-finite values in sv \(1 NaN of 2\)$"),
    # a truncated safetensors file (SafetensorError) on every read path
    ("restore: truncated safetensors", restore_main, lambda t: _restore_with(t, _truncated_rrdb(t)),
     r"osir restore: checkpoint error: cannot read '.*g\.safetensors' as safetensors: Error while deserializing"),
    ("restore --model: truncated safetensors", restore_main,
     lambda t: _restore_with(t, _truncated_rrdb(t), "--model", "realesrgan-x4"),
     r"cannot read '.*g\.safetensors' as safetensors: Error while deserializing"),
    ("recognize: truncated safetensors", recognize_main, lambda t: [_truncated_rrdb(t)],
     r"osir recognize: checkpoint error: cannot read '.*g\.safetensors' as safetensors"),
    ("export: truncated safetensors", export_main,
     lambda t: ["onnx", "--model", "realesrgan", "--weights", _truncated_rrdb(t), "-o", str(t / "x.onnx")],
     r"osir export: checkpoint error: cannot read '.*g\.safetensors' as safetensors"),
    ("metrics: truncated safetensors", metrics_main,
     lambda t: _metrics_opt(t, {"d": {"type": "dists", "pretrained_model_path": _truncated_rrdb(t, "dists.safetensors"),
                                      "backbone_path": __file__}}),
     r"cannot read '.*dists\.safetensors' as safetensors"),
    ("train: DA-CLIP's clip_checkpoint truncated (read by open_clip)", train_main,
     lambda t: _train(t, method={"type": "DACLIP", "clip_model": "ViT-S-32",
                                 "clip_checkpoint": _truncated_rrdb(t, "clip.safetensors")}),
     r"osir: checkpoint error: cannot load the CLIP checkpoint '.*clip\.safetensors' into open_clip's ViT-S-32: "
     r"SafetensorError: Error while deserializing header"),
    # a missing optional package: one line with the pip command (osir.core.registry.missing_package)
    ("osir web without gradio", _without("gradio", osir_main, "osir.web"), lambda t: ["web"],
     r"^osir web: error: osir web needs the package 'gradio', which is not installed "
     r'\(pip install "osir\[web\]"\)$'),
    ("export without onnx", _without("onnx", export_main),
     lambda t: ["onnx", "--weights", str(_tiny_weights(t)), "-o", str(t / "x.onnx")],
     r"osir export: error: osir\.[\w.]+ needs the package 'onnx', which is not installed "
     r'\(pip install "osir\[export\]"\)$'),
    ("export --int8 without onnxruntime", _without("onnxruntime", export_main),
     lambda t: ["onnx", "--weights", str(_tiny_weights(t)), "-o", str(t / "x.onnx"), "--int8"],
     r"needs the package 'onnxruntime', which is not installed "
     r'\(pip install "osir\[export\]"\)$'),
    ("restore without spandrel", _without("spandrel", restore_main), lambda t: _restore_with(t, str(_tiny_weights(t))),
     r"osir restore: error: osir\.[\w.]+ needs the package 'spandrel', which is not installed "
     r"\(pip install spandrel\)$"),
    ("train DA-CLIP without open_clip", _without("open_clip", train_main),
     lambda t: _train(t, method={"type": "DACLIP", "clip_model": "ViT-S-32"}),
     r"needs the package 'open_clip', which is not installed \(pip install open-clip-torch\)$"),
    # one run per experiment folder: a live lock refuses the start before anything is archived or written
    ("experiment folder in use by another run", train_main, _locked,
     r"error: experiment folder '.*experiments/tiny' is in use by process \d+ \(lock '.*experiments/tiny\.lock'\); "
     r"wait for that run to end, stop it, or choose another name"),
    ("experiment folder in use on another machine", train_main, lambda t: _locked(t, host="gpu-node-7"),
     r"experiment folder '.*experiments/tiny' is in use by process \d+ on gpu-node-7 \(lock '.*tiny\.lock'\)"),
    *REVIEW_CASES,                  # tests/bad_input_review_cases.py
]


def _nan_tiff(path):
    """A float32 TIFF of 16x16 grey 0.5 with one NaN (row 3, column 5)."""
    img = np.full((16, 16, 3), 0.5, np.float32)
    img[3, 5, 1] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def _overflowing(tmp):
    """The tiny network's own weights times 1e30: finite and loadable, but its output overflows to NaN."""
    from osir.engine.trainer import build_method
    from osir.core.options import load_options
    state = build_method(load_options(_test_file(tmp)[1], [])).networks["g"].state_dict()
    save_file({k: (v * 1e30 if v.is_floating_point() else v).contiguous() for k, v in state.items()},
              str(tmp / "huge.safetensors"))
    return str(tmp / "huge.safetensors")


def _same_stem(folder, stem="img1"):
    """<stem>.jpg beside <stem>.png (written 96x96 where absent: the least NIQE and the Real-ESRGAN
    degradation take)."""
    if not (folder / f"{stem}.png").exists():
        write_images(folder, 2, (96, 96))
    cv2.imwrite(str(folder / f"{stem}.jpg"), cv2.imread(str(folder / f"{stem}.png")))
    return folder


#: an error line of any command: osir:, osir.degrade:, osir restore:, osir web:
ERROR_LINE = re.compile(r"osir([ .]\w+)?: .*error: ")


def _tree(root):
    """Every file and folder under ``root``, as relative POSIX paths."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _unexpected(changed, allowed):
    """The paths of ``changed`` that no glob of ``allowed`` matches (a folder holding an allowed path is allowed)."""
    ok = {p for p in changed if any(fnmatch(p, glob) for glob in allowed)}
    return sorted(p for p in changed - ok if not any(q.startswith(p + "/") for q in ok))


@pytest.mark.parametrize("case, command, build, message, allowed",
                         [pytest.param(*c[:4], c[4] if len(c) > 4 else (), id=c[0]) for c in CASES])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, case, command, build, message, allowed):
    argv = build(tmp_path)
    kept = (tmp_path / OLD_RUN).exists()
    before = _tree(tmp_path)
    capsys.readouterr()
    code = command(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ERROR_LINE.match(line)]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert len(errors) == 1 and re.search(message, errors[0]), err[-2000:]
    assert not (tmp_path / MARKER).exists(), "pickled code ran"
    assert (tmp_path / OLD_RUN).exists() == kept, "an earlier experiment was archived"
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left"
    for name in re.findall(r"cannot write image '([^']+)'", errors[0]):
        assert not Path(name).exists(), f"a file was left under the name whose write failed: {name}"
    after = _tree(tmp_path)
    assert not _unexpected(before ^ after, allowed), \
        f"the failing call created {sorted(after - before)} and moved or removed {sorted(before - after)}"


def test_gt_images_without_a_restored_partner_are_reported(tmp_path, capsys):
    restored = shutil.copytree(REALSR / "osediff", tmp_path / "restored", ignore=shutil.ignore_patterns("Canon*"))
    assert metrics_main(["--restored", str(restored), "--gt", str(REALSR / "HR"), "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "osir.metrics: warning: 1 of 2 GT images have no restored partner (first: '" in err
    assert "Canon_004_LR4.png'); the means cover the 1 restored images" in err


def test_a_metric_without_its_weights_is_skipped_with_one_line_naming_the_file(tmp_path, capsys):
    """Training goes on without the metric; one line names the missing file and the option to set."""
    argv = _train(tmp_path, **{"train.total_iter": 1, "val.freq": 1,
                               "metrics": {"psnr": {"type": "psnr"},
                                           "lpips": {"type": "lpips", "pretrained_model_path": str(tmp_path / "l.pth"),
                                                     "backbone_path": str(tmp_path / "alex.pth")}}})
    capsys.readouterr()
    assert train_main(argv) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "metrics.lpips skipped" in line]
    assert len(lines) == 1 and "l.pth" in lines[0] and "pretrained_model_path" in lines[0], err[-2000:]
    assert "Traceback" not in err
