"""Synthesise a paired test set from a GT folder with a batch degradation, replayably.

    python -m osir.degrade -opt options/degradations/realesrgan_x4.yml --input GT/ --output out/ [--seed 0]
    python -m osir.degrade --card out/degradation_card.yml --input GT/ --output again/   # regenerate exactly

Writes ``out/GT/<name>.png`` (the GT cropped to a multiple of the scale), ``out/LQ/<name>.png`` and
``out/degradation_card.yml``: the degradation options, the base seed and each image's seed.  Image i is
degraded alone, with its own seed driving both the drawn parameters and torch's generator, so the same GT
and card give the same LQ on any run.
"""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import torch
import yaml

import osir
from osir.cli import run
from osir.data.io import images_by_name, img2tensor, read_image, write_image
from osir.options import component, read_yaml, validate
from osir.registry import BATCH_DEGRADATIONS, OptionsError


def image_seed(base_seed: int, name: str) -> int:
    """A per-image seed from the base seed and the file name (independent of the folder's order)."""
    return (base_seed * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 31)


def synthesise(spec: dict, input_dir: Path, output_dir: Path, base_seed: int, seeds: dict | None = None) -> dict:
    # whole images, one at a time: no pair pool, no training-patch crop
    stage = BATCH_DEGRADATIONS.build({k: v for k, v in spec.items() if k not in ("pool_size", "gt_size")}, "degradation")
    scale = int(getattr(stage, "opt", {}).get("scale", 1))
    # the resolved values, not only the preset's name: the card replays the same LQ after a preset changes
    resolved = {"type": spec["type"], **({"preset": stage.preset, **stage.opt} if hasattr(stage, "opt") else spec)}
    card = {"osir": osir.__version__, "degradation": resolved, "seed": base_seed, "images": {}}
    for name, path in images_by_name(input_dir).items():     # a.png + a.jpg would write one GT/a.png: an error
        seed = (seeds or {}).get(name, image_seed(base_seed, name))
        gt = img2tensor(read_image(path))[None]
        h, w = gt.shape[-2:]
        gt = gt[..., : h - h % scale, : w - w % scale]
        params = {k: v[None] for k, v in stage.draw(seed).items()}
        torch.manual_seed(seed)
        out = stage(gt, params)
        write_image(output_dir / "GT" / f"{name}.png", out.get("gt_unsharpened", out["gt"])[0])   # not the USM target
        write_image(output_dir / "LQ" / f"{name}.png", out["lq"][0])
        card["images"][name] = seed
    (output_dir / "degradation_card.yml").write_text(yaml.safe_dump(card, sort_keys=False))
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


def degrade(args) -> int:
    if args.card:
        try:
            card = yaml.safe_load(Path(args.card).read_text())
            spec, seed, seeds = card["degradation"], int(card["seed"]), card["images"]
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            raise OptionsError(f"--card '{args.card}': not a readable degradation card ({err})") from None
    else:
        spec, seed, seeds = read_yaml(args.opt).get("degradation"), args.seed, None
        if spec is None:
            raise OptionsError(f"{args.opt}: no degradation: section")
    spec = validate(spec, component(BATCH_DEGRADATIONS), "degradation")
    card = synthesise(spec, Path(args.input), Path(args.output), seed, seeds)
    print(f"wrote {len(card['images'])} pairs and degradation_card.yml to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
