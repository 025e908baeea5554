"""Synthesise a paired test set from a GT folder with a batch degradation, replayably.

    python -m osir.degrade -opt options/degradations/realesrgan_x4.yml --input GT/ --output out/ [--seed 0]
    python -m osir.degrade --card out/degradation_card.yml --input GT/ --output again/   # regenerate exactly

Writes ``out/GT/<name>.png`` (the GT cropped to a multiple of the scale), ``out/LQ/<name>.png`` and
``out/degradation_card.yml``: the degradation options, the base seed and each image's seed.  Image i is
degraded alone, with its own seed driving both the drawn parameters and torch's generator, so the same GT
and card give the same LQ on any run.  A card is read as options files are (``load_yaml``: an alias bomb is
refused) and checked (``read_card``): a wrong structure is one line naming the card and the key.
"""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import torch
import yaml

import osir
from osir.core.cli import run
from osir.data.io import images_by_name, img2tensor, read_image, write_image
from osir.core.options import component, load_yaml, read_yaml, short_repr, validate
from osir.core.progress import Progress
from osir.core.registry import BATCH_DEGRADATIONS, OptionsError
from osir.core.checkpoint import write_text


def image_seed(base_seed: int, name: str) -> int:
    """A per-image seed from the base seed and the file name (independent of the folder's order)."""
    return (base_seed * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 31)


def synthesise(spec: dict, input_dir: Path, output_dir: Path, base_seed: int, seeds: dict | None = None,
               progress: bool = False) -> dict:
    # whole images, one at a time: no pair pool, no training-patch crop; progress: per image on stderr
    stage = BATCH_DEGRADATIONS.build({k: v for k, v in spec.items() if k not in ("pool_size", "gt_size")}, "degradation")
    scale = int(getattr(stage, "opt", {}).get("scale", 1))
    # the resolved values, not only the preset's name: the card replays the same LQ after a preset changes
    resolved = {"type": spec["type"], **({"preset": stage.preset, **stage.opt} if hasattr(stage, "opt") else spec)}
    card = {"osir": osir.__version__, "degradation": resolved, "seed": base_seed, "images": {}}
    images = images_by_name(input_dir)       # a.png + a.jpg would write one GT/a.png: an error
    with Progress(len(images), "osir.degrade", disable=not progress) as bar:
        for name, path in images.items():
            seed = (seeds or {}).get(name, image_seed(base_seed, name))
            gt = img2tensor(read_image(path))[None]
            h, w = gt.shape[-2:]
            gt = gt[..., : h - h % scale, : w - w % scale]
            params = {k: v[None] for k, v in stage.draw(seed).items()}
            torch.manual_seed(seed)
            out = stage(gt, params)
            write_image(output_dir / "GT" / f"{name}.png", out.get("gt_unsharpened", out["gt"])[0])   # not USM's target
            write_image(output_dir / "LQ" / f"{name}.png", out["lq"][0])
            card["images"][name] = seed
            bar.update()
    write_text(output_dir / "degradation_card.yml", yaml.safe_dump(card, sort_keys=False))
    return card


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osir.degrade", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-opt", help="YAML file with a degradation: section")
    source.add_argument("--card", help="a degradation_card.yml to replay")
    parser.add_argument("--input", required=True, help="folder of GT images")
    parser.add_argument("--output", required=True, help="where to write GT/, LQ/ and the card")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run("osir.degrade", lambda: degrade(args))


#: seeds a card may hold: what ``torch.manual_seed`` and numpy's ``SeedSequence`` both take
_SEEDS = range(2 ** 64)


def _seed(value, label: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in _SEEDS:
        raise OptionsError(f"{label}: {key}: expected a seed (an integer from 0 to 2**64 - 1), got {short_repr(value)}")
    return value


def read_card(path: str | Path) -> tuple[dict, int, dict[str, int]]:
    """(degradation spec, base seed, image name -> seed) of a degradation card, read as options files are (an
    alias bomb is refused, not expanded) and checked: a card that is not one is one ``OptionsError`` line
    naming the file and the key."""
    label = f"--card '{path}'"
    try:
        card = load_yaml(path, label)
    except OptionsError as err:
        raise OptionsError(f"{label}: not a readable degradation card ({str(err).removeprefix(label + ': ')})") \
            from None
    if not isinstance(card, dict):
        raise OptionsError(f"{label}: not a readable degradation card (the top level is {short_repr(card)}, "
                           "not a mapping)")
    missing = [key for key in ("degradation", "seed", "images") if key not in card]
    if missing:
        raise OptionsError(f"{label}: not a readable degradation card (no {', '.join(missing)}: key)")
    images = card["images"]
    if not isinstance(images, dict):
        raise OptionsError(f"{label}: images: expected a mapping of image name to seed, got {short_repr(images)}")
    for name in images:
        if not isinstance(name, str):
            raise OptionsError(f"{label}: images: {short_repr(name)} is not an image name (quote it)")
    seeds = {name: _seed(value, label, f"images.{name}") for name, value in images.items()}
    return card["degradation"], _seed(card["seed"], label, "seed"), seeds


def check_paths(args) -> None:
    """The files the command line names, all missing ones in one message (before anything is read)."""
    given = [("--card" if args.card else "-opt", args.card or args.opt, Path.is_file, "file"),
             ("--input", args.input, Path.is_dir, "folder")]
    gone = [f"{flag}: {kind} not found: '{value}'" for flag, value, present, kind in given if not present(Path(value))]
    if gone:
        raise OptionsError("; ".join(gone))


def degrade(args) -> int:
    check_paths(args)
    if args.card:
        spec, seed, seeds = read_card(args.card)
        try:
            spec = validate(spec, component(BATCH_DEGRADATIONS), "degradation")
        except OptionsError as err:
            raise OptionsError(f"--card '{args.card}': {err}") from None
    else:
        spec, seed, seeds = read_yaml(args.opt).get("degradation"), args.seed, None
        if spec is None:
            raise OptionsError(f"{args.opt}: no degradation: section")
        spec = validate(spec, component(BATCH_DEGRADATIONS), "degradation")
    card = synthesise(spec, Path(args.input), Path(args.output), seed, seeds, progress=True)
    print(f"wrote {len(card['images'])} pairs and degradation_card.yml to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
