"""Image reading and writing.

Bytes come from basicsr's FileClient (disk or LMDB); decoding is OpenCV with
IMREAD_UNCHANGED so 8- and 16-bit, grey and RGBA files all keep their true range.  basicsr's
``imfrombytes`` divides by 255 whatever the bit depth, which is why decoding is done here.

Hand-written here, and why: IMREAD_UNCHANGED ignores the EXIF orientation of JPEG, PNG and WebP files
(OpenCV's TIFF decoder applies it itself), so the tag is read with PIL (``Image.getexif``, header only)
and applied to the decoded array as PIL's ``ImageOps.exif_transpose`` applies it (``orient``: a numpy
transposition per tag value, because PIL cannot hold 16-bit or float RGB; tests compare all eight values
and four formats with ``exif_transpose``).  Floating-point files holding NaN or Inf are
refused (``check_finite``): clipping keeps NaN, which would reach the network and come out black.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(OSError):
    """An image file could not be read or decoded; the message names the file."""


class DataError(ValueError):
    """The data does not fit the task (missing or empty folder, unmatched or mismatched pairs, an image
    too small for a metric); the message names the file or folder."""


#: EXIF orientation tag (0x0112) value -> the array operation that shows the image upright, as PIL's
#: ``ImageOps.exif_transpose`` maps them (2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE,
#: 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90; PIL's rotations are counter-clockwise)
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of encoded image bytes, read with PIL from the header; 1 when the file
    has none or PIL cannot parse it (OpenCV may still decode it)."""
    try:
        from PIL import Image
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                # PIL's decompression-bomb warning: not ours to give
            with Image.open(io.BytesIO(data)) as im:
                if im.format == "TIFF":
                    return 1                               # OpenCV's TIFF decoder applies the tag itself
                if im.format == "PNG" and b"eXIf" not in data:
                    return 1                               # PNG's getexif would decode the whole image to look
                value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - any file PIL cannot parse: no orientation, OpenCV decides
        return 1
    return value if value in _ORIENTATIONS else 1


def orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` (HxW or HxWxC) as displayed under EXIF ``orientation`` (PIL's ``exif_transpose``)."""
    op = _ORIENTATIONS.get(orientation)
    return img if op is None else np.ascontiguousarray(op(img))


def check_finite(img: np.ndarray, name: str) -> None:
    """``ImageReadError`` naming the file when a floating-point image holds NaN or Inf."""
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
        bad = ~np.isfinite(img)
        y, x = np.argwhere(bad)[0][:2]
        raise ImageReadError(f"image '{name}' holds {int(bad.sum())} NaN/Inf value(s) (first at x={x}, y={y}); "
                             "osir restores finite images only")


def decode_raw(data: bytes, name: str) -> np.ndarray:
    """OpenCV's decoding of ``data`` with IMREAD_UNCHANGED (BGR[A] or grey, its own dtype), turned upright by
    the file's EXIF orientation; ``ImageReadError`` naming the file when undecodable or not finite."""
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ImageReadError(f"cannot decode image '{name}' (corrupt or not an image)")
    img = orient(img, exif_orientation(data))
    check_finite(img, name)
    return img


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode encoded image bytes to float32 RGB in [0, 1], shape HxWx3, upright by the EXIF orientation.

    Grey images are repeated to 3 channels; an alpha channel is dropped; 16-bit images are
    scaled by 1/65535, 8-bit by 1/255; NaN or Inf in a float image is an ``ImageReadError``."""
    img = decode_raw(data, name)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype in (np.float32, np.float64):
        img = img.astype(np.float32)
    else:
        raise ImageReadError(f"image '{name}' has unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels == 4:
        img = img[:, :, :3]
    elif channels != 3:
        raise ImageReadError(f"image '{name}' has {channels} channels; expected 1, 3 or 4")
    return np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file from disk to float32 RGB HxWx3 in [0, 1]."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read image '{path}': {err.strerror or err}") from None
    return decode_image(data, str(path))


def img2tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 float array -> 3xHxW tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def tensor2uint8(tensor: torch.Tensor) -> np.ndarray:
    """3xHxW tensor in [0, 1] -> HxWx3 uint8 RGB (rounded, clamped)."""
    arr = tensor.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return (arr * 255.0).round().astype(np.uint8)


def write_image(path: str | Path, tensor: torch.Tensor) -> None:
    """Write a 3xHxW tensor in [0, 1] as an 8-bit image (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), tensor2uint8(tensor)[:, :, ::-1]):
        raise OSError(f"cannot write image '{path}'")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly under ``folder`` (recursively), sorted; error if none or missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: '{folder}'")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in '{folder}'")
    return files


def images_by_name(folder: str | Path) -> dict[str, Path]:
    """``list_images(folder)`` keyed by the path relative to ``folder`` without its suffix (how folders
    are paired); two files with one key (``a.png`` and ``a.jpg``) are a ``DataError`` naming both."""
    folder = Path(folder)
    named: dict[str, Path] = {}
    for path in list_images(folder):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in named:
            raise DataError(f"'{named[key]}' and '{path}' have the same name '{key}' (files are matched by name "
                            "without the extension): rename or remove one")
        named[key] = path
    return named
