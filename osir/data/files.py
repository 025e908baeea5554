"""The files the shared data sets and prompt extractors read (``osir.core.files``: declared here, apart from
the classes in ``datasets.py`` and ``prompts.py``, so that the preflight names a missing folder without importing
torch)."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, NeededFile, folder_option
from osir.core.registry import FILES

#: a data set's image folders (or basicsr LMDBs) and what they hold
IMAGE_FOLDERS = {"dataroot_gt": "the ground-truth (GT) images", "dataroot_lq": "the degraded (LQ) images"}


def image_folders(spec: dict, key: str) -> list[NeededFile]:
    """The folders of ``dataroot_gt`` / ``dataroot_lq`` in a data set's options (none for ``io_backend:
    skimage``, whose values are the names of scikit-image's photos)."""
    if spec.get("io_backend", "disk") == "skimage":
        return []
    return [NeededFile(f"{key}.{name}", str(spec[name]), "folder", what)
            for name, what in IMAGE_FOLDERS.items() if spec.get(name) is not None]


for _name in ("PairedImageDataset", "SyntheticPairDataset", "SingleImageDataset"):
    FILES.register(DeclaredFiles(depends=image_folders), name=_name)
FILES.register(DeclaredFiles(paths={"model_path": folder_option(
    "a local transformers image-captioning model folder (e.g. BLIP, saved with save_pretrained)")}),
    name="CaptionPrompt")
FILES.register(DeclaredFiles(paths={"folder": folder_option("a folder of prompts, one text file per image")}),
               name="TextFilePrompt")
