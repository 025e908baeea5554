"""Image faults (issue 23 points 4, 11, 15): a full disk while writing images or checkpoints, decompression
bombs (a header claiming more pixels than the limit, refused before decoding), empty and non-image uploads
in the web page.  The one-line refusals of the commands (exit code 2, nothing written) are rows of
``tests/test_bad_input.py``'s ``CASES``, whose builders (``bomb_png``, ``black_png``, ``fill_disk``, the
tiny Real-ESRGAN weights) this file reuses; here: the image reader's size check, a write error keeping
the earlier file, ``osir restore`` skipping a bomb in a folder (exit code 1), a checkpoint write error, and
the web page's messages.

A full disk is simulated at the lowest level Python writes through, ``Path.write_bytes`` (osir's image
writer) and safetensors' ``save_file`` (checkpoints): half the bytes reach the temporary file, then the
error a full disk gives (``OSError(ENOSPC)``, or safetensors' message for it, copied from a 64 KiB tmpfs)."""
from __future__ import annotations

import errno
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors import SafetensorError

import osir.data.io as oio
from osir.restore import main as restore_main
from osir.train import main as train_main
from tests.conftest import write_images
from tests.test_bad_input import ERROR_LINE, _restore, _tiny_weights, _train, black_png, bomb_png, fill_disk

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")


# ----------------------------------------------------------------------------- io
def test_the_default_limit_is_where_pil_refuses_a_file():
    from PIL import Image
    assert oio.DEFAULT_MAX_IMAGE_PIXELS == 2 * Image.MAX_IMAGE_PIXELS == 178_956_970
    assert oio.max_image_pixels() == oio.DEFAULT_MAX_IMAGE_PIXELS


def test_sizes_come_from_the_header_and_bombs_are_refused_before_decoding(monkeypatch):
    """The header's size equals the decoded size for each format osir reads (PIL's plugins; tifffile for a
    float RGB TIFF, which PIL cannot parse); over the limit, OpenCV's decoder is never called."""
    rng = np.random.default_rng(0)
    files = {".png": rng.integers(0, 65536, (7, 5, 4), dtype=np.uint16), ".jpg": rng.integers(0, 256, (7, 5, 3), np.uint8),
             ".tif": rng.random((7, 5, 3), dtype=np.float32), ".webp": rng.integers(0, 256, (7, 5, 3), np.uint8),
             ".bmp": rng.integers(0, 256, (7, 5), np.uint8), ".pgm": rng.integers(0, 65536, (7, 5), np.uint16)}
    encoded = {suffix: cv2.imencode(suffix, img)[1].tobytes() for suffix, img in files.items()}
    for suffix, data in encoded.items():
        assert oio.image_size(data) == (5, 7), suffix
        assert oio.decode_raw(data, "x" + suffix).shape[:2] == (7, 5)
    assert oio.image_size(black_png(20000, 20000)) == (20000, 20000)

    def never(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called on a file over the limit")

    monkeypatch.setattr(cv2, "imdecode", never)
    with pytest.raises(oio.ImageReadError, match=r"image 'bomb\.png' is 50000x50000 \(2500 megapixels\)"):
        oio.decode_raw(bomb_png(), "bomb.png")
    with pytest.raises(oio.ImageReadError, match=r"image 'big\.png' is 20000x20000 \(400 megapixels\), over the limit "
                                                 r"of 178\.957 megapixels"):
        oio.decode_image(black_png(20000, 20000), "big.png")
    with pytest.raises(oio.ImageReadError, match=r"image 'x\.tif' is 5x7 \(3\.5e-05 megapixels\), over the limit of "
                                                 r"3e-05 megapixels"):
        oio.decode_raw(encoded[".tif"], "x.tif", max_pixels=30)
    monkeypatch.setattr(oio, "MAX_IMAGE_PIXELS", 34)          # the module setting, before the environment
    monkeypatch.setenv("OSIR_MAX_IMAGE_PIXELS", "1e9")
    with pytest.raises(oio.ImageReadError, match=r"image 'x\.jpg' is 5x7 .* over the limit of 3\.4e-05 megapixels"):
        oio.decode_image(encoded[".jpg"], "x.jpg")


def test_a_write_error_keeps_the_earlier_file_and_names_the_target(tmp_path):
    """``write_array`` on a full disk: the earlier file under the name is untouched, no temporary file
    is left, the error names the target (not the temporary file); an unknown suffix is named too."""
    target = tmp_path / "out.png"
    target.write_bytes(b"an earlier result")
    with pytest.MonkeyPatch.context() as patches:
        fill_disk(patches)
        with pytest.raises(oio.ImageWriteError, match=f"^cannot write image '{re.escape(str(target))}': No space "
                                                      "left on device$") as raised:
            oio.write_array(target, np.zeros((8, 8, 3), np.uint8))
    assert raised.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    with pytest.raises(oio.ImageWriteError, match=r"cannot encode image '.*out\.xyz' as \.xyz"):
        oio.write_array(tmp_path / "out.xyz", np.zeros((8, 8, 3), np.uint8))
    oio.write_array(target, np.full((8, 8, 3), 7, np.uint8))                 # and a write that succeeds
    assert (cv2.imread(str(target)) == 7).all() and sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


# ----------------------------------------------------------------------------- restore
def test_restore_skips_a_bomb_without_decoding_it(tmp_path, capsys, monkeypatch):
    """A folder with a good image and a 50000x50000 header: the good one is restored, the bomb is one line
    naming it (never handed to OpenCV), nothing is written for it, exit code 1 as for a corrupt image."""
    src = write_images(tmp_path / "in", 1, (16, 16))
    (src / "bomb.png").write_bytes(bomb_png())
    argv = _restore(tmp_path, inputs=[src])
    real, decoded = cv2.imdecode, []
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or real(buf, flags))
    capsys.readouterr()
    assert restore_main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert lines == [f"error: image '{src / 'bomb.png'}' is 50000x50000 (2500 megapixels), over the limit of "
                     "178.957 megapixels (a decompression bomb?); a larger limit: OSIR_MAX_IMAGE_PIXELS=<pixels> or "
                     "--max-megapixels (osir restore, osir web); skipped"], err
    assert len(bomb_png()) not in decoded and decoded
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png"]
    assert "Traceback" not in err


