"""The files DA-CLIP's registered classes read (``osir.core.files``), declared without torch so that the
preflight names a missing DA-CLIP file before ViT-B/32 or ViT-L/14 is built (minutes on a CPU): the
controller method (``DACLIP``), the universal / wild restoration method (``DACLIPUIR``) and the degradation-type
data set (``DegradationTypeDataset``).  Where the file is a release's, its published name and page come from the
card (``card.py``)."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, NeededFile, PathOption
from osir.core.registry import DATA_SOURCES, FILES
from osir.data.files import data_set_file
from osir.data.sources import DataSource


def release_file(clip_model: str):
    """The card's ``ReleaseFile`` for ``method.daclip_path`` of the release built on ``clip_model`` (the
    universal IR's ``daclip_ViT-B-32.pt``, wild IR's ``wild-daclip_ViT-L-14.pt``), or None."""
    from osir.core.card import release_options
    from osir.methods.daclip.card import CARD
    for release in CARD.releases:
        if release_options(CARD, release)["method"].get("clip_model") == clip_model:
            return next((f for f in release.needs if f.option == "method.daclip_path"), None)
    return None


def daclip_file(key: str, path, spec: dict, clip_config) -> NeededFile:
    """A DA-CLIP file at ``key``: the release's name and page where the CLIP (``spec``'s ``clip_model``, no
    custom ``clip_config``) is a release's."""
    found = release_file(spec.get("clip_model", "ViT-B-32")) if clip_config is None else None
    if found is not None:
        return NeededFile.at(key, path, PathOption.of("file", found))
    return NeededFile(key, str(path), "file", "a DA-CLIP file of this CLIP (a stage-1 run's net_daclip_*.safetensors)")


def controller_files(spec: dict, key: str) -> list[NeededFile]:
    """``DACLIP``: the open_clip checkpoint (with a named CLIP) and the DA-CLIP file to start from."""
    found, config = [], spec.get("clip_config")
    if spec.get("clip_checkpoint") and config is None:
        found.append(NeededFile(f"{key}.clip_checkpoint", spec["clip_checkpoint"], "file",
                                f"a local open_clip checkpoint of {spec.get('clip_model', 'ViT-B-32')}"))
    if spec.get("release_path"):
        found.append(daclip_file(f"{key}.release_path", spec["release_path"], spec, config))
    return found


def restoration_files(spec: dict, key: str) -> list[NeededFile]:
    """``DACLIPUIR``: the DA-CLIP file, unless ``use_daclip: false``."""
    if not spec.get("use_daclip", True) or not spec.get("daclip_path"):
        return []
    return [daclip_file(f"{key}.daclip_path", spec["daclip_path"], spec, spec.get("clip_config"))]


#: DegradationTypeDataset's sources: option -> (kind, what)
DATASET_SOURCES = {"dataroot": ("folder", "the degradation-type folders (<type>/LQ, <type>/GT)"),
                   "csv": ("file", "the CSV list of images, types and captions"),
                   "dataroot_gt": ("folder", "the ground-truth (GT) images the degradations are applied to"),
                   "captions": ("file", "the captions file")}


def dataset_files(spec: dict, key: str) -> list[NeededFile]:
    """``DegradationTypeDataset``: its source (type folders, a CSV list or a GT folder, which is scikit-image's
    photo names with ``io_backend: skimage``) and the captions file."""
    skimage = spec.get("io_backend", "disk") == "skimage"
    return [data_set_file(spec, key, name, kind, text) for name, (kind, text) in DATASET_SOURCES.items()
            if spec.get(name) and not (skimage and name == "dataroot_gt")]


FILES.register(DeclaredFiles(depends=controller_files), name="DACLIP")
FILES.register(DeclaredFiles(depends=restoration_files), name="DACLIPUIR")
FILES.register(DeclaredFiles(depends=dataset_files), name="DegradationTypeDataset")

# the data sets DA-CLIP's README links ('Dataset Links'), which osir's option files read (osir.data.sources)
_README = "DA-CLIP's README, 'Dataset Links'"
_EDSR = "https://cv.snu.ac.kr/research/EDSR/"
for _name, _source in {
        "DIV2K": DataSource("DIV2K (Agustsson & Timofte 2017)", "DIV2K.tar", _EDSR + "DIV2K.tar", _README),
        "DF2K": DataSource("DF2K: DIV2K + Flickr2K", "DIV2K.tar, Flickr2K.tar",
                           f"{_EDSR}DIV2K.tar, {_EDSR}Flickr2K.tar", _README),
        "GoPro": DataSource("GoPro deblurring pairs (Nah et al. 2017)", None,
                            "https://drive.google.com/file/d/1y4wvPdOG3mojpFCHTqLgriexhbjoWVkK/view", _README),
        "LOL": DataSource("LOL low-light pairs (Wei et al. 2018)", None,
                          "https://drive.google.com/file/d/157bjO1_cFuSd0HWDUuAmcHRJDVyWpOxB/view", _README),
        "CelebaHQ-256": DataSource("CelebA-HQ at 256x256 (face inpainting)", None,
                                   "https://drive.google.com/file/d/1oYDBcJLT5RDuC4k5C7xOMRkZ9N3kfexu/view", _README),
        "DA-CLIP-train": DataSource("DA-CLIP's ten-task training mix (GoPro, RESIDE-6k, DIV2K+Flickr2K, LOL, RainDrop, "
                                    "Rain100H, SRD, Snow100K, CelebaHQ-256, one link per task; JPEG and noisy LQ made "
                                    "with its scripts/generate_LQ.py)", None,
                                    "https://github.com/Algolzw/daclip-uir#dataset-links", _README),
        "DA-CLIP-val": DataSource("DA-CLIP's ten-task validation sets (one archive)", None,
                                  "https://drive.google.com/file/d/1JKd1tA7rMoEbI9190daJqL7i6V1L8KUd/view", _README),
        # not downloaded: made from the training sets by a script (da-clip/README.md, 'Create dataset')
        "DA-CLIP-captions": DataSource("the CSV of LQ paths, degradation types and BLIP captions that DA-CLIP's "
                                       "scripts/generate_captions.py writes (daclip_train.csv / daclip_val.csv)",
                                       linked_from="DA-CLIP's da-clip/README.md: the script makes it"),
}.items():
    DATA_SOURCES.register(_source, name=_name)
