"""Put the results of several runs side by side, one table per test set:

    python -m osir.compare results/ --output reports/realsr [--sets A B] [--methods X Y] [--crop x,y,size]

Reads ``results/<run>/<set>/metrics.json`` (as written by ``osir/test.py``) and writes to the
output folder ``table.md``, ``table.csv`` and ``index.html``: per test set one row per run, one
column per metric with its direction (↑ higher is better, ↓ lower is better, from the recorded
``lower_better``), the best value per column marked (bold / CSS class ``best``), mean ± std when
the run recorded several seeds; the same crop of the first image common to every run next to the
GT (``thumbs/``), per-image plots of every metric (``plots/``) and a provenance footer (versions,
checkpoint hashes, seeds).

It refuses (exit code 2) to put side by side results scored with different metric settings (crop
border, Y channel, LPIPS net, ...; weight files are compared by file name) and results of a test
set whose ``dataset_hash`` changed under the same name; two set names with one ``dataset_hash``
are one test set and are merged into one table.  A recorded GT folder holding two files of one name
(``a.png``, ``a.jpg``) is refused naming both, before anything is written.  Every file is written
atomically (``osir.core.checkpoint``): a write error is one line naming it.
"""
from __future__ import annotations

import argparse
import csv
import io
import html
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osir.core import cli
from osir.data.io import DataError
from osir.core.registry import OptionsError
from osir.core.checkpoint import atomic_write, write_text

THUMB_SIZE = 96
_MISSING = object()


class CompareError(DataError):
    """Results that must not be put side by side; the message names the setting and both runs."""


@dataclass
class Run:
    method: str              # the run's name: results/<method>/<set>
    set: str
    path: Path               # its metrics.json
    data: dict
    label: str = ""          # its row in the table

    @property
    def where(self) -> str:
        return str(self.path.parent)

    @property
    def std(self) -> dict:
        return self.data.get("std") or {}

    @property
    def seeds(self) -> list:
        seeds = self.data.get("seeds")
        return list(seeds) if seeds else ([self.data["seed"]] if "seed" in self.data else [])


@dataclass
class Group:
    """One test set (one or more set names with one dataset_hash) and the runs on it."""
    names: list[str]
    dataset_hash: str | None
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    lower_better: dict[str, bool | None] = field(default_factory=dict)
    best: dict[str, set[str]] = field(default_factory=dict)     # metric -> labels of the best rows
    thumbs: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to the output)
    plots: list[tuple[str, str]] = field(default_factory=list)   # (metric, path relative to the output)

    @property
    def name(self) -> str:
        return " = ".join(self.names)

    @property
    def items(self):
        counts = {r.data.get("dataset_items", r.data.get("count")) for r in self.runs} - {None}
        return counts.pop() if len(counts) == 1 else None


# ----------------------------------------------------------------------------- reading and checks
def load_runs(root: str | Path) -> list[Run]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"results folder not found: '{root}'")
    files = sorted(root.glob("*/*/metrics.json"))
    if not files:
        raise DataError(f"no <run>/<set>/metrics.json under '{root}' (write them with osir/test.py)")
    runs = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"'{path}' is not valid JSON: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("mean"), dict):
            raise DataError(f"'{path}' has no 'mean' section: not an osir metrics.json")
        runs.append(Run(path.parent.parent.name, path.parent.name, path, data))
    return runs


