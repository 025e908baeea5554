"""Bad input, as a new user meets it: every case ends in exit code 2 and one line naming the file or
key, with no traceback, from every command (train, test, metrics, degrade)."""
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from osir.degrade import main as degrade_main
from osir.metrics.__main__ import main as metrics_main
from osir.test import main as run_test_script
from osir.train import main as train_main
from tests.conftest import FIXTURES, tiny_options, write_images, write_yaml

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
    opt = tiny_options(tmp)
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


def _tiny_pair(tmp, size):
    for sub in ("r", "g"):
        (tmp / sub).mkdir()
        cv2.imwrite(str(tmp / sub / "a.png"), np.full((size, size, 3), 128, np.uint8))
    return tmp / "r", tmp / "g"


# (id, command, argv builder, message regex)
CASES = [
    ("options file missing", train_main, lambda t: ["-opt", str(t / "nope.yml")], r"options file not found: .*nope\.yml"),
    ("unknown key", train_main, lambda t: _train(t) + ["--set", "train.totl_iter=3"],
     r"train\.totl_iter: unknown key \(did you mean 'total_iter'\?\)"),
    ("bad --set", train_main, lambda t: _train(t) + ["--set", "train.total_iter"], r"--set expects key\.path=value"),
    ("missing data folder", train_main, lambda t: _train(t, **{"datasets.train.dataroot_gt": str(t / "missing")}),
     r"image folder not found: '.*missing'"),
    ("empty data folder", train_main,
     lambda t: (t / "empty").mkdir() or _train(t, **{"datasets.train.dataroot_gt": str(t / "empty")}),
     r"no images \(.*\) in '.*empty'"),
    ("corrupt training image", train_main, _train_with_a_corrupt_image,
     r"cannot decode image '.*img1\.png' \(corrupt or not an image\)"),
    ("corrupt image in a loader worker", train_main,
     lambda t: _train_with_a_corrupt_image(t, **{"datasets.train.num_workers": 1}),
     r"cannot decode image '.*img1\.png' \(corrupt or not an image\)"),
    ("GT/LQ size mismatch", train_main, lambda t: _train(t, **{"datasets.val": _paired_val(t, (20, 20))}),
     r"size mismatch: GT '.*vgt/img0\.png' is 32x32, LQ '.*vlq/img0\.png' is 20x20 \(scale 2\)"),
    ("unmatched names", train_main, lambda t: _train(t, **{"datasets.val": _paired_val(t, rename="other.png")}),
     r"GT image '.*img0\.png' has no LQ partner 'img0' in '.*vlq'"),
    ("truncated safetensors", train_main, lambda t: _train(t, **{"path.pretrained": {"g": str(_truncated(t))}}),
     r"cannot read '.*g\.safetensors' as safetensors"),
    ("weights of another network", train_main,
     lambda t: (save_file({"w": torch.zeros(2)}, str(t / "other.safetensors")),
                _train(t, **{"path.pretrained": {"g": str(t / "other.safetensors")}}))[1],
     r"'.*other\.safetensors' does not fit ConditionalUNet: \d+ missing keys"),
    ("resume state missing", train_main, lambda t: _train(t, **{"path.resume_state": str(t / "5.state")}),
     r"training state not found: '.*5\.state'"),
    ("image smaller than a metric's window", train_main,
     lambda t: _train(t, **{"metrics": {"ssim": {"type": "ssim"}}, "datasets.val.dataroot_gt":
                            str(write_images(t / "small", 1, (8, 8)))}),
     r"metrics\.ssim: '.*img0\.png' is 8x8, smaller than the 11x11 the metric needs"),
    ("optimiser over an unknown group", train_main, lambda t: _train(t, **{"train.optimizers.g.params": ["gg"]}),
     r"train\.optimizers\.g\.params: unknown parameter group 'gg' \(did you mean 'g'\?\)"),
    ("test: corrupt test image", run_test_script, _test_with_a_corrupt_image, r"cannot decode image '.*img1\.png'"),
    ("test: folder for a plain network", run_test_script, lambda t: _test_file(t, path={"pretrained": {"g": str(t)}}),
     r"path\.pretrained\.g: '.*' is a folder, but network 'g' \(ConditionalUNet\) loads from a weights file"),
    ("test: truncated weights", run_test_script, lambda t: _test_file(t, path={"pretrained": {"g": str(_truncated(t))}}),
     r"cannot read '.*g\.safetensors' as safetensors"),
    ("metrics: restored folder missing", metrics_main, lambda t: _metrics(t, t / "nothing"),
     r"image folder not found: '.*nothing'"),
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
]


@pytest.mark.parametrize("case, command, build, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, case, command, build, message):
    argv = build(tmp_path)
    capsys.readouterr()
    code = command(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if re.match(r"osir(\.\w+)?: .*error: ", line)]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert len(errors) == 1 and re.search(message, errors[0]), err[-2000:]


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
