"""The files the registered metrics read (``osir.core.files``), declared without torch or pyiqa.  A metric
whose files are missing is skipped with a warning (the suite's options are ``component(METRICS,
optional=True)``), so the preflight names them as optional."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, file_option, folder_option
from osir.core.registry import FILES

WEIGHTS = file_option("the metric's weights (pyiqa's file, under its download name)")
BACKBONE = file_option("the metric's backbone weights (torchvision's / CLIP's file)")
WEIGHTS_FOLDER = folder_option("a folder of metric weights under their download names")

#: metric -> its path arguments
METRIC_PATHS = {"lpips": ("pretrained_model_path", "backbone_path", "weights_dir"),
                "dists": ("pretrained_model_path", "backbone_path", "weights_dir"),
                "clipiqa": ("pretrained_model_path", "backbone_path", "weights_dir"),
                "musiq": ("pretrained_model_path", "weights_dir"),
                "maniqa": ("pretrained_model_path", "weights_dir"),
                "pyiqa": ("pretrained_model_path", "weights_dir"),
                "fid": ("pretrained_model_path", "weights_dir")}
_OPTION = {"pretrained_model_path": WEIGHTS, "backbone_path": BACKBONE, "weights_dir": WEIGHTS_FOLDER}

for _name, _paths in METRIC_PATHS.items():
    FILES.register(DeclaredFiles(paths={p: _OPTION[p] for p in _paths}), name=_name)
