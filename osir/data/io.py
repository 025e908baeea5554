"""Image reading and writing: osir's one image codec.

Every reader (the datasets of train/test, ``osir restore``, ``osir web``, ``python -m osir.metrics``, degrade,
compare) decodes through ``decode``, which gives a ``Decoded`` record: float32 RGB, upright by the EXIF
orientation, and how the file stored it (grey, alpha, bits per sample); ``decode_image`` / ``read_image`` are
its RGB.  Every float -> integer conversion rounds with ``quantise`` (``to_uint8``, ``to_uint16``), and
``write_rgb`` writes float RGB back as a record was stored (grey, alpha, 16-bit).  Bytes come from basicsr's
FileClient (disk or LMDB) or the file; decoding is OpenCV with IMREAD_UNCHANGED so 8- and 16-bit, grey and
RGBA files all keep their true range.  basicsr's ``imfrombytes`` divides by 255 whatever the bit depth,
which is why decoding is done here.

Hand-written here, and why: IMREAD_UNCHANGED ignores the EXIF orientation of JPEG, PNG and WebP files
(OpenCV's TIFF decoder applies it itself), so the tag is read with PIL (``Image.getexif``, header only)
and applied to the decoded array as PIL's ``ImageOps.exif_transpose`` applies it (``orient``: a numpy
transposition per tag value, because PIL cannot hold 16-bit or float RGB; tests compare all eight values
and four formats with ``exif_transpose``).  Floating-point files holding NaN or Inf are
refused (``check_finite``): clipping keeps NaN, which would reach the network and come out black.

Decompression bombs: an image's pixel count is read from its header, before decoding, and refused above
``max_image_pixels()`` (``image_size``; a 68-byte PNG can claim 50000x50000, a 389 KB grey PNG of 20000x20000
decodes to 4.8 GB of float32 RGB).  Hand-written here, and why: PIL reads headers without decoding, but
``Image.open`` itself refuses files above 2x its ``MAX_IMAGE_PIXELS`` without saying their size, and osir's
limit is its own (raised or lowered by the user), so the header is read with the PIL plugin that
recognises the file (what ``Image.open`` does, without its check); TIFFs PIL cannot parse (float RGB) are
read with tifffile (scikit-image's dependency), and anything else is left to OpenCV (its own limit,
``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 by default) and checked after decoding.

Writing: every image file osir writes goes through ``write_array`` (encoded in memory, written to a
temporary file beside the target and renamed into place with ``osir.core.checkpoint.atomic_write``):
a full disk or a killed process never leaves a truncated image under the final name, and a write error
is one ``ImageWriteError`` line naming the file.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from osir.core.checkpoint import atomic_write
from osir.core.errors import DataError, ImageReadError, ImageWriteError  # noqa: F401 (re-exported)

from osir.data.formats import IMAGE_EXTENSIONS  # noqa: E402  (the codec's extensions, kept importable without it)
from osir.data.formats import DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, environment_max_pixels  # noqa: F401

MAX_IMAGE_PIXELS: int | None = None      # None: OSIR_MAX_IMAGE_PIXELS, else DEFAULT_MAX_IMAGE_PIXELS


def max_image_pixels() -> int:
    """The pixel limit in force: ``MAX_IMAGE_PIXELS`` when set, else the environment's
    (``osir.data.formats.environment_max_pixels``: ``$OSIR_MAX_IMAGE_PIXELS`` or the default, checked there
    without the codec's imports)."""
    return int(MAX_IMAGE_PIXELS) if MAX_IMAGE_PIXELS is not None else environment_max_pixels()

#: output suffixes whose files can hold an alpha channel / 16-bit samples (OpenCV's writers)
ALPHA_SUFFIXES = (".png", ".tif", ".tiff", ".webp")
DEEP_SUFFIXES = (".png", ".tif", ".tiff")


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


def _pil_header(data: bytes):
    """PIL's image for ``data`` with only its header read (no pixels decoded), from the plugin whose
    ``accept`` recognises the first bytes, as ``Image.open`` finds it but without ``Image.open``'s own
    decompression-bomb refusal (osir applies its own limit, and needs the size to say so); None when no
    plugin parses it."""
    from PIL import Image
    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            match = accept is not None and accept(prefix)
            if not match or isinstance(match, str):           # a str is a plugin's warning, not a match
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return factory(io.BytesIO(data), "")
        except Exception:  # noqa: BLE001 - not this format (SyntaxError, struct.error, unsupported mode, ...)
            continue
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a TIFF's first page from its IFD (tifffile, header only), for the TIFFs PIL
    cannot parse (float RGB); None when ``data`` is not a readable TIFF."""
    if data[:4] not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return None
    try:
        import tifffile
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            return int(page.imagewidth), int(page.imagelength)
    except Exception:  # noqa: BLE001 - unreadable IFD: OpenCV decides
        return None


def image_size(data: bytes, header=None) -> tuple[int, int] | None:
    """(width, height) of encoded image bytes from the file's header, without decoding the pixels (PIL, or
    tifffile for TIFFs PIL cannot parse); None when neither parses it (OpenCV may still decode it).
    ``header``: ``_pil_header(data)`` when already read."""
    header = _pil_header(data) if header is None else header
    if header is not None:
        return tuple(header.size)
    return _tiff_size(data)


def check_pixels(size: tuple[int, int], name: str, limit: int | None = None) -> None:
    """``ImageReadError`` naming the file and its size when ``width x height`` exceeds ``limit`` (default
    ``max_image_pixels()``): a decompression bomb, or an image too large to restore in memory."""
    limit = max_image_pixels() if limit is None else int(limit)
    w, h = size
    if w * h > limit:
        raise ImageReadError(f"image '{name}' is {w}x{h} ({w * h / 1e6:.4g} megapixels), over the limit of "
                             f"{limit / 1e6:.6g} megapixels (a decompression bomb?); a larger limit: "
                             f"{MAX_PIXELS_ENV}=<pixels> or --max-megapixels (osir restore, osir web)")


def _orientation(header, data: bytes) -> int:
    try:
        if header is None or header.format == "TIFF":
            return 1                                       # OpenCV's TIFF decoder applies the tag itself
        if header.format == "PNG" and b"eXIf" not in data:
            return 1                                       # PNG's getexif would decode the whole image to look
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = header.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - an EXIF block PIL cannot parse: no orientation, OpenCV decides
        return 1
    return value if value in _ORIENTATIONS else 1


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of encoded image bytes, read with PIL from the header; 1 when the file
    has none or PIL cannot parse it (OpenCV may still decode it)."""
    return _orientation(_pil_header(data), data)


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


