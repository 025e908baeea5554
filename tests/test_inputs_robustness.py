"""Inputs read as they display and never silently wrong (issue 23, points 6-8): EXIF orientation applied
on read, as PIL's ``ImageOps.exif_transpose`` shows the file; NaN/Inf inputs and outputs refused naming
the file, the image and the network; two files of one name (``a.png``, ``a.jpg``) where folders are
matched by name refused naming both.  The bad-input table (tests/test_bad_input.py) holds the one-line
cases of test.py, osir.metrics, training and degrade; here: what those runs leave behind, osir restore,
and the readers themselves."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

from osir.data.datasets import PairedImageDataset, SingleImageDataset
from osir.data.io import DataError, ImageReadError, read_image
from osir.degrade import main as degrade_main
from osir.metrics.__main__ import main as metrics_main
from osir.restore import main as restore_main, read_input
from osir.test import main as run_test_script
from tests.conftest import tiny_options, write_images, write_yaml


def _quadrants(h=16, w=32) -> np.ndarray:
    """Four flat colours, one per quadrant: any rotation or flip moves them, and JPEG keeps flat blocks."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (250, 10, 10)
    img[: h // 2, w // 2:] = (10, 250, 10)
    img[h // 2:, : w // 2] = (10, 10, 250)
    img[h // 2:, w // 2:] = (240, 240, 20)
    return img


def _with_orientation(path, array, orientation, **save):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif, **save)
    return path


def _displayed(path) -> np.ndarray:
    """The file as it displays: PIL's decoding turned by ``ImageOps.exif_transpose``, float RGB."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), np.float32) / 255.0


def test_every_exif_orientation_reads_as_pil_exif_transpose_shows_it(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (6, 10, 3)).astype(np.uint8)
    wrong = []
    for suffix, save in ((".png", {}), (".jpg", {"quality": 100}), (".webp", {"lossless": True}), (".tif", {})):
        for orientation in range(1, 9):
            path = _with_orientation(tmp_path / f"o{orientation}{suffix}", array, orientation, **save)
            got, want = read_image(path), _displayed(path)
            if got.shape != want.shape or np.abs(got - want).max() > 1.5 / 255:
                wrong.append(f"{path.name}: {got.shape} vs {want.shape}")
    assert not wrong, wrong


def test_a_jpeg_with_orientation_6_comes_out_as_it_displays(tmp_path):
    """Orientation 6: the stored image is shown turned 90 degrees clockwise; every reader returns it so
    (the datasets of train/test/metrics, osir restore's reader, and ``read_image``, which osir web uses)."""
    array = _quadrants()
    (tmp_path / "in").mkdir()
    path = _with_orientation(tmp_path / "in" / "photo.jpg", array, 6, quality=100, subsampling=0)
    upright = np.rot90(array, -1).astype(np.float32) / 255.0       # 32x16: the top-left quadrant moves top-right
    readers = {"read_image": read_image(path), "read_input": read_input(path).rgb,
               "SingleImageDataset": SingleImageDataset(str(tmp_path / "in"))[0]["lq"].numpy().transpose(1, 2, 0)}
    for name, got in readers.items():
        assert got.shape == (32, 16, 3), name
        assert np.abs(got - upright).max() < 8 / 255, name


def test_a_16_bit_grey_png_with_orientation_8_keeps_its_depth_and_turns(tmp_path):
    array = (np.arange(6 * 10, dtype=np.uint16).reshape(6, 10) * 1000).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path, exif=exif)
    loaded = read_input(path)
    assert loaded.grey and loaded.deep
    np.testing.assert_array_equal(loaded.rgb[:, :, 0], np.rot90(array, 1).astype(np.float32) / 65535.0)


def _nan_tiff(path, size=(16, 16)):
    img = np.full((*size, 3), 0.5, np.float32)
    img[3, 5, 1] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def test_a_nan_in_a_float_tiff_is_refused_naming_the_file(tmp_path):
    path = _nan_tiff(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match=r"image '.*nan\.tif' holds 1 NaN/Inf value\(s\) \(first at x=5, y=3\)"):
        read_image(path)
    with pytest.raises(ImageReadError, match=r"nan\.tif' holds 1 NaN/Inf"):
        read_input(path)


def test_osir_metrics_on_a_nan_image_writes_nothing(tmp_path, capsys):
    _nan_tiff(tmp_path / "r" / "a.tif")
    write_images(tmp_path / "g", 1, (16, 16))
    (tmp_path / "g" / "img0.png").rename(tmp_path / "g" / "a.png")
    code = metrics_main(["--restored", str(tmp_path / "r"), "--gt", str(tmp_path / "g"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "a.tif' holds 1 NaN/Inf" in err, err
    assert not (tmp_path / "o").exists()


def _tiny_test_options(tmp):
    opt = tiny_options(tmp)
    opt.pop("train")
    opt.update(name="t", datasets={"real": {"type": "SingleImageDataset", "dataroot_lq": str(tmp / "gt")}})
    return write_yaml(tmp / "t.yml", opt)


def _overflowing_weights(tmp):
    """The tiny IR-SDE network's own weights times 1e30: finite, loadable, and overflowing to Inf/NaN."""
    from osir.engine.trainer import build_method
    from osir.core.options import load_options
    method = build_method(load_options(str(_tiny_test_options(tmp)), []))
    state = method.networks["g"].state_dict()
    save_file({k: (v * 1e30 if v.is_floating_point() else v).contiguous() for k, v in state.items()},
              str(tmp / "huge.safetensors"))
    return tmp / "huge.safetensors"


def test_osir_restore_refuses_a_nan_output_naming_image_network_and_weights(tmp_path, capsys):
    weights = _overflowing_weights(tmp_path)
    code = restore_main(["--options", str(tmp_path / "t.yml"), "--weights", str(weights), str(tmp_path / "gt" / "img0.png"),
                         "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert ("restoring '" + str(tmp_path / "gt" / "img0.png") + "' with IRSDE gave 3072 NaN/Inf value(s): the weights "
            f"of network 'g' from '{weights}' are the likely cause") in lines[0]
    assert not (tmp_path / "out").exists(), "a black image was written"


def test_osir_test_stops_at_a_nan_output_before_writing_images(tmp_path, capsys):
    weights = _overflowing_weights(tmp_path)
    code = run_test_script(["-opt", str(tmp_path / "t.yml"), "--set", f"path.pretrained.g={weights}"])
    err = capsys.readouterr().err
    assert code == 2 and "network 'g' from '" in err and "Traceback" not in err, err[-2000:]
    assert not list((tmp_path / "results").rglob("*.png"))


def test_osir_restore_skips_a_nan_input_naming_it_and_restores_the_rest(tmp_path, capsys):
    weights = _overflowing_weights(tmp_path)   # any loadable weights: the NaN input is refused before restoring
    folder = tmp_path / "in"
    _nan_tiff(folder / "bad.tif")
    code = restore_main(["--options", str(tmp_path / "t.yml"), "--weights", str(weights), str(folder),
                         "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1, err[-2000:]
    assert "error: image '" + str(folder / "bad.tif") + "' holds 1 NaN/Inf value(s)" in err
    assert not (tmp_path / "out" / "bad.png").exists()


def test_a_network_with_nan_weights_is_named_when_its_output_is_not_finite():
    from osir.inference import check_finite_output
    net = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        net.weight[0, 0] = float("nan")

    class Method:
        networks = {"g": net, "ok": torch.nn.Conv2d(3, 3, 1)}

    out = net(torch.ones(2, 3, 4, 4))         # channel 0 of both images is NaN: 4x4 values each
    with pytest.raises(DataError, match=r"restoring 'a\.png' with Method gave 16 NaN/Inf value\(s\): "
                                        r"network 'g' has NaN/Inf weights from 'w\.pth'$"):
        check_finite_output(Method(), out, ["a.png", "b.png"], {"g": "w.pth"})


# ---------------------------------------------------------------- two files of one name (a.png, a.jpg)
def _same_stem(folder):
    """img0.png, img1.png and img1.jpg; 96x96, the least NIQE and the Real-ESRGAN degradation take."""
    write_images(folder, 2, (96, 96))
    cv2.imwrite(str(folder / "img1.jpg"), cv2.imread(str(folder / "img1.png")))
    return folder


def test_two_files_of_one_name_are_an_error_naming_both(tmp_path):
    from osir.data.io import images_by_name
    folder = _same_stem(tmp_path / "f")
    message = r"'.*f/img1\.jpg' and '.*f/img1\.png' have the same name 'img1'"
    with pytest.raises(DataError, match=message):
        images_by_name(folder)
    write_images(tmp_path / "lq", 2, (8, 8))
    with pytest.raises(DataError, match=message):
        PairedImageDataset(str(folder), str(tmp_path / "lq"), scale=2)
    with pytest.raises(DataError, match=message):
        SingleImageDataset(str(folder))
    (tmp_path / "db.lmdb").mkdir()         # an LMDB's meta_info.txt (basicsr's layout) with both names
    (tmp_path / "db.lmdb" / "meta_info.txt").write_text("img1.png (16,16,3) 1\nimg1.jpg (16,16,3) 1\n")
    with pytest.raises(DataError, match=r"LMDB '.*db\.lmdb': 'img1\.png' and 'img1\.jpg' have the same name 'img1'"):
        SingleImageDataset(str(tmp_path / "db.lmdb"), io_backend="lmdb")
    (tmp_path / "f" / "sub").mkdir()       # the same stem in another sub-folder is another name
    cv2.imwrite(str(folder / "sub" / "img0.jpg"), cv2.imread(str(folder / "img0.png")))
    (folder / "img1.jpg").unlink()
    assert sorted(images_by_name(folder)) == ["img0", "img1", "sub/img0"]


@pytest.mark.parametrize("where", ["restored", "gt"])
def test_osir_metrics_refuses_two_files_of_one_name_and_writes_nothing(tmp_path, capsys, where):
    folders = {"restored": write_images(tmp_path / "restored", 2, (96, 96)), "gt": write_images(tmp_path / "gt", 2, (96, 96))}
    _same_stem(folders[where])
    code = metrics_main(["--restored", str(folders["restored"]), "--gt", str(folders["gt"]), "--output",
                         str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{where}/img1.jpg' and '" in err and f"{where}/img1.png' have the same name 'img1'" in err
    assert not (tmp_path / "o").exists()


def test_degrade_refuses_two_files_of_one_name_and_writes_nothing(tmp_path, capsys):
    _same_stem(tmp_path / "hr")
    opt = write_yaml(tmp_path / "d.yml", {"degradation": {"type": "RealESRGANDegradation", "preset": "realesrgan_x4"}})
    code = degrade_main(["-opt", str(opt), "--input", str(tmp_path / "hr"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "hr/img1.jpg' and '" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()

