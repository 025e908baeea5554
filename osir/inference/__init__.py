"""Inference helpers: padding to a network's multiple and tiled restoration with blended overlaps."""
from osir.inference.tiling import restore_tiled  # noqa: F401
