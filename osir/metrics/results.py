"""Result tables: per-image and mean metrics to ``metrics.csv`` / ``metrics.json`` with the
provenance that makes them comparable (metric settings, osir and pyiqa versions, checkpoint
hashes, seed), and a printed summary table."""
from __future__ import annotations

import csv
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import osir


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def provenance(metric_settings: dict, **extra) -> dict:
    return {"osir": osir.__version__, "pyiqa": package_version("pyiqa"), "torch": package_version("torch"),
            "python": platform.python_version(), "metrics": metric_settings, **extra}


def means(rows: list[dict]) -> dict[str, float]:
    keys = [k for k, v in (rows[0] if rows else {}).items() if k != "image" and isinstance(v, (int, float))]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys if all(k in r for r in rows)}


def write_results(out_dir: str | Path, rows: list[dict], info: dict) -> dict:
    """Write ``metrics.csv`` (one row per image, then ``mean``) and ``metrics.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mean = means(rows)
    if rows:
        with open(out_dir / "metrics.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            writer.writerow({"image": "mean", **mean})
    summary = {"mean": mean, "count": len(rows), "images": rows, **info}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def format_table(summaries: dict[str, dict]) -> str:
    """One line per test set: name, image count and mean of each metric."""
    metrics = sorted({k for s in summaries.values() for k in s["mean"]})
    header = ["set", "images"] + metrics
    lines = [header] + [[name, str(s["count"])] + [f"{s['mean'][m]:.4f}" if m in s["mean"] else "-" for m in metrics]
                        for name, s in summaries.items()]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    fmt = lambda row: "  ".join(cell.ljust(w) for cell, w in zip(row, widths))  # noqa: E731
    return "\n".join([fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in lines[1:]])