def select(runs: list[Run], sets=None, methods=None) -> list[Run]:
    for wanted, attr, what in ((sets, "set", "--sets"), (methods, "method", "--methods")):
        if wanted:
            known = sorted({getattr(r, attr) for r in runs})
            unknown = [w for w in wanted if w not in known]
            if unknown:
                raise OptionsError(f"{what}: no results for '{unknown[0]}'; found: {', '.join(known)}")
            runs = [r for r in runs if getattr(r, attr) in wanted]
    return runs


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "-"


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by test set: the same set name must have one dataset_hash; set names that share
    one are one test set."""
    by_name: dict[str, list[Run]] = {}
    for r in runs:
        by_name.setdefault(r.set, []).append(r)
    hash_of = {}
    for name, members in by_name.items():
        hashed = [r for r in members if r.data.get("dataset_hash")]
        for r in hashed[1:]:
            a, b = hashed[0], r
            if r.data["dataset_hash"] != a.data["dataset_hash"]:
                raise CompareError(
                    f"test set '{name}' changed: dataset_hash differs between {a.where} ({_short(a.data['dataset_hash'])},"
                    f" {a.data.get('dataset_items')} items) and {b.where} ({_short(b.data['dataset_hash'])}, "
                    f"{b.data.get('dataset_items')} items); rerun the older one on the current test set or give the "
                    "changed set another name")
        hash_of[name] = hashed[0].data["dataset_hash"] if hashed else None
    groups: dict[str, Group] = {}
    for name, members in by_name.items():
        key = hash_of[name] or f"name:{name}"
        group = groups.setdefault(key, Group([], hash_of[name]))
        group.names.append(name)
        group.runs.extend(members)
    for group in groups.values():
        if len(group.names) > 1:
            group.notes.append(f"test sets {', '.join(repr(n) for n in group.names)} have the same dataset_hash "
                               f"{_short(group.dataset_hash)} ({group.items} items): one test set, compared together")
        unchecked = [r for r in group.runs if not r.data.get("dataset_hash")]
        if unchecked:
            group.notes.append(f"no dataset_hash recorded by {', '.join(r.where for r in unchecked)}: not checked to "
                               "be the same test set")
        seen: dict[str, int] = {}
        for r in group.runs:
            seen[r.method] = seen.get(r.method, 0) + 1
        for r in group.runs:
            r.label = r.method if seen[r.method] == 1 else f"{r.method} ({r.set})"
    return list(groups.values())


def _show(value) -> str:
    return "(not set)" if value is _MISSING else json.dumps(value)


def _comparable(key: str, value):
    """A weights or parameter file is compared by its file name (paths differ between machines)."""
    if isinstance(value, str) and (key.endswith("path") or key == "parameters"):
        return Path(value).name
    return value


def check_settings(group: Group) -> None:
    """Every metric shown in the group's table was computed with the same settings by every run."""
    first: dict[str, Run] = {}
    for r in group.runs:
        for metric, settings in (r.data.get("metrics") or {}).items():
            if metric not in r.data["mean"]:
                continue
            if metric not in first:
                first[metric] = r
                continue
            a = first[metric]
            reference = a.data["metrics"][metric]
            for key in list(reference) + [k for k in settings if k not in reference]:
                x, y = reference.get(key, _MISSING), settings.get(key, _MISSING)
                if _comparable(key, x) != _comparable(key, y):
                    raise CompareError(
                        f"metric '{metric}' setting '{key}' differs on test set '{group.name}': {a.where} has "
                        f"{_show(x)}, {r.where} has {_show(y)}; results scored differently are not put side by "
                        "side (rescore with the same metrics: section, or leave one out with --methods)")


def rank(group: Group) -> None:
    """The group's metric columns, their direction and the best row(s) per column (max for ↑, min
    for ↓; ties all marked; only with two values or more)."""
    for r in group.runs:
        for metric in list(r.data.get("metrics") or {}) + list(r.data["mean"]):
            if metric in r.data["mean"] and metric not in group.metrics:
                group.metrics.append(metric)
    for metric in group.metrics:
        recorded = [r.data["metrics"][metric].get("lower_better") for r in group.runs
                    if metric in (r.data.get("metrics") or {})]
        group.lower_better[metric] = recorded[0] if recorded else None
        values = {r.label: r.data["mean"][metric] for r in group.runs
                  if isinstance(r.data["mean"].get(metric), (int, float))}
        if group.lower_better[metric] is None or len(values) < 2:
            group.best[metric] = set()
            continue
        best = (min if group.lower_better[metric] else max)(values.values())
        group.best[metric] = {label for label, v in values.items() if v == best}


