"""osir/test.py with several options files, --seeds and the test set's hash; python -m osir.compare
on result folders written by real test.py runs (two tiny IR-SDE networks on a tiny synthetic set)."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from osir import compare as compare_cli
from osir import test as test_script
from tests.conftest import write_images, write_yaml

ROOT = Path(__file__).resolve().parents[1]


def options(name: str, gt: Path, results: Path, nf: int, weights: Path | None = None, sets=("val", "noisy50")) -> dict:
    sigma = {"val": 25, "noisy50": 50, "held_out": 25}
    return {
        "name": name, "seed": 3,
        "method": {"type": "IRSDE", "max_sigma": 25, "T": 20, "sample_steps": 3,       # posterior, eta 1: stochastic
                   "network": {"type": "ConditionalUNet", "nf": nf, "depth": 2, "attn_levels": [2]}},
        "datasets": {s: {"type": "SyntheticPairDataset", "dataroot_gt": str(gt), "batch_size": 3,
                         "degradation": {"type": "GaussianNoise", "sigma": sigma[s]}} for s in sets},
        "metrics": {"psnr": {"type": "psnr"}, "gmsd": {"type": "pyiqa", "metric": "gmsd"}},   # higher / lower better
        "path": {"results_root": str(results), "pretrained": {"g": str(weights)} if weights else {}},
    }


def random_weights(opt: dict, path: Path, seed: int) -> Path:
    from osir.core.checkpoint import save_network
    from osir.engine.trainer import build_method
    from osir.core.options import Options, validate
    torch.manual_seed(seed)
    save_network(build_method(validate({**opt, "path": {}}, Options)).networks["g"], path)
    return path


def run_test_py(*args) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert test_script.main([str(a) for a in args]) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """results/{small,wide}/{val,noisy50} from one test.py call with two options files and --seeds 2;
    and three roots that hold 'small' next to a run that must not be compared with it (other metric
    setting, changed test set) or that is the same test set under another name."""
    tmp = tmp_path_factory.mktemp("compare")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # tiny convolutions: one thread is several times faster on shared cores
    try:
        yield make_runs(tmp)
    finally:
        torch.set_num_threads(threads)


def make_runs(tmp: Path) -> SimpleNamespace:
    gt = write_images(tmp / "gt", 3, (16, 16))
    results = tmp / "results"
    files = {}
    for name, nf, seed in (("small", 4, 0), ("wide", 8, 1)):
        weights = random_weights(options(name, gt, results, nf), tmp / f"{name}.safetensors", seed)
        files[name] = write_yaml(tmp / f"{name}.yml", options(name, gt, results, nf, weights))
    stdout = run_test_py("-opt", files["small"], files["wide"], "--seeds", "2", "--set", "metrics.psnr.test_y_channel=true")
    wide = options("wide", gt, results, 8, tmp / "wide.safetensors", sets=("val",))

    def root_with_small(folder: str) -> Path:
        shutil.copytree(results / "small", tmp / folder / "small")
        return tmp / folder

    settings = root_with_small("other_settings")
    run_test_py("-opt", write_yaml(tmp / "crop.yml", {**wide, "name": "cropped"}), "--set", f"path.results_root={settings}",
            "metrics.psnr.test_y_channel=true", "metrics.psnr.crop_border=2")
    changed = root_with_small("changed_set")
    gt2 = write_images(tmp / "gt2", 3, (16, 16), seed=9)
    run_test_py("-opt", write_yaml(tmp / "changed.yml", {**options("wide", gt2, changed, 8, tmp / "wide.safetensors",
                                                               sets=("val",))}),
            "--set", "metrics.psnr.test_y_channel=true")
    renamed = root_with_small("renamed_set")
    run_test_py("-opt", write_yaml(tmp / "renamed.yml", options("wide", gt, renamed, 8, tmp / "wide.safetensors",
                                                            sets=("held_out",))),
            "--set", "metrics.psnr.test_y_channel=true")
    return SimpleNamespace(tmp=tmp, gt=gt, results=results, stdout=stdout, files=files, settings=settings,
                           changed=changed, renamed=renamed)


def saved(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def uint8_sha(t: torch.Tensor) -> str:
    return hashlib.sha256((np.clip(t.numpy(), 0, 1) * 255.0).round().astype(np.uint8).tobytes()).hexdigest()


# ----------------------------------------------------------------------------- test.py
def test_several_options_files_each_run_with_one_table_and_a_combined_one(runs):
    out = runs.stdout
    assert f"== {runs.files['small']} (small)" in out and f"== {runs.files['wide']} (wide)" in out
    combined = out.split("== all runs (2 options files)")[1].splitlines()
    assert combined[1].split()[:2] == ["run/set", "images"]
    assert sorted(line.split()[0] for line in combined[3:] if line.strip()) == [
        "small/noisy50", "small/val", "wide/noisy50", "wide/val"]
    for name in ("small", "wide"):
        for s in ("val", "noisy50"):
            result = saved(runs.results / name / s)
            assert result["metrics"]["psnr"]["test_y_channel"] is True          # --set applies to every file
            assert result["count"] == 3


def test_seeds_record_mean_and_std_of_the_per_seed_means(runs):
    from osir.engine.trainer import build_dataset
    from osir.metrics.suite import MetricSuite
    from osir.core.options import load_options
    result = saved(runs.results / "small" / "val")
    assert result["seeds"] == [3, 4] and [s["seed"] for s in result["per_seed"]] == [3, 4]
    for metric in ("psnr", "gmsd"):
        per_seed = [np.mean([row[metric] for row in s["images"]]) for s in result["per_seed"]]
        assert [s["mean"][metric] for s in result["per_seed"]] == pytest.approx(per_seed, abs=1e-12)
        assert result["mean"][metric] == pytest.approx(np.mean(per_seed), abs=1e-12)
        assert result["std"][metric] == pytest.approx(np.std(per_seed), abs=1e-12)
    assert result["std"]["psnr"] > 0                                            # the sampler is stochastic
    assert "±" in runs.stdout
    # images written once, the first seed's; the dataset's identity, recomputed here
    folder = runs.results / "small" / "val"
    assert sorted(p.name for p in folder.glob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    opt = load_options(runs.files["small"])
    dataset = build_dataset(opt["datasets"]["val"], "datasets.val")
    items = [dataset[i] for i in range(len(dataset))]
    lines = sorted(f"{it['name']}\t{uint8_sha(it['lq'])}\t{uint8_sha(it['gt'])}\n" for it in items)
    assert result["dataset_hash"] == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert result["dataset_items"] == 3
    assert saved(runs.results / "wide" / "val")["dataset_hash"] == result["dataset_hash"]
    assert saved(runs.results / "small" / "noisy50")["dataset_hash"] != result["dataset_hash"]   # other LQ
    from osir.data.io import img2tensor, read_image
    written = img2tensor(read_image(folder / "img1.png"))[None]
    psnr = MetricSuite({"psnr": {"type": "psnr", "test_y_channel": True}}).score(written, items[1]["gt"][None])["psnr"]
    first_seed = {row["image"]: row for row in result["per_seed"][0]["images"]}
    assert psnr[0] == pytest.approx(first_seed["img1.png"]["psnr"], abs=1e-6)
    with open(folder / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows[:6]] == ["3"] * 3 + ["4"] * 3 and [r["image"] for r in rows[6:]] == ["mean", "std"]


def test_two_options_files_with_one_name_are_refused(runs, capsys):
    assert test_script.main(["-opt", str(runs.files["small"]), str(runs.files["small"])]) == 2
    assert "name 'small' is also the name of" in capsys.readouterr().err


# ----------------------------------------------------------------------------- osir.compare
class Page(HTMLParser):
    """Tables (class, data-set, rows of cells), headings and images of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.headings, self.images, self._cell, self._heading = [], [], [], None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"class": a.get("class"), "set": a.get("data-set"), "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = {"tag": tag, "class": (a.get("class") or "").split(), "metric": a.get("data-metric"), "text": ""}
            self.tables[-1]["rows"][-1].append(self._cell)
        elif tag == "img":
            self.images.append(a)
        elif tag == "h2":
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "h2":
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._heading is not None:
            self._heading += data


