"""DA-CLIP stage 1 (Luo et al., ICLR 2024): train the controller next to a frozen CLIP with two CLIP
contrastive terms (InfoNCE, Radford et al. 2021): content embedding vs the clean image's caption, and
degradation embedding vs the degradation's name.  After every optimiser step ``logit_scale`` is clamped
to [0, ln 100] (CLIP's rule; the release's training loop does the same).

Degradation term's targets: ``degradation_positives: index`` is the release's (open_clip's ClipLoss:
arange labels, each image against its own text); ``same_label`` (the default) spreads each row's target
uniformly over the samples of the same degradation.  When the samples of one label share one text --
always here, where the degradation's text is its name -- the logit rows / columns of those samples are
equal and the two targets give the same loss and the same gradients: ``same_label`` is then exactly the
release's loss.  They differ only when one label comes with different texts.

Images: the training input is open_clip's training transform of each 8-bit LQ when the dataset gives it
(``lq_clip``, ``DegradationTypeDataset(clip_train_size=...)``, the release's stage-1 augmentation), else the
inference preprocessing (``clip_preprocess``) of the batch.  ``clip_preprocess`` is the release's CLIP
preprocessing at restoration time; it calls open_clip's inference transform (torchvision on PIL images).
Validation (``evaluate``): zero-shot degradation accuracy with the controller's degradation embedding and,
for reference, with plain CLIP's image embedding.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from osir.core import quiet
from osir.core.method import Method
from osir.methods.daclip.files import release_file
from osir.methods.daclip.model import DACLIP, build_clip, load_release
from osir.methods.irsde.method import IRSDE
from osir.core.options import component
from osir.core.registry import ARCHS, METHODS, OptionsError

LOGIT_SCALE_MAX = math.log(100)


def require_file(key: str, path, what: str) -> None:
    """One ``OptionsError`` line naming the option ``key`` and the file when ``path`` is not a file: checked
    before any CLIP is built (building ViT-L/14 on a CPU takes minutes).  ``what``: what the file should be."""
    if not Path(path).is_file():
        state = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise OptionsError(f"{key}: '{path}' {state}; it should be {what}")


def to_8bit_images(image: torch.Tensor) -> list:
    """B x 3 x H x W images in [0, 1] -> 8-bit RGB PIL images, truncated as the release's
    ``Image.fromarray((x * 255).astype(np.uint8))`` (values outside [0, 1] clamped first; for an image read
    from an 8-bit file, x * 255 in float32 is exactly its integer values)."""
    from PIL import Image
    pixels = (image.detach().float().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p) for p in pixels]


def clip_preprocess(image: torch.Tensor, size: int) -> torch.Tensor:
    """CLIP's input for the DA-CLIP embeddings, the release's steps (its datasets' ``clip_transform``):
    each [0, 1] image to 8 bits (``to_8bit_images``), then open_clip's inference transform on the PIL
    image -- torchvision's ``Resize(size, BICUBIC)`` (short side to ``size``, long side
    ``int(size * long / short)``, PIL's bicubic on 8-bit pixels), ``CenterCrop(size)`` (offset
    ``int(round((side - size) / 2))``), ``ToTensor``, OpenAI mean / std.  B x 3 x size x size on the
    input's device."""
    from open_clip import image_transform
    transform = image_transform(size, is_train=False)
    return torch.stack([transform(p) for p in to_8bit_images(image)]).to(image.device)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                     labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021) between normalised image and text embeddings at
    ``scale``; targets the diagonal (the release's arange labels), or with ``labels`` every pair of samples
    sharing a label (uniform over a row's positives).  With equal texts for equal labels both give the
    same value and gradients (the module docstring)."""
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    if labels is None:
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    same = (labels[:, None] == labels[None, :]).to(logits.dtype)
    target = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T)) / 2


@METHODS.register(name="DACLIP")
class DACLIPMethod(Method):
    """Args:
        clip_model: open_clip model name (ViT-B-32 for the release, ViT-L-14 for wild IR).
        clip_checkpoint: a local open_clip checkpoint file of that model (e.g. laion2b_s34b_b79k), or null.
        clip_config: instead of a name, an open_clip CLIP config (``embed_dim``, ``vision_cfg``,
            ``text_cfg``): e.g. the demo's tiny model.
        release_path: ``daclip_ViT-B-32.pt`` to start from (loaded as released).
        degradation_positives: 'same_label' or 'index' (the release's arange labels); the same loss
            whenever one degradation has one text, as here (the module docstring).
        content_weight: weight of the content (caption) term.
        degradations: the degradation names for zero-shot validation (default: the validation set's types).
        gradient_cache_chunk: with one process, embed the batch this many images at a time under gradient
            caching (Gao et al., 2021: the same gradient as the whole batch, one chunk's activations in
            memory), so the paper's contrastive batch (784) fits one GPU; null: the whole batch at once.
            (``train.grad_accum_steps`` is not the same for a contrastive loss: each micro-batch then
            only sees its own negatives.)
    """

    def __init__(self, clip_model: str = "ViT-B-32", clip_checkpoint: Optional[str] = None,
                 clip_config: Optional[dict] = None, release_path: Optional[str] = None,
                 degradation_positives: Literal["same_label", "index"] = "same_label", content_weight: float = 1.0,
                 degradations: Optional[list[str]] = None, gradient_cache_chunk: Optional[int] = None):
        super().__init__()
        if gradient_cache_chunk is not None and gradient_cache_chunk < 1:
            raise OptionsError(f"method.gradient_cache_chunk: a number of images >= 1, or null; got {gradient_cache_chunk}")
        self.gradient_cache_chunk = gradient_cache_chunk
        if clip_checkpoint is not None and clip_config is None:
            require_file("method.clip_checkpoint", clip_checkpoint, f"a local open_clip checkpoint of {clip_model}")
        if release_path:
            found = release_file(clip_model) if clip_config is None else None
            require_file("method.release_path", release_path,
                         found.describe() if found else "a DA-CLIP file of this CLIP (as daclip_ViT-B-32.pt)")
        import open_clip
        if clip_config is not None:
            from open_clip.model import CLIP
            clip = CLIP(**clip_config)
            self.context_length = clip_config.get("text_cfg", {}).get("context_length", 77)
            self.tokenizer = lambda texts: open_clip.tokenize(texts, context_length=self.context_length)
        else:
            # with a DA-CLIP file to load over it, open_clip's "initialized randomly" is expected
            with quiet.expected("open-clip-random-init") if release_path else nullcontext():
                clip = build_clip(clip_model, clip_checkpoint)
            self.tokenizer = open_clip.get_tokenizer(clip_model)
        self.image_size = clip.visual.image_size[0] if isinstance(clip.visual.image_size, (tuple, list)) \
            else clip.visual.image_size
        model = DACLIP(clip)
        if release_path:
            load_release(model, release_path)
            self.pretrained["daclip"] = release_path
        self.networks["daclip"] = model
        # a CLIP built from a config (no file) has random frozen weights no file holds: checkpoints keep them
        self.frozen_from_file = bool(clip_config is None and (clip_checkpoint or release_path))
        self.positives, self.content_weight, self.degradations = degradation_positives, content_weight, degradations

    def parameter_groups(self) -> dict[str, list]:
        net = self.networks["daclip"]
        return {"daclip": [p for p in net.parameters() if p.requires_grad],
                "controller": [*net.visual_control.parameters(), net.logit_scale]}

    def checkpoint_state(self, name: str, state: dict) -> dict:
        """The trained tensors when the frozen CLIP comes from a file; the whole model otherwise."""
        return super().checkpoint_state(name, state) if self.frozen_from_file else state

    def text_features(self, texts: list[str]) -> torch.Tensor:
        net = self.net("daclip")
        with torch.no_grad():
            return net.encode_text(self.tokenizer(texts).to(self.device))

    def embeddings(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            return self.networks["daclip"](images)

    def losses(self, content: Optional[torch.Tensor], degradation: torch.Tensor,
               batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The degradation term and, with ``content_weight``, the content (caption) term."""
        kinds = list(batch["degradation_type"])
        names = sorted(set(kinds))
        labels = torch.tensor([names.index(k) for k in kinds], device=degradation.device) \
            if self.positives == "same_label" else None
        scale = self.unwrap(self.networks["daclip"]).logit_scale.exp()
        l_deg = contrastive_loss(degradation.float(), self.text_features(kinds).float(), scale, labels)
        loss, logs = l_deg, {"l_degradation": l_deg.item()}
        if self.content_weight:
            l_content = contrastive_loss(content.float(), self.text_features(list(batch["caption"])).float(), scale)
            loss, logs["l_content"] = loss + self.content_weight * l_content, l_content.item()
        return loss, logs

    def clamp_logit_scale(self) -> None:
        """CLIP's rule, as the release's training loop after every step: ``logit_scale`` in [0, ln 100]."""
        with torch.no_grad():
            self.unwrap(self.networks["daclip"]).logit_scale.clamp_(0, LOGIT_SCALE_MAX)

    def training_images(self, batch: dict) -> torch.Tensor:
        """The dataset's ``lq_clip`` (open_clip's training transform, the release's augmentation), else the
        inference preprocessing of ``lq``."""
        if "lq_clip" not in batch:
            return clip_preprocess(batch["lq"], self.image_size)
        images = batch["lq_clip"]
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise OptionsError(f"datasets.train.clip_train_size: the dataset gives {tuple(images.shape[-2:])} "
                               f"images, the CLIP takes {self.image_size}")
        return images

    def training_step(self, batch: dict) -> dict[str, float]:
        images = self.training_images(batch)
        name = "controller" if "controller" in self.optimizers else "daclip"
        chunk = self.gradient_cache_chunk
        if not chunk or len(images) <= chunk:
            loss, logs = self.losses(*self.embeddings(images), batch)
            self.optimize(name, loss)
            self.clamp_logit_scale()
            return logs
        if self.accelerator.num_processes > 1:
            raise OptionsError("method.gradient_cache_chunk: gradient caching is for one process; with several, "
                               "the batch is already split across them (set it to null)")
        # gradient caching (Gao et al., 2021): the whole batch's embeddings without a graph, the loss and its
        # gradient w.r.t. them (and logit_scale), then every chunk again with its graph, back-propagating that
        # gradient: the gradient of the whole-batch contrastive loss with one chunk's activations in memory
        pieces = images.split(chunk)
        with torch.no_grad():
            cached = [self.embeddings(piece) for piece in pieces]
        content = torch.cat([c for c, _ in cached]).float().requires_grad_()
        degradation = torch.cat([d for _, d in cached]).float().requires_grad_()
        loss, logs = self.losses(content, degradation, batch)
        self.backward(name, loss)
        grads = [(g.split(chunk) if g is not None else None) for g in (content.grad, degradation.grad)]
        for i, piece in enumerate(pieces):
            outputs = self.embeddings(piece)
            surrogate = sum((out.float() * g[i]).sum() for out, g in zip(outputs, grads) if g is not None)
            surrogate.backward()
        self.step(name)
        self.clamp_logit_scale()
        return logs

    def classify(self, images: torch.Tensor, names: list[str],
                 preprocessed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-shot degradation indices (into ``names``) with the controller and with plain CLIP
        (``images`` in [0, 1], or already through ``clip_preprocess``)."""
        net = self.net("daclip")
        texts = F.normalize(self.text_features(names).float(), dim=-1)
        x = images if preprocessed else clip_preprocess(images, self.image_size)
        _, degradation = net.encode_image(x)
        plain, _ = net.encode_image(x, control=False)
        return ((F.normalize(degradation.float(), dim=-1) @ texts.T).argmax(1),
                (F.normalize(plain.float(), dim=-1) @ texts.T).argmax(1))

    def evaluate(self, dataset, batch_size: int = 1) -> dict[str, float]:
        """Zero-shot degradation accuracy over ``dataset`` (with and without the controller)."""
        names = self.degradations or getattr(dataset, "types", None)
        if not names:
            raise OptionsError("method.degradations: name the degradation types for zero-shot validation")
        self.confusion = torch.zeros(len(names), len(names), dtype=torch.long)
        self.evaluated_names = list(names)
        hits = plain_hits = 0
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            images = torch.cat([clip_preprocess(it["lq"][None], self.image_size) for it in items])  # any sizes
            truth = torch.tensor([names.index(it["degradation_type"]) for it in items])
            predicted, plain = (p.cpu() for p in self.classify(images.to(self.device), list(names), True))
            hits += int((predicted == truth).sum())
            plain_hits += int((plain == truth).sum())
            for t, p in zip(truth.tolist(), predicted.tolist()):
                self.confusion[t, p] += 1
        n = len(dataset)
        return {"degradation_accuracy": hits / n, "accuracy_without_controller": plain_hits / n, "chance": 1 / len(names)}

    def save_evaluation(self, folder) -> None:
        """The last ``evaluate``'s confusion matrix (rows: true degradation, columns: predicted) as
        confusion.json and confusion.png."""
        import json
        from pathlib import Path
        import cv2
        import numpy as np
        names, counts = self.evaluated_names, self.confusion
        Path(folder, "confusion.json").write_text(json.dumps({"labels": names, "counts": counts.tolist()}, indent=2))
        cell, margin = 48, 170
        n = len(names)
        image = np.full((margin + n * cell + 10, margin + n * cell + 10, 3), 255, np.uint8)
        rates = (counts / counts.sum(1, keepdim=True).clamp(min=1)).numpy()
        for i in range(n):
            for j in range(n):
                y, x = margin + i * cell, margin + j * cell
                shade = int(255 * (1 - rates[i, j]))
                cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), (255, shade, shade), -1)
                cv2.putText(image, str(int(counts[i, j])), (x + 12, y + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
            cv2.putText(image, names[i][:20], (5, margin + i * cell + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
            cv2.putText(image, names[i][:8], (margin + i * cell + 2, margin - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1)
        cv2.putText(image, "true \\ predicted", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        cv2.imwrite(str(Path(folder, "confusion.png")), image)

    def restore(self, batch: dict, generator=None) -> torch.Tensor:
        raise NotImplementedError("DA-CLIP recognises degradations; restoration is options/daclip_uir.yml")


@METHODS.register(name="DACLIPUIR")
class DACLIPUniversalIR(IRSDE):
    """Universal image restoration (Luo et al., ICLR 2024): IR-SDE with ``DACLIPUNet`` conditioned on the
    frozen DA-CLIP's degradation and content embeddings, computed once per batch from the whole LQ
    (``clip_preprocess``, the release's steps; in fp32, where the release's test scripts run DA-CLIP under
    CUDA fp16 autocast) and handed to every sampler step.

    Args as ``IRSDE`` (the release: max_sigma 50, T 100, posterior sampling), plus the DA-CLIP to use:
    ``daclip_path`` (``daclip_ViT-B-32.pt``, or a stage-1 run's weights) with ``clip_model`` /
    ``clip_config`` as in ``DACLIP``; ``use_daclip: false`` trains and restores without it (single task).
    ``daclip_path`` is checked before any network is built: a missing file is one ``OptionsError`` line with
    the release's file name and page (the card's ``ReleaseFile``), not minutes of building a random CLIP.
    """

    def __init__(self, network: component(ARCHS) = {"type": "DACLIPUNet"}, max_sigma: float = 50.0,  # noqa: B006
                 T: int = 100, schedule: Literal["cosine", "linear", "constant"] = "cosine", eps: float = 0.005,
                 loss: Literal["l1", "l2"] = "l1", sampler: str = "posterior", sample_steps: Optional[int] = None,
                 eta: Optional[float] = None, clip_denoised: bool = False, use_daclip: bool = True,
                 daclip_path: Optional[str] = None, clip_model: str = "ViT-B-32", clip_config: Optional[dict] = None,
                 last_step_noise: bool = True):
        if use_daclip and daclip_path:          # before any network is built (ViT-L/14 takes minutes on a CPU)
            found = release_file(clip_model) if clip_config is None else None
            require_file("method.daclip_path", daclip_path, found.describe() if found else
                         "the DA-CLIP weights of this CLIP, or a stage-1 run's net_daclip_*.safetensors")
        super().__init__(network, max_sigma, T, schedule, eps, loss, sampler, sample_steps, eta, clip_denoised, 1,
                         last_step_noise)
        self.use_daclip = use_daclip
        if use_daclip:
            if clip_config is None and not daclip_path:
                raise OptionsError("method.daclip_path: universal IR needs the DA-CLIP weights (daclip_ViT-B-32.pt "
                                   "or a stage-1 run's net_daclip_*.safetensors), or use_daclip: false")
            # the file is loaded over the CLIP right after: open_clip's "initialized randomly" is expected
            with quiet.expected("open-clip-random-init") if daclip_path else nullcontext():
                encoder = DACLIPMethod(clip_model=clip_model, clip_config=clip_config)
            if daclip_path and str(daclip_path).endswith(".safetensors"):     # a stage-1 run's weights
                encoder.load_pretrained("daclip", daclip_path)
            elif daclip_path:                                                  # the release file
                load_release(encoder.networks["daclip"], daclip_path)
            if daclip_path:
                self.pretrained["daclip"] = daclip_path
            self.image_size = encoder.image_size
            self.networks["daclip"] = encoder.networks["daclip"].requires_grad_(False).eval()

    def checkpoint_state(self, name: str, state: dict) -> dict:
        """DA-CLIP loaded from ``daclip_path`` is not saved again with every checkpoint."""
        if name == "daclip" and "daclip" in self.pretrained:
            return {}
        return super().checkpoint_state(name, state)

    def whole_image_inputs(self, batch: dict) -> dict:
        """The DA-CLIP embeddings of the whole LQ, before the inference layer pads and tiles it: each tile
        of a large image is restored with the embeddings of the whole photo (``clip_preprocess``, the
        release's steps), not of the tile."""
        if not self.use_daclip:
            return {}
        with torch.no_grad():
            content, degradation = self.net("daclip").encode_image(clip_preprocess(batch["lq"], self.image_size))
        return {"daclip_degradation": degradation.float(), "daclip_content": content.float()}

    def network_inputs(self, batch: dict) -> dict:
        """The DA-CLIP embeddings (once per batch: the samplers reuse them every step); those of the whole
        image when the inference layer computed them before tiling."""
        if not self.use_daclip:
            return {}
        if "daclip_content" not in batch:
            batch = {**batch, **self.whole_image_inputs(batch)}
        return {"degradation": batch["daclip_degradation"], "content": batch["daclip_content"]}
