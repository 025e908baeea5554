"""DA-CLIP's training data: LQ images labelled with their degradation type and a caption of the clean image.

``DegradationTypeDataset`` reads one of three sources:

* ``dataroot``: the mixed-degradation layout ``<dataroot>/<type>/LQ/<name>`` (and ``GT``), e.g. the ten types
  motion-blurry, hazy, jpeg-compressed, low-light, noisy, raindrop, rainy, shadowed, snowy, uncompleted;
* ``csv``: the original's file form, one ``filepath<TAB>"caption: degradation"`` row per image (a header
  row ``filepath<TAB>title`` is skipped); a bad row is an error naming the file and the line;
* ``dataroot_gt`` + ``degradations``: clean images and registered degradations (``{type_name: spec}``),
  each image under every type (item ``i`` is image ``i // types`` under type ``i % types``), the LQ drawn
  from the sample's seed.

``types`` keeps only the named degradation types (e.g. one test set per type for a per-degradation table).
Captions: the CSV's, else ``captions`` (a tab-separated ``name<TAB>caption`` file), else ``caption_template``
filled with the image's name.  Items: ``lq`` (and ``gt`` where there is one), ``degradation_type``, ``caption``.

``clip_train_size`` (stage 1): the item holds ``lq_clip`` instead of ``lq`` / ``gt``: open_clip's own training
transform (``image_transform(size, is_train=True)``: ``RandomResizedCrop(size, scale=(0.9, 1.0))`` bicubic,
ToTensor, OpenAI mean / std), the release's stage-1 augmentation, of the whole 8-bit LQ (after the
optional ``gt_size`` crop and flips, which the release does not apply; leave them unset to follow it).
The crop is drawn from torch's generator seeded with the sample's seed, so it is reproducible per sample
and independent of workers.
"""
from __future__ import annotations

import csv as csv_module
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from torch.utils.data import Dataset
from pydantic import PositiveInt

from osir.data.datasets import _ImageFolderSource, _split_key
from osir.data.io import DataError, img2tensor, read_image, to_uint8
from osir.data.sampler import AUGMENT, DEGRADATION, sample_rng
from osir.data.transforms import paired_random_crop, random_flip_rot
from osir.core.options import component
from osir.core.registry import DATASETS, DEGRADATIONS
import osir.methods.daclip.files  # noqa: F401  (its file declarations, also where the entry points are stale)


