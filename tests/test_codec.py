"""One image codec (issue 22, point 3): every reader of osir (the datasets of train/test, ``osir restore``,
``python -m osir.metrics``, ``osir web``) gets the same arrays from ``osir.data.io.decode`` for 8/16-bit,
grey, RGBA, EXIF-rotated and floating-point files, and every float -> integer conversion rounds with the one
quantiser (``osir.data.io.quantise``: clipped, x (2**bits - 1), rounded half to even), pinned here by the
values on the 0.5 / 255 boundaries and read back from the files each writer writes."""
from __future__ import annotations

import hashlib
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from osir.data.io import Decoded, decode, quantise, read_decoded, tensor2uint8, to_uint8, to_uint16, write_rgb


def _pil_with_orientation(path, array, orientation, **save):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif, **save)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (path, expected rgb, expected alpha, grey, bits, orientation); the expectations are built from
    the arrays written, not by the codec."""
    folder = tmp_path_factory.mktemp("codec")
    rng = np.random.default_rng(0)
    out = {}

    def cv(name, array, rgb, alpha, grey, bits):
        assert cv2.imwrite(str(folder / name), array)
        out[name] = (folder / name, rgb, alpha, grey, bits, 1)

    bgr8 = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    cv("rgb8.png", bgr8, bgr8[:, :, ::-1] / 255.0, None, False, 8)
    bgr16 = rng.integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    cv("rgb16.png", bgr16, bgr16[:, :, ::-1] / 65535.0, None, False, 16)
    g8 = rng.integers(0, 256, (7, 5), dtype=np.uint8)
    cv("grey8.png", g8, np.repeat(g8[:, :, None] / 255.0, 3, 2), None, True, 8)
    g16 = rng.integers(0, 65536, (7, 5), dtype=np.uint16)
    cv("grey16.png", g16, np.repeat(g16[:, :, None] / 65535.0, 3, 2), None, True, 16)
    bgra8 = rng.integers(0, 256, (5, 9, 4), dtype=np.uint8)
    cv("rgba8.png", bgra8, bgra8[:, :, 2::-1] / 255.0, bgra8[:, :, 3] / 255.0, False, 8)
    bgra16 = rng.integers(0, 65536, (5, 9, 4), dtype=np.uint16)
    cv("rgba16.png", bgra16, bgra16[:, :, 2::-1] / 65535.0, bgra16[:, :, 3] / 65535.0, False, 16)
    # floating point: kept as stored by the codec (1.25 stays 1.25); osir restore clips (see below)
    bgrf = rng.uniform(0, 1, (6, 8, 3)).astype(np.float32)
    bgrf[0, 0, 0] = 1.25
    cv("float.tif", bgrf, bgrf[:, :, ::-1].astype(np.float64), None, False, 32)
    # EXIF orientation 6 (JPEG, stored 16x32, displayed 32x16) and 8 (16-bit grey PNG), written by PIL
    quad = np.zeros((16, 32, 3), np.uint8)
    quad[:8, :16], quad[:8, 16:], quad[8:, :16], quad[8:, 16:] = (250, 10, 10), (10, 250, 10), (10, 10, 250), (240, 240, 20)
    path = _pil_with_orientation(folder / "exif6.jpg", quad, 6, quality=100, subsampling=0)
    with Image.open(path) as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB")) / 255.0
    out["exif6.jpg"] = (path, shown, None, False, 8, 6)
    deep = (np.arange(6 * 10, dtype=np.uint16).reshape(6, 10) * 1000).astype(np.uint16)
    path = _pil_with_orientation(folder / "exif8_grey16.png", deep, 8)
    out["exif8_grey16.png"] = (path, np.repeat(np.rot90(deep, 1)[:, :, None] / 65535.0, 3, 2), None, True, 16, 8)
    return folder, out


def test_the_record_says_how_each_file_was_stored(files):
    _, table = files
    for name, (path, rgb, alpha, grey, bits, orientation) in table.items():
        got = decode(path.read_bytes(), name)
        assert isinstance(got, Decoded) and got.rgb.dtype == np.float32 and got.rgb.shape == rgb.shape, name
        tolerance = 3 / 255 if name.endswith(".jpg") else 1e-7         # PIL's and OpenCV's JPEG decoders
        assert np.abs(got.rgb - rgb).max() <= tolerance, name
        assert (got.grey, got.bits, got.orientation, got.deep) == (grey, bits, orientation, bits > 8), name
        if alpha is None:
            assert got.alpha is None, name
        else:
            assert got.alpha.dtype == np.float32 and np.abs(got.alpha - alpha).max() <= 1e-7, name


def test_datasets_restore_metrics_and_web_read_the_same_arrays(files, tmp_path):
    from osir.data.datasets import SingleImageDataset
    from osir.core.checkpoint import save_network
    from osir.methods.realesrgan import RRDBNet
    from osir.metrics.__main__ import read_scored
    from osir.restore import read_input
    from osir.web import AUTO, Demo

    folder, table = files
    dataset = SingleImageDataset(str(folder))
    by_name = {item["name"]: item["lq"].numpy().transpose(1, 2, 0) for item in (dataset[i] for i in range(len(dataset)))}
    torch.manual_seed(0)
    weights = tmp_path / "rrdb_x2.safetensors"
    save_network(RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, scale=2), weights)
    demo = Demo([weights])
    restorer = demo.load(AUTO, weights)
    for name, (path, *_) in table.items():
        record = read_decoded(path)
        assert np.array_equal(by_name[path.stem], record.rgb), f"datasets: {name}"
        assert np.array_equal(read_scored(path)[0].numpy().transpose(1, 2, 0), record.rgb), f"metrics: {name}"
        loaded = read_input(path)                      # osir restore: the record, a float file clipped to [0, 1]
        assert (loaded.grey, loaded.deep, loaded.bits, loaded.orientation) == \
               (record.grey, record.deep, record.bits, record.orientation), f"restore: {name}"
        assert np.array_equal(loaded.rgb, np.clip(record.rgb, 0, 1)), f"restore: {name}"
        assert (loaded.alpha is None) == (record.alpha is None), f"restore: {name}"
        if record.alpha is not None:
            assert np.array_equal(loaded.alpha, record.alpha), f"restore: {name}"
        (before, after), _, _ = demo.restore(str(path), AUTO, str(weights))      # osir web: the upload's pixels
        assert np.array_equal(before[::2, ::2], to_uint8(record.rgb)), f"web: {name}"
        assert np.array_equal(after, to_uint8(restorer.restore(record.rgb))), f"web: {name}"
    # the one difference between the readers: osir restore clips a float file's samples, the others keep them
    floats = read_decoded(table["float.tif"][0])
    assert floats.rgb[0, 0, 2] == np.float32(1.25) and read_input(table["float.tif"][0]).rgb[0, 0, 2] == 1.0


#: (value, its 8-bit level): the half-way points k + 0.5 of x * 255 (exact in float32) round half to even;
#: just below / above them round down / up; outside [0, 1] is clipped
HALVES = [(k + 0.5) / 255 for k in (0, 1, 2, 127, 128, 253, 254)]
PINNED = [
    *zip(HALVES, (0, 2, 2, 128, 128, 254, 254)),
    *((x - 1e-4 / 255, int(round(x * 255 - 0.5))) for x in HALVES),
    *((x + 1e-4 / 255, int(round(x * 255 + 0.5))) for x in HALVES),
    (-0.3, 0), (0.0, 0), (1.0, 255), (1.7, 255),
]


def test_the_quantiser_rounds_half_to_even_on_the_8_and_16_bit_grids():
    x = np.array([v for v, _ in PINNED], np.float32)
    levels = np.array([q for _, q in PINNED], np.uint8)
    assert all(np.float32(h) * np.float32(255) == k + 0.5 for h, k in zip(HALVES, (0, 1, 2, 127, 128, 253, 254)))
    assert to_uint8(x).dtype == np.uint8 and to_uint8(x).tolist() == levels.tolist()
    assert to_uint8(torch.from_numpy(x)).dtype == torch.uint8 and to_uint8(torch.from_numpy(x)).tolist() == levels.tolist()
    # computed in the input's precision: the same values in float64 give x * 255 just off the half-way points
    # (above or below; 127.5 is exact), rounded to the nearer level: Python's round of the float64 product
    wide = x[: len(HALVES)].astype(np.float64)
    reference = [round(Fraction(float(v) * 255.0)) for v in wide]
    assert reference == [1, 2, 3, 128, 128, 253, 254] and quantise(wide).tolist() == reference
    halves16 = np.array([(k + 0.5) / 65535 for k in (0, 1, 2, 32767, 65533, 65534)], np.float32)
    assert to_uint16(halves16).dtype == np.uint16 and to_uint16(halves16).tolist() == [0, 2, 2, 32768, 65534, 65534]
    assert to_uint16(np.float32([-1, 1, 2])).tolist() == [0, 65535, 65535]


def test_every_writer_and_hash_rounds_with_the_one_quantiser(tmp_path):
    from osir.compare import _write_png
    from osir.data.io import write_image
    from osir.metrics.results import DatasetHash
    from osir.metrics.suite import quantize
    from osir.restore import Loaded, write_output
    from osir.web import to_uint8 as web_to_uint8

    values = np.array([v for v, _ in PINNED], np.float32)
    levels = np.array([q for _, q in PINNED], np.uint8)
    rgb = np.repeat(values[None, :, None], 3, 2)                   # 1 x N x 3
    expected = np.repeat(levels[None, :, None], 3, 2)
    tensor = torch.from_numpy(rgb.transpose(2, 0, 1).copy())
    assert np.array_equal(tensor2uint8(tensor), expected)
    assert np.array_equal(web_to_uint8(rgb), expected)
    assert torch.equal(quantize(tensor) * 255, torch.from_numpy(expected.transpose(2, 0, 1).astype(np.float32)))
    assert DatasetHash.tensor_sha256(tensor) == hashlib.sha256(expected.transpose(2, 0, 1).tobytes()).hexdigest()
    write_image(tmp_path / "w.png", tensor)
    _write_png(tmp_path / "c.png", rgb)
    plain = Loaded(rgb, False, None, 8)
    assert write_output(tmp_path / "r.png", rgb, plain) is None
    for name in ("w.png", "c.png", "r.png"):
        assert np.array_equal(cv2.imread(str(tmp_path / name))[:, :, ::-1], expected), name
    # 16-bit and alpha: a deep RGBA input is written back 16-bit, colour and alpha on the 16-bit levels
    halves16 = np.float32([(k + 0.5) / 65535 for k in (0, 1, 2, 32767)])
    deep = Loaded(np.repeat(halves16[None, :, None], 3, 2), False, halves16[None, :], 16)
    assert write_output(tmp_path / "d.png", deep.rgb, deep) is None
    back = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and back.shape == (1, 4, 4)
    assert (back[0].T == [[0, 2, 2, 32768]] * 4).all()
    # grey: written grey on the 8-bit levels (BT.601 luma of a grey RGB is the grey value)
    grey = Loaded(rgb, True, None, 8)
    write_output(tmp_path / "g.png", rgb, grey)
    assert np.array_equal(cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED), levels[None])


def test_write_rgb_writes_a_record_back_as_it_was_stored(files, tmp_path):
    """decode -> write_rgb(like=record) -> decode: the same record (grey, alpha, bits), the samples on the grid."""
    _, table = files
    for name in ("rgb16.png", "grey8.png", "grey16.png", "rgba8.png", "rgba16.png"):
        record = read_decoded(table[name][0])
        assert write_rgb(tmp_path / name, record.rgb, record) is None
        again = read_decoded(tmp_path / name)
        assert (again.grey, again.bits, again.alpha is None) == (record.grey, record.bits, record.alpha is None), name
        assert np.abs(again.rgb - record.rgb).max() <= 0.5 / (2 ** record.bits - 1) + 1e-6, name
    record = read_decoded(table["rgba16.png"][0])
    assert "has no alpha channel" in write_rgb(tmp_path / "x.jpg", record.rgb, record)
    assert read_decoded(tmp_path / "x.jpg").bits == 8 and read_decoded(tmp_path / "x.jpg").alpha is None
