"""Image reading and writing.

Bytes come from basicsr's FileClient (disk or LMDB); decoding is OpenCV with
IMREAD_UNCHANGED so 8- and 16-bit, grey and RGBA files all keep their true range.  basicsr's
``imfrombytes`` divides by 255 whatever the bit depth, which is why decoding is done here.
"""
from __future__ import annotations

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


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode encoded image bytes to float32 RGB in [0, 1], shape HxWx3.

    Grey images are repeated to 3 channels; an alpha channel is dropped; 16-bit images are
    scaled by 1/65535, 8-bit by 1/255."""
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ImageReadError(f"cannot decode image '{name}' (corrupt or not an image)")
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