def arrow(lower_better: bool | None) -> str:
    return "" if lower_better is None else (" ↓" if lower_better else " ↑")


def cell(r: Run, metric: str) -> str:
    value = r.data["mean"].get(metric)
    if not isinstance(value, (int, float)):
        return "-"
    std = r.std.get(metric)
    return f"{value:.4f}" + ("" if std is None else f" ± {std:.4f}")


# ----------------------------------------------------------------------------- images
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "_"


def _restored_dir(r: Run) -> Path:
    restored = r.data.get("restored")          # written by python -m osir.metrics
    return Path(restored) if restored else r.path.parent


def _gt_folder(data: dict) -> Path | None:
    """The GT folder on disk a run records: its test set's ``dataroot_gt`` (disk backend) or the ``gt`` folder
    of ``python -m osir.metrics``."""
    spec = data.get("dataset") or {}
    if spec.get("dataroot_gt"):
        return Path(spec["dataroot_gt"]) if spec.get("io_backend", "disk") == "disk" else None
    return Path(data["gt"]) if data.get("gt") and data["gt"] != "None" else None


def check_gt_names(data: dict) -> None:
    """Two files of one name in a run's GT folder (``a.png`` and ``a.jpg``) are a ``DataError`` naming both
    (``images_by_name``'s rule, as osir.metrics and the datasets apply it), not one of them picked; a missing
    or empty folder is left to ``find_gt`` (a note)."""
    from osir.data.io import images_by_name, list_images
    folder = _gt_folder(data)
    if folder is None:
        return
    try:
        list_images(folder)
    except DataError:
        return
    images_by_name(folder)


def find_gt(data: dict, image: str):
    """(HxWx3 float RGB GT of ``image``, None) from the recorded dataset spec (``dataroot_gt``) or
    the ``gt`` folder of ``python -m osir.metrics``; (None, why not) when there is none.  Two GT files of
    the image's name: a ``DataError`` naming both (``check_gt_names``)."""
    name = image[:-len(Path(image).suffix)] if Path(image).suffix else image
    spec = data.get("dataset") or {}
    check_gt_names(data)
    try:
        if spec.get("dataroot_gt"):
            if spec.get("gt_size"):
                return None, "the test set crops its GT (gt_size)"
            from osir.data.datasets import _ImageFolderSource
            source = _ImageFolderSource(spec["dataroot_gt"], spec.get("io_backend", "disk"), "gt")
            template = spec.get("filename_tmpl", "{}")
            gt_name = name if name in source.items else next(
                (g for g in source.items if template.format(g) == name), None)
            if gt_name is None:
                return None, f"no GT for '{image}' in '{spec['dataroot_gt']}'"
            return source.read(gt_name), None
        if data.get("gt") and data["gt"] != "None":
            from osir.data.io import images_by_name, read_image
            folder = Path(data["gt"])
            match = images_by_name(folder).get(name)          # keyed as osir.metrics pairs them
            return (read_image(match), None) if match else (None, f"no GT for '{image}' in '{folder}'")
    except (DataError, OSError) as err:
        return None, f"GT not readable ({cli.one_line(err)})"
    return None, "the results record no GT folder (dataset.dataroot_gt)"


def _crop_box(crop, h: int, w: int) -> tuple[int, int, int]:
    if crop is not None:
        return crop
    size = min(THUMB_SIZE, h, w)
    return (w - size) // 2, (h - size) // 2, size


def _write_png(path: Path, img: np.ndarray) -> None:
    """8-bit PNG of float RGB, atomically (``write_rgb``: an error is one line naming ``path``, no file left)."""
    from osir.data.io import write_rgb
    write_rgb(path, img)


