"""The image file extensions osir reads and writes, and the pixel limit of its codec, importable without the
codec's libraries (torch, OpenCV): commands check their input paths and options before loading anything heavy."""
import math
import os

from osir.core.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: osir's default limit on an image's pixel count (width x height): 2 x PIL's ``Image.MAX_IMAGE_PIXELS``
#: (89,478,485, a 0.25 GiB 24-bit image), where PIL's own ``Image.open`` refuses a file as a decompression
#: bomb: osir reads every image PIL would open, about 13,377 x 13,377; decoded to float32 RGB such an image
#: takes 2.1 GB.  ``osir.data.io.MAX_IMAGE_PIXELS`` or the environment variable ``OSIR_MAX_IMAGE_PIXELS``
#: change it for every command (datasets, metrics, degrade, restore, web); ``osir restore`` / ``osir web``
#: also take ``--max-megapixels``.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970
MAX_PIXELS_ENV = "OSIR_MAX_IMAGE_PIXELS"


def environment_max_pixels() -> int:
    """The pixel limit of the environment: ``$OSIR_MAX_IMAGE_PIXELS`` (a number of pixels, ``2e8`` or
    ``200_000_000`` allowed), else ``DEFAULT_MAX_IMAGE_PIXELS``; a bad value is a ``DataError`` naming the
    variable (``osir.data.io.max_image_pixels`` puts the module setting first)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    wanted = f"expected a number of pixels of at least 1 (default {DEFAULT_MAX_IMAGE_PIXELS})"
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise DataError(f"{MAX_PIXELS_ENV}={text!r}: {wanted}") from None
    if value == math.inf:     # 'inf', or a number beyond float's range ('1e400')
        raise DataError(f"{MAX_PIXELS_ENV}={text!r}: infinity is not a limit; give a large number of pixels instead "
                        f"(default {DEFAULT_MAX_IMAGE_PIXELS})")
    if not value >= 1:        # NaN too
        why = "not a number" if math.isnan(value) else "less than one pixel" if value > 0 else "not above 0"
        raise DataError(f"{MAX_PIXELS_ENV}={text!r}: {why}; {wanted}")
    return int(value)