def test_compare_ranks_every_column_and_writes_md_csv_html(runs):
    out = runs.tmp / "report"
    assert compare_cli.main([str(runs.results), "--output", str(out)]) == 0
    page = Page((out / "index.html").read_text(encoding="utf-8"))
    assert {"val", "noisy50", "Provenance"} <= set(page.headings)
    tables = {t["set"]: t for t in page.tables if t["class"] == "results"}
    assert set(tables) == {"val", "noisy50"}
    md = (out / "table.md").read_text(encoding="utf-8")
    with open(out / "table.csv", encoding="utf-8") as f:
        csv_rows = {(r["set"], r["method"]): r for r in csv.DictReader(f)}
    for set_name, table in tables.items():
        header, *body = table["rows"]
        results = {name: saved(runs.results / name / set_name) for name in ("small", "wide")}
        assert sorted(row[0]["text"] for row in body) == ["small", "wide"]
        for metric in ("psnr", "gmsd"):
            lower = results["small"]["metrics"][metric]["lower_better"]
            assert lower is (metric == "gmsd")
            th = next(c for c in header if c["metric"] == metric)
            assert th["text"] == f"{metric} {'↓' if lower else '↑'}"
            means = {name: r["mean"][metric] for name, r in results.items()}
            best = (min if lower else max)(means, key=means.get)
            cells = {row[0]["text"]: next(c for c in row if c["metric"] == metric) for row in body}
            assert [name for name, c in cells.items() if "best" in c["class"]] == [best]
            for name, c in cells.items():
                text = f"{means[name]:.4f} ± {results[name]['std'][metric]:.4f}"
                assert c["text"] == text
                assert (f"**{text}**" in md) is (name == best)
                assert float(csv_rows[(set_name, name)][metric]) == pytest.approx(means[name], abs=1e-12)
                assert float(csv_rows[(set_name, name)][f"{metric}_std"]) == pytest.approx(
                    results[name]["std"][metric], abs=1e-12)
            assert (metric in csv_rows[(set_name, best)]["best"].split(";"))
    # thumbnails (every method and the GT, the same centre crop) and per-image plots, referenced from the page
    sources = [img["src"] for img in page.images]
    for set_name in ("val", "noisy50"):
        thumbs = [s for s in sources if s.startswith("thumbs/") and set_name in s]
        assert sorted(Path(s).name for s in thumbs) == ["GT.png", "small.png", "wide.png"]
        from osir.data.io import read_image
        gt = read_image(out / next(s for s in thumbs if s.endswith("GT.png")))
        assert gt.shape == (16, 16, 3)              # the whole 16x16 image: smaller than 96
        assert np.array_equal(gt, read_image(runs.gt / "img0.png"))
        assert len([s for s in sources if s.startswith("plots/") and set_name in s]) == 2
    assert all((out / s).is_file() for s in sources)
    provenance = next(t for t in page.tables if t["class"] == "provenance")
    cells = [[c["text"] for c in row] for row in provenance["rows"][1:]]
    weights_sha = saved(runs.results / "wide" / "val")["checkpoints"]["g"]["sha256"]
    assert ["wide", "val", "IRSDE"] == cells[[r[:2] for r in cells].index(["wide", "val"])][:3]
    assert any(f"g: {weights_sha[:12]}" in row and "3, 4" in row for row in cells)


