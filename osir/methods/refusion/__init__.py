"""Refusion (Luo et al., CVPR-W NTIRE 2023): IR-SDE's mean-reverting SDE with a NAFNet noise network,
in pixel space or on the latents of a U-Net compression model.  ``arch.py``, ``method.py``, ``card.py``,
``detect.py``, ``onnx.py``, ``standin.py``; ``releases/``."""

from osir.core.lazy import lazy_attributes

__getattr__ = lazy_attributes(__name__, ("arch", "method"))   # classes imported on first use