def read_caption_csv(path: str | Path) -> list[tuple[str, str, str]]:
    """(image path, caption, degradation) rows of the original's CSV (tab-separated, ``"caption: degradation"``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"caption CSV not found: '{path}'")
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv_module.reader(f, delimiter="\t"), start=1):
            if line == 1 and row[:1] == ["filepath"]:
                continue
            if len(row) != 2 or ": " not in row[1]:
                raise DataError(f"'{path}' line {line}: expected 'filepath<TAB>\"caption: degradation\"', got {row!r}")
            caption, degradation = row[1].rsplit(": ", 1)
            image = Path(row[0]) if Path(row[0]).is_absolute() else path.parent / row[0]
            rows.append((str(image), caption.strip(), degradation.strip()))
    if not rows:
        raise DataError(f"'{path}' holds no rows")
    return rows


@DATASETS.register()
class DegradationTypeDataset(Dataset):
    """LQ images with their degradation type and a caption (see the module docstring for the sources)."""

    def __init__(self, dataroot: Optional[str] = None, csv: Optional[str] = None, dataroot_gt: Optional[str] = None,
                 degradations: Optional[dict[str, component(DEGRADATIONS)]] = None, captions: Optional[str] = None,
                 caption_template: str = "a photo of {}", types: Optional[list[str]] = None,
                 gt_size: Optional[PositiveInt] = None, use_flip: bool = False, use_rot: bool = False,
                 clip_train_size: Optional[PositiveInt] = None, io_backend: Literal["disk", "skimage"] = "disk"):
        given = [k for k, v in (("dataroot", dataroot), ("csv", csv), ("dataroot_gt", dataroot_gt)) if v]
        if len(given) != 1:
            raise ValueError(f"give exactly one of dataroot, csv, dataroot_gt (got {given or 'none'})")
        if dataroot_gt and not degradations:
            raise ValueError("dataroot_gt needs degradations: {type name: registered degradation}")
        self.gt_size, self.use_flip, self.use_rot, self.template = gt_size, use_flip, use_rot, caption_template
        if clip_train_size is not None and clip_train_size < 1:
            raise ValueError(f"clip_train_size: the CLIP's input size (e.g. 224), got {clip_train_size}")
        self.clip_train_size = clip_train_size
        self.items: list[tuple[str, str, Optional[str], Optional[str]]] = []   # (type, lq, gt, caption)
        self.degrade = None
        if csv:
            self.items = [(deg, image, None, caption) for image, caption, deg in read_caption_csv(csv)]
        elif dataroot:
            root = Path(dataroot)
            folders = sorted(p.name for p in root.iterdir() if (p / "LQ").is_dir()) if root.is_dir() else []
            if not folders:
                raise DataError(f"'{dataroot}' has no <type>/LQ folders (e.g. noisy/LQ, hazy/LQ)")
            for kind in folders:
                lq = _ImageFolderSource(str(root / kind / "LQ"), "disk", "lq")
                gt_dir = root / kind / "GT"
                for name, path in lq.items.items():
                    gt = gt_dir / Path(path).name
                    self.items.append((kind, path, str(gt) if gt.is_file() else None, None))
        else:
            self.source = _ImageFolderSource(dataroot_gt, io_backend, "gt")
            self.degrade = {name: DEGRADATIONS.build(spec, f"degradations.{name}") for name, spec in degradations.items()}
            self.names = list(self.source.items)
        self.captions = {}
        if captions:
            for line, text in enumerate(Path(captions).read_text(encoding="utf-8").splitlines(), start=1):
                if text.strip():
                    if "\t" not in text:
                        raise DataError(f"'{captions}' line {line}: expected 'name<TAB>caption'")
                    name, caption = text.split("\t", 1)
                    self.captions[name] = caption.strip()
        self.types = sorted(self.degrade) if self.degrade else sorted({kind for kind, *_ in self.items})
        if types is not None:
            unknown = [t for t in types if t not in self.types]
            if unknown:
                raise DataError(f"types: {', '.join(unknown)} not in {dataroot or csv or dataroot_gt} "
                                f"(its types: {', '.join(self.types)})")
            self.types = sorted(types)
            self.items = [item for item in self.items if item[0] in self.types]

    def __len__(self) -> int:
        return len(self.names) * len(self.types) if self.degrade else len(self.items)

    def caption(self, name: str, given: Optional[str]) -> str:
        return given or self.captions.get(name) or self.template.format(Path(name).stem.replace("_", " "))

    def __getitem__(self, key) -> dict:
        index, seed = _split_key(key)
        rng = sample_rng(seed, AUGMENT)
        if self.degrade:
            name, kind = self.names[index // len(self.types)], self.types[index % len(self.types)]
            gt = self.source.read(name)
            if self.gt_size is not None:
                gt, _ = paired_random_crop(gt, gt, self.gt_size, 1, rng, self.source.items[name])
            (gt,) = random_flip_rot([gt], rng, self.use_flip, self.use_rot)
            lq, _ = self.degrade[kind](gt, sample_rng(seed, DEGRADATION))
            caption = self.caption(name, self.captions.get(Path(self.source.items[name]).name))
            item = {"degradation_type": kind, "caption": caption, "name": f"{kind}/{name}",
                    "lq_path": self.source.items[name]}
            if self.clip_train_size:
                return {**item, "lq_clip": self.clip_train_view(lq, seed)}
            return {**item, "lq": img2tensor(lq.clip(0, 1)), "gt": img2tensor(gt)}
        kind, lq_path, gt_path, caption = self.items[index]
        lq = read_image(lq_path)
        item = {"degradation_type": kind, "caption": self.caption(Path(lq_path).name, caption),
                "name": f"{kind}/{Path(lq_path).stem}", "lq_path": lq_path}
        if self.clip_train_size and self.gt_size is None:
            gt_path = None                      # the CLIP view needs the LQ alone
        gt = read_image(gt_path) if gt_path else lq
        if self.gt_size is not None:
            gt, lq = paired_random_crop(gt, lq, self.gt_size, 1, rng, lq_path)
        images = random_flip_rot([lq, gt] if gt_path else [lq], rng, self.use_flip, self.use_rot)
        if self.clip_train_size:
            return {**item, "lq_clip": self.clip_train_view(images[0], seed)}
        item["lq"] = img2tensor(images[0])
        if len(images) > 1:
            item["gt"] = img2tensor(images[1])
        return item

    def clip_train_view(self, lq: np.ndarray, seed: int) -> torch.Tensor:
        """open_clip's training transform of the LQ (H x W x 3 in [0, 1]) as an 8-bit PIL image (rounded:
        the file's own values for an image read from an 8-bit file, which the release opens with PIL), its
        random crop drawn from torch's generator seeded with ``seed`` (the global generator is restored)."""
        from open_clip import image_transform
        from PIL import Image
        if not hasattr(self, "_clip_transform"):
            self._clip_transform = image_transform(self.clip_train_size, is_train=True)
        image = Image.fromarray(to_uint8(lq))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % 2 ** 63)
            return self._clip_transform(image)
