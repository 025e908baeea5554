"""The public data sets IR-SDE's option files read, with where users get them (``osir.data.sources``):
the pages the authors' README (github.com/Algolzw/image-restoration-sde) links."""
from __future__ import annotations

from osir.core.registry import DATA_SOURCES
from osir.data.sources import DataSource

README = "IR-SDE's README"

DATA_SOURCES.register(DataSource("Rain100H's 1,800 training pairs (Yang et al. 2017)", "RainTrainH.zip",
                                 "http://www.icst.pku.edu.cn/struct/att/RainTrainH.zip", README), name="Rain100H-train")
DATA_SOURCES.register(DataSource("Rain100H's 100 test pairs (Yang et al. 2017)", "Rain100H.zip",
                                 "http://www.icst.pku.edu.cn/struct/att/Rain100H.zip", README), name="Rain100H-test")
DATA_SOURCES.register(DataSource("the McMaster colour test images (Zhang et al. 2011)", linked_from=README),
                      name="McMaster")
