"""Inference helpers: padding to a method's size contract and tiled restoration with blended overlaps."""
from osir.inference.tiling import pad_batch, restore_image, restore_tiled  # noqa: F401
from osir.inference.checks import check_finite_output  # noqa: F401