def thumbnails(group: Group, out: Path, index: int, crop=None) -> None:
    """The same crop of the first image common to every run, and of its GT."""
    from osir.data.io import read_image
    names = [{row["image"] for row in r.data.get("images") or []} for r in group.runs]
    first = next((row["image"] for row in group.runs[0].data.get("images") or []
                  if all(row["image"] in n for n in names)), None)
    if first is None:
        group.notes.append("no image common to every run: no thumbnails")
        return
    folder = Path("thumbs") / f"{index}_{_safe(group.names[0])}"
    box = None
    for r in group.runs:
        img = read_image(_restored_dir(r) / first)
        h, w = img.shape[:2]
        box = box or _crop_box(crop, h, w)
        x, y, size = box
        if x + size > w or y + size > h:
            if crop is not None:
                raise OptionsError(f"--crop {x},{y},{size} does not fit '{_restored_dir(r) / first}' ({w}x{h})")
            group.notes.append(f"{r.label}: '{first}' is {w}x{h}, smaller than the crop: no thumbnail")
            continue
        rel = folder / f"{_safe(r.label)}.png"
        _write_png(out / rel, img[y:y + size, x:x + size])
        group.thumbs.append((r.label, rel.as_posix()))
    why = "no run records a GT source"
    for r in group.runs:
        gt, why = find_gt(r.data, first)
        if gt is not None:
            x, y, size = box
            if x + size > gt.shape[1] or y + size > gt.shape[0]:
                why = f"the GT of '{first}' is {gt.shape[1]}x{gt.shape[0]}, smaller than the crop"
                continue
            rel = folder / "GT.png"
            _write_png(out / rel, gt[y:y + size, x:x + size])
            group.thumbs.append(("GT", rel.as_posix()))
            break
    else:
        group.notes.append(f"thumbnails without GT: {why}")
    if box:
        group.notes.append(f"thumbnails: '{first}', crop x={box[0]} y={box[1]} size={box[2]}")


