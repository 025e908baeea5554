"""Refusion (Luo et al., CVPR-W NTIRE 2023): IR-SDE's mean-reverting SDE with a NAFNet noise network,
in pixel space or on the latents of a U-Net compression model."""
from osir.methods.refusion.arch import CompressionUNet, ConditionalNAFNet  # noqa: F401
