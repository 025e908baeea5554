"""Prompt extractors: the text prompt of each image of a batch, for methods conditioned on text
(OSEDiff; DAPE's tagger registers here too).  ``extractor(batch) -> list[str]``, one per image.
Written here because they are a few lines each."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from osir.data.io import DataError
from osir.core.registry import PROMPTS
import osir.data.files  # noqa: F401  (its file declarations, also where the entry points are stale)


@PROMPTS.register()
class EmptyPrompt:
    """The empty prompt for every image."""

    def __call__(self, batch: dict) -> list[str]:
        return [""] * len(batch["lq_path"])


@PROMPTS.register()
class FixedPrompt:
    """The same prompt for every image."""

    def __init__(self, prompt: str):
        self.prompt = prompt

    def __call__(self, batch: dict) -> list[str]:
        return [self.prompt] * len(batch["lq_path"])


@PROMPTS.register()
class TextFilePrompt:
    """Each image's prompt from a text file: ``<folder>/<name>.txt`` (``name``: the image's path
    relative to its dataset folder), or beside the image when ``folder`` is not set.  A missing file
    is an error naming it."""

    def __init__(self, folder: Optional[str] = None, suffix: str = ".txt"):
        self.folder, self.suffix = folder, suffix

    def path(self, lq_path: str, name: str) -> Path:
        if self.folder is not None:
            return Path(self.folder) / f"{name}{self.suffix}"
        return Path(lq_path).with_suffix(self.suffix)

    def __call__(self, batch: dict) -> list[str]:
        prompts = []
        for lq_path, name in zip(batch["lq_path"], batch["name"]):
            path = self.path(lq_path, name)
            if not path.is_file():
                raise DataError(f"no prompt file '{path}' for image '{lq_path}'")
            prompts.append(path.read_text(encoding="utf-8").strip())
        return prompts


@PROMPTS.register()
class CaptionPrompt:
    """Each image's caption by an image-captioning model from a local transformers folder (BLIP and
    other image-to-text models: ``AutoProcessor`` + ``AutoModelForImageTextToText``), generated from
    the LQ image, greedy, with ``prefix`` / ``suffix`` around it (e.g. ``suffix: ", high quality"``)."""

    def __init__(self, model_path: str, max_new_tokens: int = 30, prefix: str = "", suffix: str = ""):
        folder = Path(model_path)
        if not (folder / "config.json").is_file():
            raise ValueError(f"model_path: '{folder}' is not a transformers model folder (no config.json); "
                             "give a local image-captioning model saved with save_pretrained (e.g. BLIP)")
        from transformers import AutoModelForImageTextToText, AutoProcessor
        self.processor = AutoProcessor.from_pretrained(folder)
        self.model = AutoModelForImageTextToText.from_pretrained(folder).eval().requires_grad_(False)
        self.max_new_tokens, self.prefix, self.suffix = max_new_tokens, prefix, suffix

    def __call__(self, batch: dict) -> list[str]:
        import torch
        lq = batch["lq"]
        self.model.to(lq.device)
        inputs = self.processor(images=list(lq.float().clamp(0, 1).cpu()), return_tensors="pt", do_rescale=False)
        with torch.no_grad():
            ids = self.model.generate(**inputs.to(lq.device), max_new_tokens=self.max_new_tokens, do_sample=False)
        captions = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [f"{self.prefix}{c.strip()}{self.suffix}" for c in captions]

