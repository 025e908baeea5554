"""The files Real-ESRGAN's registered method reads (``osir.core.files``), declared without torch: the
perceptual loss's VGG19 (torchvision's file, under its download name); and its training set, with the pages
Real-ESRGAN's docs/Training.md links (``osir.data.sources``)."""
from __future__ import annotations

from osir.core.files import DeclaredFiles, file_option
from osir.core.registry import DATA_SOURCES, FILES
from osir.data.sources import DataSource

VGG19 = file_option("torchvision's ImageNet VGG19 (the perceptual loss)", "vgg19-dcbb9e9d.pth",
                    "download.pytorch.org/models/ (torchvision's VGG19_Weights.IMAGENET1K_V1)")

FILES.register(DeclaredFiles(paths={"vgg_path": VGG19}), name="RealESRGAN")
DATA_SOURCES.register(DataSource(
    "DF2K (DIV2K + Flickr2K) + OST, high-resolution images only", "DIV2K_train_HR.zip, Flickr2K.tar, OST_dataset.zip",
    "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip, https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar, "
    "https://openmmlab.oss-cn-hangzhou.aliyuncs.com/datasets/OST_dataset.zip", "Real-ESRGAN's docs/Training.md"),
    name="DF2K_OST")