def _decode(data: bytes, name: str, max_pixels: int | None) -> tuple[np.ndarray, int]:
    """(OpenCV's IMREAD_UNCHANGED array turned upright, the EXIF orientation applied); see ``decode_raw``."""
    if not data:
        raise ImageReadError(f"image '{name}' is an empty file (0 bytes)")
    header = _pil_header(data)
    size = image_size(data, header)
    if size is not None:
        check_pixels(size, name, max_pixels)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:         # e.g. over OpenCV's own pixel limit, in a header only OpenCV reads
        reason = str(err).strip().splitlines()[-1].split("error: ", 1)[-1]
        if "CV_IO_MAX_IMAGE_PIXELS" in reason:
            reason = ("its header claims more pixels than OpenCV's own limit, OPENCV_IO_MAX_IMAGE_PIXELS "
                      "(2**30 by default)")
        raise ImageReadError(f"cannot decode image '{name}' ({reason})") from None
    if img is None:
        raise ImageReadError(f"cannot decode image '{name}' (corrupt or not an image)")
    if size is None:
        check_pixels((img.shape[1], img.shape[0]), name, max_pixels)
    orientation = _orientation(header, data)
    img = orient(img, orientation)
    check_finite(img, name)
    return img, orientation


def decode_raw(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """OpenCV's decoding of ``data`` with IMREAD_UNCHANGED (BGR[A] or grey, its own dtype), turned upright by
    the file's EXIF orientation; ``ImageReadError`` naming the file when empty, undecodable, larger than
    ``max_pixels`` (default ``max_image_pixels()``; checked on the header, before decoding) or not finite."""
    return _decode(data, name, max_pixels)[0]


@dataclass(frozen=True)
class Decoded:
    """A decoded image and how it was stored; every reader of osir builds it (``decode``).

    ``rgb``: float32 HxWx3 RGB, upright by the EXIF orientation: 8-bit samples / 255, 16-bit / 65535,
    floating-point samples as stored (not clipped; ``clipped``); grey repeated to three channels.
    ``grey``: the file had one channel.  ``alpha``: float32 HxW on the same scale, or None.  ``bits``: bits
    per stored sample (8, 16; 32 or 64 for floating point).  ``orientation``: the EXIF orientation applied
    (1: none)."""
    rgb: np.ndarray
    grey: bool
    alpha: np.ndarray | None
    bits: int
    orientation: int = 1

    @property
    def deep(self) -> bool:
        """More than 8 bits per sample (16-bit or floating point): written back 16-bit (``write_rgb``)."""
        return self.bits > 8

    def clipped(self) -> "Decoded":
        """This image with a floating-point file's samples clipped to [0, 1] (``osir restore``'s input);
        8- and 16-bit images are in [0, 1] already and are returned as they are."""
        if self.bits <= 16:
            return self
        alpha = None if self.alpha is None else np.clip(self.alpha, 0, 1)
        return replace(self, rgb=np.clip(self.rgb, 0, 1), alpha=alpha)


#: the scale of each integer sample type (float images are kept as stored)
_SAMPLE_TOP = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def decode(data: bytes, name: str, max_pixels: int | None = None) -> Decoded:
    """Decode encoded image bytes (``decode_raw``: OpenCV, every bit depth, upright by the EXIF orientation;
    empty, undecodable, NaN/Inf or over ``max_pixels`` files refused naming ``name``) to a ``Decoded``
    record; a sample type other than uint8, uint16, float32 or float64, or a channel count other than 1, 3
    or 4, is an ``ImageReadError`` naming the file."""
    img, orientation = _decode(data, name, max_pixels)
    if img.dtype in _SAMPLE_TOP:
        bits = 8 * img.dtype.itemsize
        img = img.astype(np.float32) / _SAMPLE_TOP[img.dtype]
    elif img.dtype in (np.float32, np.float64):
        bits = 8 * img.dtype.itemsize
        img = img.astype(np.float32)
    else:
        raise ImageReadError(f"image '{name}' has unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels not in (1, 3, 4):
        raise ImageReadError(f"image '{name}' has {channels} channels; expected 1, 3 or 4")
    alpha = np.ascontiguousarray(img[:, :, 3]) if channels == 4 else None
    rgb = np.repeat(img, 3, axis=2) if channels == 1 else np.ascontiguousarray(img[:, :, 2::-1])   # BGR -> RGB
    return Decoded(rgb, channels == 1, alpha, bits, orientation)


def decode_image(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to float32 RGB HxWx3 (``decode(...).rgb``): grey repeated to 3 channels,
    an alpha channel dropped, 16-bit scaled by 1/65535, 8-bit by 1/255, float as stored, upright by the EXIF
    orientation; NaN or Inf in a float image, an empty file or one over the pixel limit (``max_pixels``,
    default ``max_image_pixels()``) is an ``ImageReadError``."""
    return decode(data, name, max_pixels).rgb


def read_decoded(path: str | Path, max_pixels: int | None = None) -> Decoded:
    """Read an image file from disk to a ``Decoded`` record (``decode``); an unreadable file is an
    ``ImageReadError`` naming it."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read image '{path}': {err.strerror or err}") from None
    return decode(data, str(path), max_pixels)


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file from disk to float32 RGB HxWx3 in [0, 1] (``read_decoded(...).rgb``)."""
    return read_decoded(path, max_pixels).rgb


# ----------------------------------------------------------------------------- float -> 8 / 16 bits
def quantise(x, bits: int = 8):
    """The ``bits``-bit level of each sample of ``x`` (a float numpy array or torch tensor), as floats of the
    same kind: ``x`` clipped to [0, 1], times ``2**bits - 1``, rounded half to even (``np.round`` /
    ``torch.round``: 0.5 / 255 -> 0, 1.5 / 255 -> 2, 2.5 / 255 -> 2), in ``x``'s own float precision.  The
    one rounding of osir's float -> integer conversions (``to_uint8``, ``to_uint16``, files, hashes, the
    8-bit grid metrics and degradations round to); OSEDiff's release truncation is its own
    (``osir.methods.osediff``), as is DA-CLIP's (``osir.methods.daclip``)."""
    top = float(2 ** bits - 1)
    if isinstance(x, torch.Tensor):
        return (x.clamp(0, 1) * top).round()
    return np.round(np.clip(x, 0, 1) * top)


def to_uint8(x):
    """Float samples in [0, 1] (array or tensor; outside clipped) -> uint8 (``quantise``: rounded half to even)."""
    q = quantise(x, 8)
    return q.to(torch.uint8) if isinstance(q, torch.Tensor) else q.astype(np.uint8)


def to_uint16(x):
    """Float samples in [0, 1] (array or tensor; outside clipped) -> uint16 (``quantise``: rounded half to even)."""
    q = quantise(x, 16)
    return q.to(torch.uint16) if isinstance(q, torch.Tensor) else q.astype(np.uint16)


def img2tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 float array -> 3xHxW tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def tensor2uint8(tensor: torch.Tensor) -> np.ndarray:
    """3xHxW tensor in [0, 1] -> HxWx3 uint8 RGB (float32, ``to_uint8``)."""
    return to_uint8(tensor.detach().float().cpu().numpy().transpose(1, 2, 0))


def write_array(path: str | Path, img: np.ndarray, params: tuple[int, ...] = ()) -> None:
    """Encode an OpenCV-ordered array (HxW grey, HxWx3 BGR or HxWx4 BGRA; uint8, or uint16 where the format
    has 16 bits) in the format of ``path``'s suffix (``cv2.imencode``, ``params`` as ``cv2.imwrite``'s) and
    write it atomically (``osir.core.checkpoint.atomic_write``: a temporary file beside ``path``, renamed
    into place): an error leaves no file under ``path`` nor a temporary file, and is one ``ImageWriteError``
    naming ``path`` (a file already there is kept as it was)."""
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix, img, list(params))
    except cv2.error as err:
        ok, encoded = False, str(err).strip().splitlines()[-1].split("error: ", 1)[-1]
    if not ok:
        why = f": {encoded}" if isinstance(encoded, str) else ""
        raise ImageWriteError(f"cannot encode image '{path}' as {path.suffix or '(no suffix)'}{why}")
    data = encoded.tobytes()
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    except OSError as err:          # the reason alone, also where atomic_write's message names the file itself
        reason = err.strerror or str(err).removeprefix(f"cannot write '{path}': ")
        failed = ImageWriteError(f"cannot write image '{path}': {reason}")
        failed.errno = err.errno
        raise failed from None


