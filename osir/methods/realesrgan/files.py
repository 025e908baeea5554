"""The files Real-ESRGAN's registered method reads (``osir.core.files``), declared without torch: the
perceptual loss's VGG19 (torchvision's file, under its download name)."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, file_option
from osir.core.registry import FILES

VGG19 = file_option("torchvision's ImageNet VGG19 (the perceptual loss)", "vgg19-dcbb9e9d.pth",
                    "download.pytorch.org/models/ (torchvision's VGG19_Weights.IMAGENET1K_V1)")

FILES.register(DeclaredFiles(paths={"vgg_path": VGG19}), name="RealESRGAN")
