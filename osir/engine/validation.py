"""Restore a dataset with a method and score it: shared by validation during training and by
``osir/test.py``.  The engine, not the method, puts the networks in ``eval()`` under
``torch.no_grad()`` (with EMA weights swapped in when asked) and restores their modes afterwards,
also when evaluation raises.  A caller may ask it to stop between batches (``should_stop``): the rest is
abandoned (``ValidationAbandoned``), no partial mean is returned as if complete."""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate

from osir.core.options import TileOptions
from osir.data.io import DataError, write_image
from osir.inference import check_finite_output, restore_image
from osir.metrics.suite import MetricSuite


@contextmanager
def evaluation_mode(method, emas=()):
    """Every network of ``method`` in eval mode under ``no_grad``, with the ``emas`` swapped in;
    each module's own mode is restored on exit."""
    modes = [(m, m.training) for net in method.networks.values() for m in net.modules()]
    with ExitStack() as stack:
        for ema in emas:
            stack.enter_context(ema.swapped())
        stack.enter_context(torch.no_grad())
        try:
            for net in method.networks.values():
                net.eval()
            yield
        finally:
            for module, training in modes:
                module.training = training


class ValidationAbandoned(Exception):
    """``should_stop()`` answered True before all images were restored: ``done`` of ``total`` were."""

    def __init__(self, done: int, total: int):
        super().__init__(f"abandoned after {done} of {total} images: stop requested")
        self.done, self.total = done, total


def _collate(items: list[dict]) -> dict:
    """Batch items of one size; different sizes are an error naming two of the files."""
    sizes = {tuple(item["lq"].shape[-2:]) for item in items}
    if len(sizes) > 1:
        a, b = items[0], next(i for i in items if tuple(i["lq"].shape[-2:]) != tuple(items[0]["lq"].shape[-2:]))
        raise DataError(f"cannot batch images of different sizes: '{a['lq_path']}' is "
                         f"{a['lq'].shape[-1]}x{a['lq'].shape[-2]}, '{b['lq_path']}' is "
                         f"{b['lq'].shape[-1]}x{b['lq'].shape[-2]}; set the test set's batch_size to 1")
    return default_collate(items)


def iterate(method, dataset, metrics: MetricSuite | None, device, max_images=None, tile: TileOptions | None = None,
            seed: int = 0, batch_size: int = 1, num_workers: int = 0, sources: dict | None = None, restore=None,
            should_stop=None):
    """Yield (item, restored, scores, input_scores) per image of ``dataset``, restored in batches of
    ``batch_size``; ``item`` holds the image's own entries (``name``, paths, ...).  A NaN/Inf output is a
    ``DataError`` naming the image and the network (``sources``: network -> its weights file).
    ``restore``: called instead of ``osir.inference.restore_image``, with its arguments (a benchmark's timed
    and counted restoration).  ``should_stop``: called before every batch; True raises
    ``ValidationAbandoned`` with the number of images restored so far (training's stop request: under
    several processes that validate together it must answer the same on every one)."""
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    subset = torch.utils.data.Subset(dataset, range(count)) if count < len(dataset) else dataset
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate)
    tile = tile or TileOptions()
    first = 0
    for batch in loader:
        if should_stop is not None and should_stop():
            raise ValidationAbandoned(first, count)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        generator = torch.Generator(device=device).manual_seed(seed + first)
        method.output_notes = {}
        restored = (restore or restore_image)(method, batch, tile.size, tile.overlap, generator).float()
        check_finite_output(method, restored, list(batch.get("lq_path") or batch["name"]),
                            {**getattr(method, "pretrained", {}), **(sources or {})})
        restored = restored.clamp(0, 1)
        batch = {**batch, **method.output_notes}     # per-image notes of the method, e.g. its prompts
        gt = batch.get("gt")
        names = batch.get("lq_path")
        scores = metrics.score(restored, gt, names) if metrics else {}
        inputs = metrics.score(batch["lq"], gt, names) if metrics and gt is not None and batch["lq"].shape == gt.shape \
            else {}
        for i in range(restored.shape[0]):
            item = {k: (v[i] if isinstance(v, (list, tuple)) or torch.is_tensor(v) else v) for k, v in batch.items()}
            yield item, restored[i:i + 1], {k: v[i] for k, v in scores.items()}, {k: v[i] for k, v in inputs.items()}
        first += restored.shape[0]


def validate(method, dataset, metrics: MetricSuite, device, save_dir: Path | None, suffix: str = "",
             max_images=None, tile: TileOptions | None = None, seed: int = 0, batch_size: int = 1,
             should_stop=None) -> dict:
    """Mean metrics of the restored images (and of the inputs, when LQ and GT align), or the
    method's own ``evaluate`` results; call inside ``evaluation_mode``.  ``should_stop``: see ``iterate``
    (raises ``ValidationAbandoned``; a method's own ``evaluate`` runs to its end)."""
    custom = method.evaluate(dataset, batch_size)
    if custom is not None:
        return {k: {"value": float(v)} for k, v in custom.items()}
    sums, input_sums, n = {}, {}, 0
    for item, restored, scores, inputs in iterate(method, dataset, metrics, device, max_images, tile, seed,
                                                  batch_size, should_stop=should_stop):
        n += 1
        for k, v in scores.items():
            sums[k] = sums.get(k, 0.0) + v
        for k, v in inputs.items():
            input_sums[k] = input_sums.get(k, 0.0) + v
        if save_dir is not None:
            name = item["name"]
            write_image(Path(save_dir) / name / f"{Path(name).name}{suffix}.png", restored[0])
    out = {}
    for k, v in sums.items():
        out[k] = {"restored": v / max(n, 1)}
        if k in input_sums:
            out[k]["input"] = input_sums[k] / max(n, 1)
    return out


def describe(summary: dict) -> str:
    """'psnr 24.1 (input 21.2), acc 0.93' for a validation summary."""
    parts = []
    for k, v in summary.items():
        value = v.get("restored", v.get("value"))
        parts.append(f"{k} {value:.4f}" + (f" (input {v['input']:.4f})" if "input" in v else ""))
    return ", ".join(parts)
