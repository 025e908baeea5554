"""Caption the clean (GT) images of DA-CLIP's training data once and cache the captions.

DA-CLIP (Luo et al., ICLR 2024) pairs each degraded image with a caption of its clean image, made with
BLIP.  This script is a thin layer over Hugging Face transformers: the captioning model and its
processor are loaded from a local folder with ``AutoModelForImageTextToText`` / ``AutoProcessor``
(e.g. a saved ``Salesforce/blip-image-captioning-base``; any image-text-to-text model with a processor
works); captions come from its ``generate`` (greedy: ``do_sample=False``) decoded without special tokens.
No part of the model is written here.

The output is what ``DegradationTypeDataset(captions=...)`` reads: one ``name<TAB>caption`` line per
image, ``name`` the file name (so two images with one file name in different sub-folders are an error).
The file is a cache: images already in it are skipped, new captions are appended and flushed batch by
batch, so a stopped run continues where it stopped.  Whitespace in a caption (tabs, newlines) becomes
single spaces.  Images are given to the processor as 8-bit RGB (16-bit files are rounded to 8 bits).

    python -m osir.methods.daclip.captions GT_DIR --model MODEL_DIR --out captions.tsv
        [--batch-size 8] [--max-new-tokens 30] [--prompt TEXT] [--device cpu]

``--prompt`` conditions the caption on a text start (BLIP's "a photography of"); BLIP's decoded caption
then begins with it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from osir.data.io import DataError, list_images, read_image, to_uint8


def read_captions(path: str | Path) -> dict[str, str]:
    """The ``name<TAB>caption`` lines of ``path`` ({} if it does not exist).

    An unfinished last line (no newline: a run stopped while writing) is cut off the file, so that image is
    captioned again; a line without a tab is an error naming the file and line."""
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        print(f"{path}: dropping an unfinished last line: {data[keep:].decode('utf-8', 'replace')!r}", file=sys.stderr)
        with path.open("r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    captions = {}
    for line, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        if text.strip():
            if "\t" not in text:
                raise DataError(f"'{path}' line {line}: expected 'name<TAB>caption'")
            name, caption = text.split("\t", 1)
            captions[name] = caption.strip()
    return captions


def images_by_name(gt_dir: str | Path) -> dict[str, Path]:
    """The images under ``gt_dir`` (recursively) keyed by file name; a file name met twice is an error."""
    found: dict[str, Path] = {}
    for path in list_images(gt_dir):
        if path.name in found:
            raise DataError(f"two images named '{path.name}': '{found[path.name]}' and '{path}' "
                            f"(captions are keyed by file name)")
        found[path.name] = path
    return found


def check_model_folder(model_path: str | Path) -> Path:
    """``model_path`` if it is a saved transformers model folder (has config.json), else an error naming it."""
    path = Path(model_path)
    if not path.is_dir():
        raise DataError(f"captioning model folder not found: '{path}'")
    if not (path / "config.json").is_file():
        raise DataError(f"'{path}' is not a transformers model folder (no config.json); give a local "
                        "image-captioning model saved with save_pretrained (e.g. BLIP)")
    return path


def load_captioner(model_path: str | Path, device: str = "cpu"):
    """(processor, model) from a local transformers folder, the model in eval mode on ``device``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    path = check_model_folder(model_path)
    try:
        processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"cannot load a captioning model from '{path}': {err}") from None
    return processor, model.to(device).eval()


def as_pil(image: np.ndarray):
    """float32 HWC RGB in [0, 1] -> 8-bit RGB PIL image (what a processor expects from a photo)."""
    from PIL import Image
    return Image.fromarray(to_uint8(image), "RGB")


@torch.inference_mode()
def caption_batch(processor, model, images: list, max_new_tokens: int = 30, prompt: Optional[str] = None) -> list[str]:
    """One caption per image (PIL images or HWC uint8 arrays), whitespace runs made single spaces."""
    text = [prompt] * len(images) if prompt else None
    inputs = processor(images=images, text=text, return_tensors="pt").to(model.device, model.dtype)
    tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return [" ".join(c.split()) for c in processor.batch_decode(tokens, skip_special_tokens=True)]


def caption_folder(gt_dir: str | Path, model_path: str | Path, out: str | Path, batch_size: int = 8,
                   max_new_tokens: int = 30, prompt: Optional[str] = None, device: str = "cpu") -> dict[str, str]:
    """Caption the images of ``gt_dir`` not yet in ``out``, appending them; every image's caption by file name."""
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    check_model_folder(model_path)
    images = images_by_name(gt_dir)
    out = Path(out)
    cached = read_captions(out)
    todo = [name for name in images if name not in cached]
    if todo:
        processor, model = load_captioner(model_path, device)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8", newline="\n") as f:
            for start in range(0, len(todo), batch_size):
                names = todo[start:start + batch_size]
                batch = [as_pil(read_image(images[name])) for name in names]
                captions = caption_batch(processor, model, batch, max_new_tokens, prompt)
                f.write("".join(f"{name}\t{caption}\n" for name, caption in zip(names, captions)))
                f.flush()
                cached.update(zip(names, captions))
    return {name: cached[name] for name in images}


def main(argv=None) -> int:
    """python -m osir.methods.daclip.captions GT_DIR --model DIR --out FILE: caption and cache."""
    from osir.core import cli
    parser = argparse.ArgumentParser(prog="python -m osir.methods.daclip.captions",
                                     description="Caption clean images once with a local transformers model.")
    parser.add_argument("gt_dir", help="folder of clean images (searched recursively)")
    parser.add_argument("--model", required=True, help="local transformers folder (processor + captioning model)")
    parser.add_argument("--out", required=True, help="name<TAB>caption file; images already in it are skipped")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--prompt", help="text the caption starts from (e.g. 'a photography of')")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args(argv)

    def body() -> int:
        before = len(read_captions(args.out))
        captions = caption_folder(args.gt_dir, args.model, args.out, args.batch_size, args.max_new_tokens,
                                  args.prompt, args.device)
        new = len(read_captions(args.out)) - before
        print(f"{len(captions)} images: {new} captioned, {len(captions) - new} cached -> {args.out}")
        return 0
    return cli.run("osir.daclip.captions", body)


if __name__ == "__main__":
    sys.exit(main())
