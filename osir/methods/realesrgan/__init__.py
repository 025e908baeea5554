"""Real-ESRNet / Real-ESRGAN (Wang et al., ICCVW 2021): ``method.py`` (RRDBNet trained on pairs synthesised by the
high-order degradation, basicsr's networks and losses), ``card.py`` (releases, detection, export), ``detect.py``,
``onnx.py``, ``standin.py``; ``releases/`` holds the release options."""

from osir.core.lazy import lazy_attributes

__getattr__ = lazy_attributes(__name__, ("method",))   # classes imported on first use
