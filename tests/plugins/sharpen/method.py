"""``SharpenNet`` and the ``Sharpen`` method: the plugin's network and training step, hand-written as the
smallest feed-forward restoration method (a residual convolutional network trained with L1, as the README's
'adding a method' example), with no paper behind it."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from osir.core.method import Method
from osir.core.options import component
from osir.core.registry import ARCHS, METHODS


@ARCHS.register()
class SharpenNet(nn.Module):
    """``x + tail(body(relu(head(x))))``: a 3x3 head convolution to ``features`` channels, ``blocks``
    residual blocks (conv, ReLU, conv, added to their input) and a 3x3 tail convolution back to the
    image's channels.  The size contract is any size (padding 1, no resampling)."""

    def __init__(self, channels: int = 3, features: int = 8, blocks: int = 2):
        super().__init__()
        if channels < 1 or features < 1 or blocks < 0:
            raise ValueError(f"SharpenNet: channels and features must be >= 1 and blocks >= 0, got "
                             f"{channels}, {features}, {blocks}")
        self.head = nn.Conv2d(channels, features, 3, padding=1)
        self.body = nn.ModuleList(nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(),
                                                nn.Conv2d(features, features, 3, padding=1))
                                  for _ in range(blocks))
        self.tail = nn.Conv2d(features, channels, 3, padding=1)

    def forward(self, x):
        y = F.relu(self.head(x))
        for block in self.body:
            y = y + block(y)
        return x + self.tail(y)


@METHODS.register()
class Sharpen(Method):
    """L1 regression of the GT from the LQ through ``network`` (a ``SharpenNet``), one network ``g``."""

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