def plots(group: Group, out: Path, index: int) -> None:
    """One PNG per metric: the per-image values of every run (± std over seeds where recorded)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    order = []
    for r in group.runs:
        for row in r.data.get("images") or []:
            if row["image"] not in order:
                order.append(row["image"])
    if not order:
        return
    position = {name: i for i, name in enumerate(order)}
    for metric in group.metrics:
        fig, ax = plt.subplots(figsize=(min(max(6.0, 0.3 * len(order) + 2), 20), 3.6))
        drawn = False
        for r in group.runs:
            per_seed = r.data.get("per_seed") or [{"images": r.data.get("images") or []}]
            values: dict[str, list[float]] = {}
            for seed in per_seed:
                for row in seed["images"]:
                    if isinstance(row.get(metric), (int, float)):
                        values.setdefault(row["image"], []).append(row[metric])
            if not values:
                continue
            xs = [position[name] for name in values]
            ys = [float(np.mean(v)) for v in values.values()]
            err = [float(np.std(v)) for v in values.values()] if len(per_seed) > 1 else None
            ax.errorbar(xs, ys, yerr=err, marker="o", linestyle="-", capsize=3, label=r.label)
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_title(f"{group.name}: {metric}{arrow(group.lower_better.get(metric))}")
        ax.set_ylabel(metric)
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([str(Path(n).with_suffix("")) for n in order] if len(order) <= 40 else [""] * len(order),
                           rotation=60, ha="right", fontsize=7)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        rel = Path("plots") / f"{index}_{_safe(group.names[0])}_{_safe(metric)}.png"
        png = io.BytesIO()
        fig.savefig(png, dpi=100, format="png")
        plt.close(fig)
        atomic_write(out / rel, lambda tmp: Path(tmp).write_bytes(png.getvalue()))    # an error names the plot
        group.plots.append((metric, rel.as_posix()))


# ----------------------------------------------------------------------------- writing
def provenance_rows(groups: list[Group]) -> list[dict[str, str]]:
    rows = []
    for g in groups:
        for r in g.runs:
            d = r.data
            checkpoints = ", ".join(f"{n}: {_short(c.get('sha256'))}" for n, c in (d.get("checkpoints") or {}).items())
            rows.append({"run": r.method, "set": r.set, "method": str((d.get("method") or {}).get("type", "-")),
                         "osir": str(d.get("osir", "-")), "pyiqa": str(d.get("pyiqa", "-")),
                         "torch": str(d.get("torch", "-")), "seeds": ", ".join(map(str, r.seeds)) or "-",
                         "checkpoints": checkpoints or "-", "dataset_hash": _short(d.get("dataset_hash"))})
    return rows


def _md(text) -> str:
    return str(text).replace("|", "\\|")


def write_markdown(groups: list[Group], root: Path, path: Path) -> None:
    lines = [f"# Results in `{root}`", ""]
    for g in groups:
        count = g.items if g.items is not None else "?"
        lines += [f"## {_md(g.name)}", "", f"{count} images, dataset_hash `{_short(g.dataset_hash)}`", ""]
        lines += [f"> {_md(n)}" for n in g.notes] + ([""] if g.notes else [])
        lines.append("| method | images | seeds | " + " | ".join(f"{_md(m)}{arrow(g.lower_better[m])}"
                                                            for m in g.metrics) + " |")
        lines.append("|---|---:|---|" + "---:|" * len(g.metrics))
        for r in g.runs:
            cells = [f"**{cell(r, m)}**" if r.label in g.best[m] else cell(r, m) for m in g.metrics]
            lines.append(f"| {_md(r.label)} | {r.data.get('count', '-')} | {', '.join(map(str, r.seeds))} | "
                         + " | ".join(cells) + " |")
        lines.append("")
        if g.thumbs:
            lines += [" ".join(f"![{_md(c)}]({p})" for c, p in g.thumbs), ""]
        lines += [f"![{_md(m)} per image]({p})" for m, p in g.plots] + ([""] if g.plots else [])
    prov = provenance_rows(groups)
    if prov:
        lines += ["## Provenance", "", "| " + " | ".join(prov[0]) + " |", "|" + "---|" * len(prov[0])]
        lines += ["| " + " | ".join(_md(v) for v in row.values()) + " |" for row in prov]
        lines.append("")
    write_text(path, "\n".join(lines))


def write_csv(groups: list[Group], path: Path) -> None:
    metrics = []
    for g in groups:
        metrics += [m for m in g.metrics if m not in metrics]
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    writer.writerow(["set", "method", "images", "seeds", "dataset_hash"]
                    + [c for m in metrics for c in (m, f"{m}_std")] + ["best"])
    for g in groups:
        for r in g.runs:
            values = []
            for m in metrics:
                mean = r.data["mean"].get(m)
                values += [mean if isinstance(mean, (int, float)) else "", r.std.get(m, "")]
            writer.writerow([g.name, r.label, r.data.get("count", ""), " ".join(map(str, r.seeds)),
                             r.data.get("dataset_hash", "")] + values
                            + [";".join(m for m in g.metrics if r.label in g.best[m])])

    write_text(path, f.getvalue())

CSS = """body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1em}
th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:right}
th:first-child,td:first-child{text-align:left}
td.best{font-weight:bold;background:#dff3df}
.note{color:#555;font-style:italic;margin:0.2em 0}
figure{display:inline-block;margin:0 0.6em 0.6em 0;text-align:center}
figure img.thumb{width:192px;height:192px;image-rendering:pixelated;border:1px solid #999}
figcaption{font-size:0.85em}
img.plot{max-width:100%;display:block;margin:0.5em 0}
footer{margin-top:2em;font-size:0.85em}"""


def write_html(groups: list[Group], root: Path, path: Path) -> None:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>osir comparison: {e(str(root))}</title>", f"<style>{CSS}</style></head><body>",
             f"<h1>Results in <code>{e(str(root))}</code></h1>"]
    for i, g in enumerate(groups):
        parts.append(f'<section class="test-set" id="set-{i}"><h2>{e(g.name)}</h2>')
        parts.append(f'<p class="note">{e(str(g.items if g.items is not None else "?"))} images, dataset_hash '
                     f"<code>{e(_short(g.dataset_hash))}</code></p>")
        parts += [f'<p class="note">{e(n)}</p>' for n in g.notes]
        head = "".join(f'<th data-metric="{e(m)}">{e(m + arrow(g.lower_better[m]))}</th>' for m in g.metrics)
        parts.append(f'<table class="results" data-set="{e(g.name)}"><thead><tr><th>method</th><th>images</th>'
                     f"<th>seeds</th>{head}</tr></thead><tbody>")
        for r in g.runs:
            best = {m: ' class="best"' if r.label in g.best[m] else "" for m in g.metrics}
            cells = "".join(f'<td data-metric="{e(m)}"{best[m]}>{e(cell(r, m))}</td>' for m in g.metrics)
            parts.append(f'<tr><td class="method">{e(r.label)}</td><td>{e(str(r.data.get("count", "-")))}</td>'
                         f"<td>{e(', '.join(map(str, r.seeds)))}</td>{cells}</tr>")
        parts.append("</tbody></table>")
        if g.thumbs:
            parts.append('<div class="thumbs">' + "".join(
                f'<figure><img class="thumb" src="{e(p)}" alt="{e(c)}"><figcaption>{e(c)}</figcaption></figure>'
                for c, p in g.thumbs) + "</div>")
        parts += [f'<img class="plot" src="{e(p)}" alt="{e(m)} per image">' for m, p in g.plots]
        parts.append("</section>")
    prov = provenance_rows(groups)
    if prov:
        parts.append('<footer><h2>Provenance</h2><table class="provenance"><thead><tr>'
                     + "".join(f"<th>{e(k)}</th>" for k in prov[0]) + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in row.values()) + "</tr>" for row in prov]
        parts.append("</tbody></table></footer>")
    parts.append("</body></html>")
    write_text(path, "\n".join(parts) + "\n")


# ----------------------------------------------------------------------------- entry points
def parse_crop(text: str | None):
    if text is None:
        return None
    try:
        x, y, size = (int(v) for v in text.split(","))
    except ValueError:
        raise OptionsError(f"--crop expects x,y,size (three integers), got '{text}'") from None
    if x < 0 or y < 0 or size < 1:
        raise OptionsError(f"--crop {text}: x and y must be >= 0 and size >= 1")
    return x, y, size


def compare(results: str | Path, output: str | Path, sets=None, methods=None, crop=None) -> list[Group]:
    """Check, rank and write the comparison of the runs under ``results``; returns the groups."""
    results, output = Path(results), Path(output)
    runs = select(load_runs(results), sets, methods)
    groups = group_runs(runs)
    for g in groups:
        check_settings(g)
    for r in runs:              # before anything is written
        check_gt_names(r.data)
    output.mkdir(parents=True, exist_ok=True)
    for i, g in enumerate(groups):
        rank(g)
        thumbnails(g, output, i, crop)
        plots(g, output, i)
    write_markdown(groups, results, output / "table.md")
    write_csv(groups, output / "table.csv")
    write_html(groups, results, output / "index.html")
    return groups


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osir.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="folder of <run>/<set>/metrics.json (test.py's results_root)")
    parser.add_argument("--output", required=True, help="folder for table.md, table.csv, index.html, thumbs/, plots/")
    parser.add_argument("--sets", nargs="+", metavar="SET", help="only these test sets")
    parser.add_argument("--methods", nargs="+", metavar="RUN", help="only these runs (options 'name')")
    parser.add_argument("--crop", metavar="X,Y,SIZE", help="thumbnail crop (default: the centre 96x96)")
    args = parser.parse_args(argv)

    def body() -> int:
        groups = compare(args.results, args.output, args.sets, args.methods, parse_crop(args.crop))
        for g in groups:
            for note in g.notes:
                if not note.startswith("thumbnails:"):
                    print(f"osir.compare: note: {g.name}: {note}", file=sys.stderr)
        runs = sum(len(g.runs) for g in groups)
        print(f"compared {runs} results on {len(groups)} test set(s): "
              f"{Path(args.output) / 'index.html'}, table.md, table.csv")
        return 0
    return cli.run("osir.compare", body)


if __name__ == "__main__":
    sys.exit(main())
