"""Real-ESRNet / Real-ESRGAN (Wang et al., ICCVW 2021): RRDBNet trained on pairs synthesised by the
high-order degradation (``degradation: {type: RealESRGANDegradation}``).

Real-ESRNet optimises L1 only; Real-ESRGAN adds the VGG19 perceptual loss and a GAN loss with the
spectral-norm U-Net discriminator (Sec. 3.3).  Networks and losses are basicsr's (``RRDBNet``,
``UNetDiscriminatorSN``, ``PerceptualLoss``, ``GANLoss``); the official ``RealESRGAN_x4plus.pth`` /
``RealESRNet_x4plus.pth`` files (``params_ema`` holding RRDBNet weights) load as they are.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from osir._compat import basicsr  # noqa: F401  (must precede basicsr imports)
from basicsr.archs.discriminator_arch import UNetDiscriminatorSN
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.losses.basic_loss import PerceptualLoss
from basicsr.losses.gan_loss import GANLoss

from osir.core.method import Method
from osir.core.weights import local_torchvision_weights
from osir.core.options import component
from osir.core.registry import ARCHS, METHODS, OptionsError
import osir.methods.realesrgan.files  # noqa: F401  (its file declarations, also where the entry points are stale)

ARCHS.register(RRDBNet, name="RRDBNet")
ARCHS.register(UNetDiscriminatorSN, name="UNetDiscriminatorSN")

#: RRDBNet's scale -> the factor its forward pixel-unshuffles the LQ by (basicsr's ``pixel_unshuffle``
#: asserts that the LQ's height and width are multiples of it)
PIXEL_UNSHUFFLE = {2: 2, 1: 4}
# ``method.vgg_path`` is declared in files.py, checked before anything is built
VGG_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}


@METHODS.register()
class RealESRGAN(Method):
    """Args:
        network: the generator (``RRDBNet``, ``num_block: 23`` in the release).
        discriminator: ``UNetDiscriminatorSN`` spec; needed when ``gan_weight`` > 0.
        pixel_weight, perceptual_weight, gan_weight: loss weights (Real-ESRNet: 1, 0, 0;
            Real-ESRGAN: 1, 1, 0.1).
        perceptual_layers: VGG19 layer -> weight (the paper's by default).
        vgg_path: torchvision's ImageNet VGG19 file (``vgg19-dcbb9e9d.pth``), local; required for the
            perceptual loss.
        scale: upscaling factor of the generator (it must equal the network's ``scale``).  RRDBNet x2 and x1
            pixel-unshuffle the LQ by 2 and 4 before the trunk (the release's ``pixel_unshuffle``), so the
            method declares ``size_multiple`` 2 and 4 for them: the inference layer reflect-pads an LQ of
            any other size to the multiple and crops the output back to ``scale`` x its size.
        gan_gt_usm: the discriminator's real samples are the USM-sharpened target (true) or the GT
            itself (false, as train_realesrgan_x4plus.yml); the pixel and perceptual losses use the
            target the degradation stage gives (USM-sharpened with the realesrgan_x4 preset).
    """

    def __init__(self, network: component(ARCHS), discriminator: Optional[component(ARCHS)] = None,
                 pixel_weight: float = 1.0, perceptual_weight: float = 0.0, gan_weight: float = 0.0,
                 perceptual_layers: dict = VGG_LAYERS, vgg_path: Optional[str] = None, scale: int = 4,  # noqa: B006
                 gan_gt_usm: bool = False):
        super().__init__()
        self.scale = scale
        self.networks["g"] = ARCHS.build(network, "method.network")
        net_scale = getattr(self.networks["g"], "scale", scale)
        if net_scale != scale:
            raise OptionsError(f"method.scale: {scale} differs from method.network.scale {net_scale}; the restored "
                               f"image would not be scale x the LQ size")
        self.size_multiple = PIXEL_UNSHUFFLE.get(scale, 1)
        self.pixel_weight, self.perceptual_weight, self.gan_weight = pixel_weight, perceptual_weight, gan_weight
        self.gan_gt_usm = gan_gt_usm
        self.perceptual = None
        if perceptual_weight > 0:
            if vgg_path is None:
                raise OptionsError("method.vgg_path: the perceptual loss needs a local VGG19 file "
                                   "(torchvision's vgg19-dcbb9e9d.pth)")
            with local_torchvision_weights("VGG19_Weights.IMAGENET1K_V1", vgg_path):
                self.perceptual = PerceptualLoss(dict(perceptual_layers), vgg_type="vgg19", use_input_norm=True,
                                                 range_norm=False, perceptual_weight=perceptual_weight,
                                                 style_weight=0.0, criterion="l1")
        if gan_weight > 0:
            if discriminator is None:
                raise OptionsError("method.discriminator: gan_weight > 0 needs a discriminator (UNetDiscriminatorSN)")
            self.networks["d"] = ARCHS.build(discriminator, "method.discriminator")
            self.gan_loss = GANLoss("vanilla", loss_weight=gan_weight)

    def setup(self, device, mixed_precision: str = "no") -> None:
        super().setup(device, mixed_precision)
        if self.perceptual is not None:   # a loss module, not a network: the engine does not place it
            self.perceptual.to(device)

    def training_step(self, batch: dict) -> dict[str, float]:
        lq, gt = batch["lq"], batch["gt"]
        net_g, logs = self.networks["g"], {}
        net_d = self.networks.get("d")
        if net_d is not None:
            net_d.requires_grad_(False)
        with self.autocast():
            output = net_g(lq)
            loss = self.pixel_weight * F.l1_loss(output, gt)
            logs["l_pix"] = loss.item()
            if self.perceptual is not None:
                l_percep, _ = self.perceptual(output.float(), gt)
                loss = loss + l_percep
                logs["l_percep"] = l_percep.item()
            if net_d is not None:
                l_gan = self.gan_loss(net_d(output), True, is_disc=False)
                loss = loss + l_gan
                logs["l_g_gan"] = l_gan.item()
        self.optimize("g", loss)
        if net_d is not None:
            net_d.requires_grad_(True)
            with self.autocast():
                real = gt if self.gan_gt_usm else batch.get("gt_unsharpened", gt)
                l_real = self.gan_loss(net_d(real), True, is_disc=True)
                l_fake = self.gan_loss(net_d(output.detach()), False, is_disc=True)
            self.optimize("d", l_real + l_fake)
            logs["l_d_real"], logs["l_d_fake"] = l_real.item(), l_fake.item()
        return logs

    def restore(self, batch: dict, generator=None) -> torch.Tensor:
        with self.autocast():
            return self.net("g")(batch["lq"]).float()
