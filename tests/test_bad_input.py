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


def _tiny_pair(tmp, size):
    for sub in ("r", "g"):
        (tmp / sub).mkdir()
        cv2.imwrite(str(tmp / sub / "a.png"), np.full((size, size, 3), 128, np.uint8))
    return tmp / "r", tmp / "g"


# (id, command, argv builder, message regex)
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
    from osir.options import load_options
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


@pytest.mark.parametrize("case, command, build, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, case, command, build, message):
    argv = build(tmp_path)
    kept = (tmp_path / OLD_RUN).exists()
    capsys.readouterr()
    code = command(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if re.match(r"osir(\.\w+)?: .*error: ", line)]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert len(errors) == 1 and re.search(message, errors[0]), err[-2000:]
    assert not (tmp_path / MARKER).exists(), "pickled code ran"
    assert (tmp_path / OLD_RUN).exists() == kept, "an earlier experiment was archived"


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
