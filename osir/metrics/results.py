"""Result tables: per-image and mean metrics to ``metrics.csv`` / ``metrics.json`` with the
provenance that makes them comparable (metric settings, osir and pyiqa versions, checkpoint
hashes, seeds, the test set's hash), and a printed summary table.

With several seeds (``osir/test.py --seeds k``) ``mean`` is the mean over seeds of each seed's
mean, ``std`` the (population, numpy's default) standard deviation of those per-seed means, and
``per_seed`` holds each seed's mean and per-image rows; ``images`` are the first seed's rows (the
images written to disk are the first seed's)."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

import osir
from osir.core.checkpoint import write_text


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def provenance(metric_settings: dict, **extra) -> dict:
    return {"osir": osir.__version__, "pyiqa": package_version("pyiqa"), "torch": package_version("torch"),
            "python": platform.python_version(), "metrics": metric_settings, **extra}


def means(rows: list[dict]) -> dict[str, float]:
    keys = [k for k, v in (rows[0] if rows else {}).items() if k not in ("image", "seed") and isinstance(v, (int, float))]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys if all(k in r for r in rows)}


def seed_statistics(per_seed: dict[int, list[dict]]) -> dict:
    """``seeds``, ``mean`` (mean over seeds of the per-seed means), ``std`` (their population std)
    and ``per_seed`` ([{seed, mean, images}]) of one test set restored with several seeds."""
    seed_means = {seed: means(rows) for seed, rows in per_seed.items()}
    keys = [k for k in next(iter(seed_means.values()), {}) if all(k in m for m in seed_means.values())]
    mean, std = {}, {}
    for k in keys:
        values = np.array([m[k] for m in seed_means.values()], dtype=np.float64)
        mean[k], std[k] = float(values.mean()), float(values.std())
    return {"seeds": list(per_seed), "mean": mean, "std": std,
            "per_seed": [{"seed": seed, "mean": seed_means[seed], "images": rows} for seed, rows in per_seed.items()]}


class DatasetHash:
    """The identity of an evaluated test set, fed item by item as the test loop sees them:
    sha256 over the lines ``"<name>\\t<sha256 LQ>\\t<sha256 GT or ''>\\n"`` sorted by name, each
    image hashed as its uint8-quantised (``round(x * 255)``, clamped) CxHxW tensor bytes.  A folder
    scored without its inputs (``python -m osir.metrics``) has ``-`` for every LQ: such results
    match each other when their GT folders match, never a test.py run (whose LQ is known)."""

    def __init__(self):
        self.entries: list[tuple[str, str, str]] = []

    @staticmethod
    def tensor_sha256(tensor) -> str:
        from osir.data.io import to_uint8
        data = to_uint8(tensor.detach().float()).cpu().contiguous()
        return hashlib.sha256(data.numpy().tobytes()).hexdigest()

    def add(self, name: str, lq, gt=None) -> None:
        self.entries.append((str(name), self.tensor_sha256(lq), "" if gt is None else self.tensor_sha256(gt)))

    def add_gt_only(self, name: str, gt) -> None:
        self.entries.append((str(name), "-", self.tensor_sha256(gt)))

    def __len__(self) -> int:
        return len(self.entries)

    def hexdigest(self) -> str:
        h = hashlib.sha256()
        for name, lq, gt in sorted(self.entries):
            h.update(f"{name}\t{lq}\t{gt}\n".encode())
        return h.hexdigest()


def write_results(out_dir: str | Path, rows: list[dict], info: dict, per_seed: dict[int, list[dict]] | None = None,
                  set_scores: dict[str, float] | None = None) -> dict:
    """Write ``metrics.csv`` (one row per image, then ``mean``) and ``metrics.json``.

    ``per_seed`` (seed -> rows, two seeds or more): ``rows`` are the first seed's; the CSV gets a
    ``seed`` column with every seed's rows, then ``mean`` and ``std`` rows.  ``set_scores`` (metrics
    of the whole set, e.g. FID) join ``mean`` and are kept under ``set_metrics`` too."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = seed_statistics(per_seed) if per_seed and len(per_seed) > 1 else None
    mean = stats["mean"] if stats else means(rows)
    if set_scores:
        mean = {**mean, **set_scores}
    if rows:
        f = io.StringIO(newline="")
        if stats:
            all_rows = [{"image": r["image"], "seed": seed, **{k: v for k, v in r.items() if k != "image"}}
                        for seed, seed_rows in per_seed.items() for r in seed_rows]
            writer = csv.DictWriter(f, fieldnames=list(all_rows[0]) + [k for k in mean if k not in all_rows[0]])
            writer.writeheader()
            writer.writerows(all_rows)
            writer.writerow({"image": "mean", **mean})
            writer.writerow({"image": "std", **stats["std"]})
        else:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) + [k for k in mean if k not in rows[0]])
            writer.writeheader()
            writer.writerows(rows)
            writer.writerow({"image": "mean", **mean})
        write_text(out_dir / "metrics.csv", f.getvalue())
    summary = {"mean": mean, "count": len(rows), "images": rows, **info}
    if stats:
        summary.update(seeds=stats["seeds"], std=stats["std"], per_seed=stats["per_seed"])
    if set_scores:
        summary["set_metrics"] = dict(set_scores)
    write_text(out_dir / "metrics.json", json.dumps(summary, indent=2))
    return summary


def format_cell(summary: dict, metric: str) -> str:
    if metric not in summary["mean"]:
        return "-"
    std = summary.get("std", {}).get(metric)
    return f"{summary['mean'][metric]:.4f}" + ("" if std is None else f" ± {std:.4f}")


def format_table(summaries: dict[str, dict], label: str = "set") -> str:
    """One line per test set: name, image count and mean (± std over seeds) of each metric."""
    metrics = sorted({k for s in summaries.values() for k in s["mean"]})
    header = [label, "images"] + metrics
    lines = [header] + [[name, str(s["count"])] + [format_cell(s, m) for m in metrics] for name, s in summaries.items()]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    fmt = lambda row: "  ".join(cell.ljust(w) for cell, w in zip(row, widths))  # noqa: E731
    return "\n".join([fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines[1:]])
