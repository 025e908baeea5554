"""The README's worked example of what a method can declare: two networks stepped by one optimiser,
EMA on one of them, and a frozen pretrained diffusers folder cast to the training precision."""
import torch.nn.functional as F
from torch import nn

from osir.core.method import Method
from osir.core.registry import METHODS


@METHODS.register()
class LatentRefiner(Method):
    """Residual refiner ``lq + head(body(lq))`` trained with L1 in pixels plus L1 between the frozen
    VAE's latents of the output and of the GT."""

    def __init__(self, vae_path: str, channels: int = 16, latent_weight: float = 0.1):
        super().__init__()
        from diffusers import AutoencoderKL          # only this method needs diffusers
        self.networks["body"] = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.networks["head"] = nn.Conv2d(channels, 3, 3, padding=1)
        self.networks["vae"] = AutoencoderKL.from_pretrained(vae_path).requires_grad_(False)   # frozen
        self.pretrained["vae"] = vae_path                                                      # provenance
        self.latent_weight = latent_weight

    def setup(self, device, mixed_precision="no"):
        super().setup(device, mixed_precision)
        self.networks["vae"].to(dtype=self.weight_dtype)   # bf16 under bf16 training

    @staticmethod
    def refine(lq, body, head):
        return lq + head(body(lq))

    def latents(self, img):
        vae = self.networks["vae"]
        return vae.encode((img * 2 - 1).to(vae.dtype)).latent_dist.mean.float()

    def training_step(self, batch):
        with self.autocast():
            out = self.refine(batch["lq"], self.networks["body"], self.networks["head"])   # DDP-wrapped
            l_pix = F.l1_loss(out.float(), batch["gt"])
            l_latent = F.l1_loss(self.latents(out), self.latents(batch["gt"]))
        self.optimize("g", l_pix + self.latent_weight * l_latent)
        return {"l_pix": l_pix.item(), "l_latent": l_latent.item()}

    def restore(self, batch, generator=None):
        with self.autocast():
            return self.refine(batch["lq"], self.net("body"), self.net("head")).float()   # unwrapped
