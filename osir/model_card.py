"""Model cards: a small YAML file next to every converted or exported checkpoint saying what it is.

``<stem>.card.yaml`` beside ``<stem>.<ext>`` records the method, its hyper-parameters, the sha256 of
the written file and of the file it came from, the sha256 of the training options (when known),
metrics (when known) and the osir / torch versions that wrote it.  ``read_model_card`` reads one
back and checks that the file it describes still has the recorded hash.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path

import yaml

import osir
from osir.core.checkpoint import write_text
from osir.core.options import load_yaml
from osir.core.registry import OptionsError
from osir.metrics.results import package_version


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def options_sha256(options: dict) -> str:
    """The hash of a resolved options tree (keys sorted, so key order does not matter)."""
    text = yaml.safe_dump(options, sort_keys=True, default_flow_style=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def card_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(target.stem + ".card.yaml")


def _plain(value):
    """YAML-safe copy: tuples to lists, paths and other objects to strings, numpy/torch scalars to numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_model_card(target: str | Path, *, method: str, hyper_parameters: dict, source: str | Path | None = None,
                     options: dict | None = None, metrics: dict | None = None, **extra) -> Path:
    """Write ``<stem>.card.yaml`` next to ``target`` (which must exist) and return its path.
    ``extra`` entries (e.g. ``format: onnx``, ``max_abs_difference: 3e-6``) are recorded as given."""
    target = Path(target)
    card = {
        "method": method,
        "hyper_parameters": _plain(hyper_parameters),
        "file": {"name": target.name, "sha256": file_sha256(target), "bytes": target.stat().st_size},
        "source": None if source is None else {"name": Path(source).name, "sha256": file_sha256(source)},
        "training_options_sha256": None if options is None else options_sha256(options),
        "metrics": None if metrics is None else _plain(metrics),
        **{k: _plain(v) for k, v in extra.items()},
        "written_by": {"osir": osir.__version__, "torch": package_version("torch"),
                       "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    }
    path = card_path(target)
    write_text(path, yaml.safe_dump(card, sort_keys=False, allow_unicode=True))     # atomic; an error names it
    return path


def add_metrics(target: str | Path, metrics: dict) -> Path:
    """Merge ``metrics`` (e.g. measured on a test set after the export) into ``target``'s card."""
    card = read_model_card(target)
    card["metrics"] = {**(card.get("metrics") or {}), **_plain(metrics)}
    path = card_path(target)
    write_text(path, yaml.safe_dump(card, sort_keys=False, allow_unicode=True))     # atomic; an error names it
    return path


def read_model_card(target: str | Path) -> dict:
    """The card of ``target``; ValueError when the file no longer has the hash the card recorded."""
    target = Path(target)
    card = load_yaml(card_path(target), f"model card '{card_path(target)}'")     # OptionsError: a ValueError
    file = card.get("file") if isinstance(card, dict) else None
    recorded = file.get("sha256") if isinstance(file, dict) else None
    if not isinstance(recorded, str):
        raise OptionsError(f"model card '{card_path(target)}': file.sha256: missing (not a model card)")
    actual = file_sha256(target)
    if recorded != actual:
        raise ValueError(f"{target}: its model card records sha256 {recorded[:12]}…, "
                         f"the file has {actual[:12]}… (changed after the card was written)")
    return card
