"""The files the shared data sets and prompt extractors read (``osir.core.files``: declared here, apart from
the classes in ``datasets.py`` and ``prompts.py``, so that the preflight names a missing folder without importing
torch)."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, Kind, NeededFile, folder_option
from osir.core.registry import FILES
from osir.data.sources import describe_source

#: a data set's image folders (or basicsr LMDBs) and what they hold
IMAGE_FOLDERS = {"dataroot_gt": "the ground-truth (GT) images", "dataroot_lq": "the degraded (LQ) images"}


def data_set_file(spec: dict, key: str, option: str, kind: Kind, what: str) -> NeededFile:
    """The file or folder ``option`` of a data set's options (at ``key``), with where users get the set when the
    options say (``source``: a name in ``osir.data.sources`` or any text)."""
    source, published, page = describe_source(spec["source"]) if spec.get("source") else ("", None, None)
    return NeededFile(f"{key}.{option}", str(spec[option]), kind, f"{what} {source}".strip(), published, page)


def image_folders(spec: dict, key: str) -> list[NeededFile]:
    """The folders of ``dataroot_gt`` / ``dataroot_lq`` in a data set's options (none for ``io_backend:
    skimage``, whose values are the names of scikit-image's photos), with where users get the set when its
    options say (``source``: ``osir.data.sources``)."""
    if spec.get("io_backend", "disk") == "skimage":
        return []
    return [data_set_file(spec, key, name, "folder", what) for name, what in IMAGE_FOLDERS.items()
            if spec.get(name) is not None]


for _name in ("PairedImageDataset", "SyntheticPairDataset", "SingleImageDataset"):
    FILES.register(DeclaredFiles(depends=image_folders), name=_name)
FILES.register(DeclaredFiles(paths={"model_path": folder_option(
    "a local transformers image-captioning model folder (e.g. BLIP, saved with save_pretrained)")}),
    name="CaptionPrompt")
FILES.register(DeclaredFiles(paths={"folder": folder_option("a folder of prompts, one text file per image")}),
               name="TextFilePrompt")