def write_rgb(path: str | Path, rgb: np.ndarray, like: Decoded | None = None) -> str | None:
    """Write float RGB HxWx3 (clipped to [0, 1]) to ``path`` (``write_array``: atomic, format from the suffix)
    as the image ``like`` was stored, where that format allows: grey as OpenCV's BT.601 luma
    (``COLOR_RGB2GRAY``), its alpha resized (bilinear) to ``rgb``'s size where the format has an alpha channel
    (``ALPHA_SUFFIXES``), 16-bit where it had more than 8 bits and the format has 16 (``DEEP_SUFFIXES``);
    ``like`` None: 8-bit RGB.  Returns a note when something of ``like`` could not be kept, else None."""
    path = Path(path)
    suffix, note = path.suffix.lower(), None
    if like is not None and like.grey:
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        out = np.ascontiguousarray(rgb[:, :, ::-1])
        if like is not None and like.alpha is not None:
            if suffix in ALPHA_SUFFIXES:
                h, w = out.shape[:2]
                alpha = like.alpha if like.alpha.shape == (h, w) else \
                    cv2.resize(like.alpha, (w, h), interpolation=cv2.INTER_LINEAR)
                out = np.dstack([out, alpha])
            else:
                note = f"note: '{path}': {suffix} has no alpha channel; the input's alpha is dropped"
    deep = like is not None and like.deep and suffix in DEEP_SUFFIXES
    write_array(path, to_uint16(out) if deep else to_uint8(out))
    return note


def write_image(path: str | Path, tensor: torch.Tensor) -> None:
    """Write a 3xHxW tensor in [0, 1] as an 8-bit RGB image (format from the suffix), atomically (``write_rgb``)."""
    write_rgb(path, tensor.detach().float().cpu().numpy().transpose(1, 2, 0))


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
