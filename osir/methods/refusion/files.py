"""The files Refusion's registered classes read (``osir.core.files``), declared without torch: the latent
method's stage-1 compression model and the bokeh data set's folder."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, NeededFile, file_option
from osir.core.registry import FILES

COMPRESSION = file_option("the stage-1 compression model's weights (a latent stage-1 run's net_l_*.safetensors, "
                          "or the release's latent_*.pth)")


def bokeh_folder(spec: dict, key: str) -> list[NeededFile]:
    return [NeededFile(f"{key}.dataroot", str(spec["dataroot"]), "folder",
                       "the bokeh data set (src/, tgt/ and its meta file)")] if spec.get("dataroot") else []


FILES.register(DeclaredFiles(paths={"compression_path": COMPRESSION}), name="LatentRefusion")
FILES.register(DeclaredFiles(depends=bokeh_folder), name="BokehPairDataset")
