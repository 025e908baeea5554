"""Any image-to-image network spandrel loads (ESRGAN variants, SwinIR, HAT, DAT, SPAN, SCUNet, ...), restored
as a feed-forward method: ``card.py`` (the card: detection at the lowest priority, so that osir's own methods
keep their files), ``detect.py`` (the detector), ``method.py`` (``SpandrelModel``: spandrel's loaded model and its
descriptor's scale, size requirements, tiling and precision support).  Inference only.  Importing the package
imports no torch: the card is plain data."""

from osir.core.lazy import lazy_attributes

__getattr__ = lazy_attributes(__name__, ("method",))   # classes imported on first use
