"""The files Refusion's registered classes read (``osir.core.files``), declared without torch: the latent
method's stage-1 compression model and the bokeh data set's folder; and the NTIRE 2023 data sets its option
files read (``osir.data.sources``: the README of github.com/Algolzw/image-restoration-sde links no page)."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, NeededFile, file_option
from osir.core.registry import DATA_SOURCES, FILES
from osir.data.files import data_set_file
from osir.data.sources import DataSource

COMPRESSION = file_option("the stage-1 compression model's weights (a latent stage-1 run's net_l_*.safetensors, "
                          "or the release's latent_*.pth)")


def bokeh_folder(spec: dict, key: str) -> list[NeededFile]:
    return [data_set_file(spec, key, "dataroot", "folder", "the bokeh data set (src/, tgt/ and its meta file)")
            ] if spec.get("dataroot") else []


FILES.register(DeclaredFiles(paths={"compression_path": COMPRESSION}), name="LatentRefusion")
FILES.register(DeclaredFiles(depends=bokeh_folder), name="BokehPairDataset")

for _name, _what in (("NTIRE2023-dehazing", "the NTIRE 2023 HR non-homogeneous dehazing challenge data"),
                     ("NTIRE2023-shadow", "the NTIRE 2023 shadow removal challenge data"),
                     ("NTIRE2023-bokeh", "the NTIRE 2023 bokeh effect transformation challenge data")):
    DATA_SOURCES.register(DataSource(_what, linked_from="Refusion's README (image-restoration-sde)"), name=_name)
