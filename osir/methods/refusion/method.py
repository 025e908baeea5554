"""Refusion (Luo et al., CVPR-W NTIRE 2023): IR-SDE's mean-reverting SDE and maximum-likelihood
objective (IR-SDE Eq. 12) with a NAFNet noise network, in pixel space (``Refusion``) or on the latents
of a U-Net compression model (``RefusionCompression`` trains it, ``LatentRefusion`` runs the SDE on
its latents).

Latent Refusion, stage 1 (``RefusionCompression``): encode LQ and GT; the decoder must rebuild the LQ
from its own latent and skips and the GT from the GT's latent with the *LQ's* skips:
L1(dec(z_LQ, h_LQ), LQ) + L1(dec(z_GT, h_LQ), GT) + 0.001 (|mean z_LQ - mean LQ| + |std z_LQ - 0.5 std LQ|).
Stage 2 (``LatentRefusion``): the compression model frozen; the SDE runs from mu = z_LQ towards z_GT;
restoration samples a latent and decodes it with the LQ's skips.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from osir.core.checkpoint import CheckpointError, load_network, read_state_dict
from osir.core.method import Method
from osir.methods.irsde.method import IRSDE
from osir.core.options import component
from osir.core.registry import ARCHS, LOSSES, METHODS, OptionsError
import osir.methods.refusion.files  # noqa: F401  (its file declarations, also where the entry points are stale)

NAFNET = {"type": "ConditionalNAFNet", "img_channel": 3, "width": 64, "enc_blk_nums": [1, 1, 1, 28],
          "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1, 1]}
COMPRESSION = {"type": "CompressionUNet", "in_ch": 3, "out_ch": 3, "ch": 8, "ch_mult": [4, 8, 8, 16], "embed_dim": 8}


@dataclass
class LossWeight:
    weight: float = 1.0          # the loss's weight beside the matching distance


@METHODS.register()
class Refusion(IRSDE):
    """Pixel-space Refusion.  Args as ``IRSDE``, plus:

        loss_weight: weight of the matching distance (``loss``: l1 / l2); 0 drops it.
        extra_losses: name -> registered loss (e.g. ``{type: SpatialEntropyLoss, weight: 0.1}``) between
            the network's expected reverse state and the optimal one, added to the matching distance.
        condition_keys: batch entries passed to the network by name (``[lens_info]`` for bokeh).
    """

    def __init__(self, network: component(ARCHS) = NAFNET, max_sigma: float = 50.0, T: int = 100,  # noqa: B006
                 schedule: Literal["cosine", "linear", "constant"] = "cosine", eps: float = 0.005,
                 loss: Literal["l1", "l2"] = "l1", loss_weight: float = 1.0,
                 extra_losses: Optional[dict[str, component(LOSSES, LossWeight)]] = None,
                 sampler: str = "sde", sample_steps: Optional[int] = None, eta: Optional[float] = None,
                 clip_denoised: bool = False, upscale: int = 1, condition_keys: Optional[list[str]] = None,
                 last_step_noise: bool = True):
        super().__init__(network, max_sigma, T, schedule, eps, loss, sampler, sample_steps, eta, clip_denoised,
                         upscale, last_step_noise)
        self.loss_weight, self.condition_keys = loss_weight, list(condition_keys or [])
        self.extra_losses = {}
        for name, spec in (extra_losses or {}).items():
            spec = dict(spec)
            weight = float(spec.pop("weight", 1.0))
            self.extra_losses[name] = (weight, LOSSES.build(spec, f"method.extra_losses.{name}"))
        if loss_weight == 0 and not self.extra_losses:
            raise OptionsError("method.loss_weight: 0 leaves no loss; add method.extra_losses or set a weight > 0")

    def network_inputs(self, batch: dict) -> dict:
        missing = [k for k in self.condition_keys if k not in batch]
        if missing:
            raise OptionsError(f"method.condition_keys: the batch has no {missing} (does the dataset provide them?)")
        return {k: batch[k] for k in self.condition_keys}

    def objective(self, net, gt: torch.Tensor, mu: torch.Tensor, inputs: dict) -> tuple[torch.Tensor, dict]:
        """The weighted matching distance plus the extra losses, and their logged values."""
        predicted, optimal = self.matching_states(net, gt, mu, inputs)
        distance = F.l1_loss if self.loss == "l1" else F.mse_loss
        total = 0.0
        logs = {}
        if self.loss_weight:
            l_ml = distance(predicted, optimal)
            total, logs["l_ml"] = self.loss_weight * l_ml, l_ml.item()
        for name, (weight, fn) in self.extra_losses.items():
            value = fn(predicted, optimal)
            total, logs[f"l_{name}"] = total + weight * value, value.item()
        return total, logs

    def training_step(self, batch: dict) -> dict[str, float]:
        gt = batch["gt"]
        loss, logs = self.objective(self.networks["g"], gt, self.condition(batch["lq"], gt.shape[-2:]),
                                    self.network_inputs(batch))
        self.optimize("g", loss)
        return logs


# ``method.compression_path`` is declared in files.py, checked before anything is built


def load_compression(net: torch.nn.Module, path: Optional[str], key: str = "method.compression_path") -> str:
    """Load the stage-1 compression model strictly from ``path`` (osir's safetensors of a stage-1 run
    or the release's ``*.pth``); a missing or mismatched file is one clear error naming ``key``."""
    if not path:
        raise OptionsError(f"{key}: latent Refusion needs the stage-1 compression model (a net_l_*.safetensors "
                           "of options/refusion/latent_stage1.yml or the release's latent model *.pth)")
    if not Path(path).is_file():
        raise OptionsError(f"{key}: stage-1 checkpoint not found: '{path}'")
    try:
        load_network(net, path, strict=True, state=read_state_dict(path))
    except CheckpointError as err:
        raise CheckpointError(f"{key}: {err}") from None
    return str(path)


@METHODS.register()
class RefusionCompression(Method):
    """Latent Refusion stage 1: trains the U-Net compression model (network ``l``).

    Args:
        network: the compression model (``CompressionUNet``).
        regularisation: weight of the latent statistics term (the release: 0.001).
        swap_prob: each sample's probability of LQ and GT trading places (the release's ``use_swap``:
            per sample with probability 0.5, in its dataset's augmentation; 0: never).
    Restoration (validation) decodes the GT's latent with the LQ's skips when the batch has a GT (how
    well stage 2's target can be decoded), else reconstructs the LQ.
    """

    def __init__(self, network: component(ARCHS) = COMPRESSION, regularisation: float = 0.001,  # noqa: B006
                 swap_prob: float = 0.0):
        super().__init__()
        if not 0 <= swap_prob <= 1:
            raise OptionsError(f"method.swap_prob: expected a probability in [0, 1], got {swap_prob}")
        self.networks["l"] = ARCHS.build(network, "method.network")
        self.regularisation, self.swap_prob = regularisation, swap_prob

    def losses(self, lq: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three stage-1 terms (unweighted)."""
        with self.autocast():
            rec, rep, z_lq = self.networks["l"](lq, gt)         # forward: DDP-wrapped networks sync gradients
        rec, rep, z_lq = rec.float(), rep.float(), z_lq.float()
        reg = (z_lq.mean() - lq.mean()).abs() + (z_lq.std() - 0.5 * lq.std()).abs()
        return {"rec": F.l1_loss(rec, lq), "rep": F.l1_loss(rep, gt), "reg": reg}

    def swapped(self, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch with each sample's LQ and GT trading places with probability ``swap_prob``
        (independently per sample, as the release's dataset does with ``use_swap``)."""
        if not self.swap_prob:
            return lq, gt
        swap = (torch.rand(lq.shape[0], device=lq.device) < self.swap_prob).view(-1, *([1] * (lq.dim() - 1)))
        return torch.where(swap, gt, lq), torch.where(swap, lq, gt)

    def training_step(self, batch: dict) -> dict[str, float]:
        lq, gt = self.swapped(batch["lq"], batch["gt"])
        terms = self.losses(lq, gt)
        loss = terms["rec"] + terms["rep"] + self.regularisation * terms["reg"]
        self.optimize("l", loss)
        return {f"l_{k}": v.item() for k, v in terms.items()}

    def restore(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        net = self.net("l")
        lq = batch["lq"]
        z_lq, h_lq = net.encode(lq)
        z = net.encode(batch["gt"])[0] if "gt" in batch else z_lq
        return net.decode(z, h_lq, lq.shape[-2:])


@METHODS.register()
class LatentRefusion(Refusion):
    """Latent Refusion stage 2: the SDE on the frozen compression model's latents (mu = z_LQ).

    Args as ``Refusion`` (``network`` on ``embed_dim`` channels, the release: a NAFNet with
    ``global_skip``), plus ``compression`` (the stage-1 architecture) and ``compression_path`` (its
    weights, required).  Images are reflect-padded to a multiple of 16 by the compression model and
    the latent (1/8 of that) is zero-padded to 16 again by the NAFNet.
    """

    def __init__(self, network: component(ARCHS) = {**NAFNET, "img_channel": 8, "global_skip": True},  # noqa: B006
                 compression: component(ARCHS) = COMPRESSION, compression_path: Optional[str] = None,  # noqa: B006
                 max_sigma: float = 50.0, T: int = 100, schedule: Literal["cosine", "linear", "constant"] = "cosine",
                 eps: float = 0.005, loss: Literal["l1", "l2"] = "l1", loss_weight: float = 1.0,
                 extra_losses: Optional[dict[str, component(LOSSES, LossWeight)]] = None,
                 sampler: str = "sde", sample_steps: Optional[int] = None, eta: Optional[float] = None,
                 clip_denoised: bool = False, condition_keys: Optional[list[str]] = None,
                 last_step_noise: bool = True):
        if clip_denoised:
            raise OptionsError("method.clip_denoised clamps x0 estimates to [0, 1]; latent Refusion's states are "
                               "latents, not images: leave it false")
        super().__init__(network, max_sigma, T, schedule, eps, loss, loss_weight, extra_losses, sampler,
                         sample_steps, eta, clip_denoised, 1, condition_keys, last_step_noise)
        model = ARCHS.build(compression, "method.compression")
        self.pretrained["l"] = load_compression(model, compression_path)
        self.networks["l"] = model.requires_grad_(False).eval()

    def training_step(self, batch: dict) -> dict[str, float]:
        compression = self.networks["l"].eval()
        with torch.no_grad():
            z_lq, _ = compression.encode(batch["lq"])
            z_gt, _ = compression.encode(batch["gt"])
        loss, logs = self.objective(self.networks["g"], z_gt, z_lq, self.network_inputs(batch))
        self.optimize("g", loss)
        return logs

    def restore(self, batch: dict, generator: torch.Generator | None = None, *, sampler: str | None = None,
                steps: int | None = None) -> torch.Tensor:
        compression, net = self.net("l"), self.net("g")
        lq = batch["lq"]
        z_lq, skips = compression.encode(lq)

        def model(x, mu_, t, **inputs):
            with self.autocast():
                return net(x, mu_, t, **inputs).float()

        z = self.sample(model, z_lq, batch, generator, sampler, steps)
        return compression.decode(z, skips, lq.shape[-2:])