def test_compare_refuses_results_scored_with_other_settings(runs):
    done = subprocess.run([sys.executable, "-m", "osir.compare", str(runs.settings), "--output",
                           str(runs.tmp / "r1")], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("osir.compare: error: metric 'psnr' setting 'crop_border' differs on test set 'val'")
    assert str(runs.settings / "small" / "val") in done.stderr and str(runs.settings / "cropped" / "val") in done.stderr
    assert "Traceback" not in done.stderr
    assert not (runs.tmp / "r1" / "index.html").exists()


def test_compare_refuses_a_changed_test_set(runs, capsys):
    assert compare_cli.main([str(runs.changed), "--output", str(runs.tmp / "r2")]) == 2
    err = capsys.readouterr().err
    assert "test set 'val' changed: dataset_hash differs between" in err
    assert str(runs.changed / "small" / "val") in err and str(runs.changed / "wide" / "val") in err
    # either one alone is fine
    assert compare_cli.main([str(runs.changed), "--output", str(runs.tmp / "r2"), "--methods", "wide"]) == 0


def test_one_test_set_under_two_names_is_merged(runs, capsys):
    groups = compare_cli.compare(runs.renamed, runs.tmp / "r3", sets=["val", "held_out"])
    assert [g.names for g in groups] == [["val", "held_out"]]
    assert sorted(r.label for r in groups[0].runs) == ["small", "wide"]
    assert compare_cli.main([str(runs.renamed), "--output", str(runs.tmp / "r3")]) == 0
    assert "have the same dataset_hash" in capsys.readouterr().err
    page = Page((runs.tmp / "r3" / "index.html").read_text(encoding="utf-8"))
    tables = sorted(t["set"] for t in page.tables if t["class"] == "results")
    assert tables == ["noisy50", "val = held_out"]
    assert compare_cli.main([str(runs.renamed), "--output", str(runs.tmp / "r3"), "--sets", "nope"]) == 2
    assert "--sets: no results for 'nope'; found: held_out, noisy50, val" in capsys.readouterr().err
