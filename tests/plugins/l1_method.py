"""The README's 'adding a method' example, registered from outside the package via ``imports:``."""
import torch.nn.functional as F
from torch import nn

from osir.core.method import Method
from osir.core.options import component
from osir.core.registry import ARCHS, METHODS


@ARCHS.register()
class TinyConvNet(nn.Module):
    def __init__(self, channels: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


@METHODS.register()
class PlainL1(Method):
    """Plain L1 regression."""

    def __init__(self, network: component(ARCHS), loss_weight: float = 1.0):
        super().__init__()
        self.networks["g"] = ARCHS.build(network, "method.network")
        self.loss_weight = loss_weight

    def training_step(self, batch):
        with self.autocast():
            loss = self.loss_weight * F.l1_loss(self.networks["g"](batch["lq"]), batch["gt"])
        self.optimize("g", loss)
        return {"l_pix": loss.item()}

    def restore(self, batch, generator=None):
        return self.net("g")(batch["lq"])
