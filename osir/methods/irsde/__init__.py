"""IR-SDE (Luo et al., ICML 2023): mean-reverting SDE image restoration.  ``arch.py`` (the conditional U-Net),
``method.py``, ``card.py`` (releases, detection, export), ``detect.py``, ``onnx.py``; ``releases/``."""

from osir.core.lazy import lazy_attributes

__getattr__ = lazy_attributes(__name__, ("arch", "method"))   # classes imported on first use
