"""The files OSEDiff's registered classes read (``osir.core.files``), declared without torch: the method
(the SD 2.1-base folder, the release's ``osediff.pkl``, the LPIPS loss's two files) and the RAM / DAPE prompt
extractors.  The published names and pages are the card's (``card.py``)."""
from __future__ import annotations

from pathlib import Path

from osir.core.files import DeclaredFiles, NeededFile, PathOption, file_option
from osir.core.registry import DATA_SOURCES, FILES
from osir.data.sources import DataSource
from osir.methods.osediff.card import DAPE_FILE, LPIPS_FILES, RAM_FILE, RELEASE_FILE, SD_FOLDER

LPIPS_WEIGHTS, LPIPS_BACKBONE = (file_option(f, training=True) for f in LPIPS_FILES)     # the LPIPS loss


def sd_folder(spec: dict, key: str) -> list[NeededFile]:
    """The SD 2.1-base folder, unless ``build_tiny`` writes tiny random components there."""
    path = spec.get("sd_path")
    if not isinstance(path, str) or (spec.get("build_tiny") and not Path(path).exists()):
        return []          # not given or not a path: validation names the key
    return [NeededFile.at(f"{key}.sd_path", path, PathOption.of("folder", SD_FOLDER))]


FILES.register(DeclaredFiles(paths={"release_path": file_option(RELEASE_FILE), "lpips_weights_path": LPIPS_WEIGHTS,
                                    "lpips_vgg_path": LPIPS_BACKBONE},
                             depends=sd_folder, training_components=("train_prompt",)), name="OSEDiff")
FILES.register(DeclaredFiles(paths={"ram_path": file_option(RAM_FILE), "dape_path": file_option(DAPE_FILE)}),
               name="dape")
FILES.register(DeclaredFiles(paths={"ram_path": file_option(RAM_FILE)}), name="ram")

# the data sets OSEDiff's option files read (osir.data.sources)
DATA_SOURCES.register(DataSource("the RealSR x4 test set (Cai et al. 2019) as StableSR packs it", "StableSR-TestSets",
                                 "https://huggingface.co/datasets/Iceclear/StableSR-TestSets",
                                 "OSEDiff's README (its benchmark copies)"), name="RealSR")
DATA_SOURCES.register(DataSource("LSDIR (Li et al. 2023), the training images of OSEDiff and wild-IR",
                                 linked_from="OSEDiff's or DA-CLIP's README"), name="LSDIR")