def test_restore_tiles_an_image_up_to_the_limit(tmp_path, capsys):
    """--max-megapixels 0.0096 with --tile 48: a 96x96 image (0.0092 MP) is restored tile by tile (x4:
    384x384), 100x97 (0.0097 MP) is refused by name and nothing is written for it."""
    src = write_images(tmp_path / "in", 1, (96, 96))
    cv2.imwrite(str(src / "larger.png"), cv2.resize(cv2.imread(str(src / "img0.png")), (100, 97)))
    argv = _restore(tmp_path, "--max-megapixels", "0.0096", "--tile", "48", "--tile-overlap", "8", inputs=[src])
    capsys.readouterr()
    assert restore_main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r"error: image '.*larger\.png' is 100x97 \(0\.0097 megapixels\), over the limit of 0\.0096 "
                     "megapixels", err), err
    tiled = cv2.imread(str(tmp_path / "out" / "img0.png"))
    assert tiled.shape == (384, 384, 3) and not (tmp_path / "out" / "larger.png").exists()


# ----------------------------------------------------------------------------- checkpoints
def test_a_checkpoint_write_error_is_one_line_and_keeps_the_earlier_checkpoint(tmp_path, capsys, monkeypatch):
    """The disk fills between the checkpoints of iterations 3 and 6: exit 2, one line naming the file,
    no temporary file, the checkpoint of iteration 3 intact and loadable (training state and weights)."""
    import osir.core.checkpoint as ckpt

    real = ckpt.save_file

    def full_from_6(tensors, filename, metadata=None):
        if "_6.safetensors" not in Path(filename).name:
            return real(tensors, filename, metadata)
        Path(filename).write_bytes(b"\0" * 100)          # what reached the disk before it filled
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_file", full_from_6)
    argv = _train(tmp_path, **{"train.total_iter": 6})
    capsys.readouterr()
    code = train_main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ERROR_LINE.match(line)]
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert len(errors) == 1 and re.search(r"cannot write '.*models/net_g(_ema)?_6\.safetensors': No space left on "
                                          r"device", errors[0]), err[-2000:]
    exp = tmp_path / "experiments" / "tiny"
    assert not list(exp.rglob("*.tmp")) and not (exp / "training_states" / "6.state").exists()
    state = ckpt.load_training_state(exp / "training_states" / "3.state")
    assert state["iter"] == 3
    for file in state["files"]:
        assert ckpt.read_state_dict(exp / "models" / file)


# ----------------------------------------------------------------------------- web
@pytest.fixture(scope="module")
def web_weights(tmp_path_factory) -> Path:
    return _tiny_weights(tmp_path_factory.mktemp("web"))


