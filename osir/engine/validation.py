"""Restore a dataset with a method and score it: shared by validation during training and by
``osir/test.py``."""
from __future__ import annotations

from pathlib import Path

import torch

from osir.data.io import write_image
from osir.inference import restore_tiled
from osir.metrics.suite import MetricSuite


def restore_one(method, lq: torch.Tensor, tile: dict | None, seed: int = 0) -> torch.Tensor:
    """Restore one LQ batch (tiled when configured), with a seeded generator for stochastic samplers."""
    generator = torch.Generator(device=lq.device).manual_seed(seed)
    tile = tile or {}
    return restore_tiled(lambda x: method.restore(x, generator=generator), lq, tile.get("size"),
                         tile.get("overlap", 32), method.scale, method.size_multiple)


def iterate(method, dataset, metrics: MetricSuite, device, max_images=None, tile=None, seed: int = 0):
    """Yield (index, item, restored, scores, input_scores) for each image of ``dataset``."""
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    for index in range(count):
        item = dataset[index]
        lq = item["lq"][None].to(device)
        gt = item["gt"][None].to(device) if "gt" in item else None
        restored = restore_one(method, lq, tile, seed + index).clamp(0, 1)
        scores = metrics.score(restored, gt) if metrics else {}
        inputs = metrics.score(lq, gt) if metrics and gt is not None and lq.shape == gt.shape else {}
        yield index, item, restored, {k: v[0] for k, v in scores.items()}, {k: v[0] for k, v in inputs.items()}


def validate(method, dataset, metrics: MetricSuite, device, save_dir: Path | None, suffix: str = "",
             max_images=None, tile=None, seed: int = 0) -> dict:
    """Mean metrics of the restored images (and of the inputs, when LQ and GT align)."""
    sums, input_sums, n = {}, {}, 0
    for _, item, restored, scores, inputs in iterate(method, dataset, metrics, device, max_images, tile, seed):
        n += 1
        for k, v in scores.items():
            sums[k] = sums.get(k, 0.0) + v
        for k, v in inputs.items():
            input_sums[k] = input_sums.get(k, 0.0) + v
        if save_dir is not None:
            stem = Path(item["lq_path"]).stem
            write_image(Path(save_dir) / stem / f"{stem}{suffix}.png", restored[0])
    out = {}
    for k, v in sums.items():
        out[k] = {"restored": v / max(n, 1)}
        if k in input_sums:
            out[k]["input"] = input_sums[k] / max(n, 1)
    return out
