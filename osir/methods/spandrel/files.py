"""The file a spandrel network is loaded from (``osir.core.files``), declared without torch or spandrel."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, file_option
from osir.core.registry import FILES

FILES.register(DeclaredFiles(paths={"weights": file_option(
    "the network's weights (an architecture spandrel loads: .pth, .pt, .ckpt or .safetensors)")}),
    name="SpandrelModel")