def _record(path: Path) -> dict:
    """The file record gradio hands the restore event for an upload (path in its cache, the user's name)."""
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def test_web_says_what_is_wrong_with_an_upload(web_weights, tmp_path):
    """Demo.restore with gradio's file record: an empty file, a text file, a 50000x50000 header and an image
    over the page's --max-megapixels are each one message naming the uploaded file and what is wrong;
    a full disk while writing the result names the result's file."""
    import gradio as gr
    from osir.web import AUTO, Demo

    cache = tmp_path / "gradio" / "0a1b"
    cache.mkdir(parents=True)
    uploads = {"empty.png": b"", "notes.png": b"not an image, a shopping list", "bomb.png": bomb_png()}
    for name, data in uploads.items():
        (cache / name).write_bytes(data)
    write_images(cache, 1, (40, 48))
    demo = Demo([web_weights], max_pixels=1000)
    expected = {"empty.png": r"^image 'empty\.png' is an empty file \(0 bytes\)$",
                "notes.png": r"^cannot decode image 'notes\.png' \(corrupt or not an image\)$",
                "bomb.png": r"^image 'bomb\.png' is 50000x50000 \(2500 megapixels\), over the limit of 0\.001 megapixels",
                "img0.png": r"^image 'img0\.png' is 48x40 \(0\.00192 megapixels\), over the limit of 0\.001 megapixels"}
    for name, message in expected.items():
        with pytest.raises(gr.Error) as raised:
            demo.restore(_record(cache / name), AUTO, str(web_weights))
        assert re.search(message, raised.value.message), raised.value.message
    demo = Demo([web_weights])
    with pytest.MonkeyPatch.context() as patches:
        fill_disk(patches)
        with pytest.raises(gr.Error) as raised:
            demo.restore(_record(cache / "img0.png"), AUTO, str(web_weights))
    assert re.fullmatch(r"cannot write image '.*img0_RealESRGAN\.png': No space left on device", raised.value.message)
    assert not [p for p in demo.output_dir.rglob("*") if p.is_file()]
    (_, after), png, status = demo.restore(_record(cache / "img0.png"), AUTO, str(web_weights))
    assert after.shape == (160, 192, 3) and Path(png).name == "img0_RealESRGAN.png" and "48×40 → 192×160" in status


def test_web_page_reports_bad_uploads_through_gradio(web_weights, tmp_path):
    """The page's restore endpoint through gradio's own upload and processing (gradio_client, no
    browser): the message says what is wrong, not gradio's 'Could not preprocess input component'."""
    import socket

    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from osir.web import AUTO, build_app

    app = build_app([web_weights])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                                   show_error=True, share=False)
    try:
        client = Client(url, verbose=False)
        for name, data, message in [("empty.png", b"", r"image 'empty\.png' is an empty file \(0 bytes\)"),
                                    ("notes.png", b"not an image", r"cannot decode image 'notes\.png' \(corrupt or "
                                                                   r"not an image\)"),
                                    ("bomb.png", bomb_png(), r"image 'bomb\.png' is 50000x50000 \(2500 megapixels\), "
                                                             r"over the limit of 178\.957 megapixels")]:
            (tmp_path / name).write_bytes(data)
            with pytest.raises(AppError, match=message):
                client.predict(handle_file(str(tmp_path / name)), AUTO, str(web_weights), None, None, 0,
                               api_name="/restore")
        write_images(tmp_path, 1, (16, 16))
        (_, after), png, status = client.predict(handle_file(str(tmp_path / "img0.png")), AUTO, str(web_weights),
                                                 None, None, 0, api_name="/restore")
        assert cv2.imread(png).shape == (64, 64, 3) and "16×16 → 64×64" in status
    finally:
        app.close()


def test_text_outputs_are_written_atomically_too(tmp_path, monkeypatch):
    """metrics.csv / metrics.json (test.py, osir.metrics), options.yml, degradation cards, compare's tables and
    bench's JSON go through ``write_text``: a full disk leaves the earlier file whole and no temporary file."""
    import errno

    from osir.core.checkpoint import write_text
    from osir.core.options import dump_options
    from osir.metrics.results import write_results
    write_results(tmp_path, [{"image": "a.png", "psnr": 30.0}], {"osir": "x"})
    dump_options({"name": "before"}, tmp_path / "options.yml")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = Path.write_bytes

    def full(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match=r"cannot write '.*metrics\.csv': No space left on device"):
        write_results(tmp_path, [{"image": "b.png", "psnr": 20.0}], {"osir": "y"})
    with pytest.raises(OSError, match=r"cannot write '.*options\.yml': No space left on device"):
        dump_options({"name": "after"}, tmp_path / "options.yml")
    with pytest.raises(OSError, match=r"cannot write '.*card\.yml'"):
        write_text(tmp_path / "card.yml", "x: 1\n")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before      # whole, and nothing else left
