"""DAPE prompts for OSEDiff: the Recognize Anything tagger (Zhang et al., "Recognize Anything: A Strong
Image Tagging Model", 2023; Swin-L at 384 px) fine-tuned with LoRA by SeeSR (Wu et al., CVPR 2024) as the
degradation-aware prompt extractor, loaded from the release files ``ram_swin_large_14m.pth`` and
``DAPE.pth``.

Built from library parts: the image encoder is timm's ``SwinTransformer`` (timm's
``checkpoint_filter_fn`` converts the original Swin layout: PatchMerging moves from the end of stage i to
the start of stage i+1, same channel order; the dropped ``relative_position_index`` / ``attn_mask``
buffers are rebuilt by timm identically), the tagging head's attention, feed-forward and layer norms are
transformers' ``BertAttention`` / ``BertIntermediate`` / ``BertOutput``.  Written here, because no
library has them: the tagging head's layer (cross-attention only: RAM deletes the self-attention, which
transformers' ``BertLayer`` always runs, and its keys / values read 512-wide image tokens), the key mapping
and the merge of DAPE's loralib LoRA.

Tagging (as the release computes it): the image in [0, 1] (OSEDiff passes its x4 PIL-bicubic LQ, as
the release's test script does) resized to 384 x 384 (bilinear, antialiased) and ImageNet-normalised; image tokens = [mean token, 144 final-normed Swin tokens] -> ``image_proj``
(1536 -> 512); queries relu(wordvec_proj(label_embed)) (4585 x 768) cross-attend to them through two
layers; sigmoid(fc(.)) above each class's threshold (``ram_tag_list_threshold.txt`` used as read, as RAM and
SeeSR's ``ram_lora.py`` do: values 0.45-1.0, the 12 above 0.9 kept, so a class at 1.0 is never tagged) selects tags of ``ram_tag_list.txt`` in class order, joined by ", ".  The prompt is
``f"{tags}, {extra},"``.  The tag list and thresholds are data of the RAM release (Apache-2.0).

LoRA (rank 8, alpha 1, scale 1/8) is merged at load, as loralib does at ``eval()``: the Swin ``qkv``
LoRA is a merged q/v LoRA (W_q += s B[:C] A[:8], W_v += s B[C:] A[8:], k unchanged); the tagging head's
query/key LoRA is plain.  The release ties the tagging head's weights to the tag encoder's layers 0-1,
so loralib's merge adds both modules' LoRA to them; osir does the same (``merge_tied_tag_encoder_lora``),
as OSEDiff's published prompts were computed that way.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from osir.data.io import DataError
from osir.core.checkpoint import describe_mismatch
from osir.core.registry import PROMPTS
import osir.methods.osediff.files  # noqa: F401  (its file declarations, also where the entry points are stale)

# the tagger's files (RAM's, DAPE's) are declared in files.py, checked before anything is built

DATA = Path(__file__).parent / "ram_data"
#: Swin-L 384 (RAM's config_swinL_384.json) and the tagging head (q2l_config.json, key/value width 512)
SWIN_L_384 = dict(img_size=384, patch_size=4, window_size=12, embed_dim=192, depths=(2, 2, 18, 2),
                  num_heads=(6, 12, 24, 48))
TAGGING_HEAD = dict(hidden_size=768, num_attention_heads=4, num_hidden_layers=2, intermediate_size=3072,
                    layer_norm_eps=1e-12, image_width=512)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LORA_SCALE = 1.0 / 8                        # loralib: alpha / r = 1 / 8
_TAGGING_PREFIXES = ("visual_encoder.", "image_proj.", "label_embed", "wordvec_proj.", "tagging_head.", "fc.")
_IGNORED_PREFIXES = ("tag_encoder.", "text_decoder.")        # in the release, not needed for tagging


class ReleaseLayoutError(ValueError):
    """A RAM / DAPE file whose keys or shapes are not the release's."""


class TagLayer(nn.Module):
    """One tagging-head layer: cross-attention of the label queries to the image tokens (post-LN),
    then BERT's feed-forward; no self-attention (RAM deletes it, after Query2Label)."""

    def __init__(self, config, image_width: int, index: int):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertAttention, BertIntermediate, BertOutput
        self.crossattention = BertAttention(config, is_causal=False, layer_idx=index, is_cross_attention=True)
        self.crossattention.self.key = nn.Linear(image_width, config.hidden_size)
        self.crossattention.self.value = nn.Linear(image_width, config.hidden_size)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        attended = self.crossattention(queries, None, image, None)[0]     # all image tokens visible: no mask
        return self.output(self.intermediate(attended), attended)


class TaggingHead(nn.Module):
    def __init__(self, hidden_size: int, num_attention_heads: int, num_hidden_layers: int, intermediate_size: int,
                 layer_norm_eps: float, image_width: int):
        super().__init__()
        from transformers import BertConfig
        config = BertConfig(hidden_size=hidden_size, num_attention_heads=num_attention_heads,
                            num_hidden_layers=num_hidden_layers, intermediate_size=intermediate_size,
                            hidden_act="gelu", layer_norm_eps=layer_norm_eps, attention_probs_dropout_prob=0.0,
                            hidden_dropout_prob=0.0)
        config._attn_implementation = "sdpa"
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(TagLayer(config, image_width, i) for i in range(num_hidden_layers))

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.layer:
            queries = layer(queries, image)
        return queries


class RAMTagger(nn.Module):
    """The tagging part of RAM (module names as in the release, the Swin's as in timm)."""

    def __init__(self, swin: dict = SWIN_L_384, head: dict = TAGGING_HEAD, num_classes: int = 4585):
        super().__init__()
        from timm.models.swin_transformer import SwinTransformer
        self.image_size = swin["img_size"]
        self.visual_encoder = SwinTransformer(**swin, num_classes=0)
        vision_width = swin["embed_dim"] * 2 ** (len(swin["depths"]) - 1)
        self.image_proj = nn.Linear(vision_width, head["image_width"])
        self.label_embed = nn.Parameter(torch.zeros(num_classes, head["image_width"]))
        self.wordvec_proj = nn.Linear(head["image_width"], head["hidden_size"])
        self.tagging_head = TaggingHead(**head)
        self.fc = nn.Linear(head["hidden_size"], 1)

    def preprocess(self, lq: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> resized to the tagger's size and ImageNet-normalised (the release's transforms)."""
        x = F.interpolate(lq.float(), size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                          antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Per-class logits (B x classes) of preprocessed images."""
        tokens = self.visual_encoder.forward_features(image).flatten(1, 2)          # B x 144 x 1536, normed
        tokens = self.image_proj(torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1))
        queries = F.relu(self.wordvec_proj(self.label_embed)).unsqueeze(0).expand(image.shape[0], -1, -1)
        return self.fc(self.tagging_head(queries, tokens.to(queries.dtype))).squeeze(-1)


def release_key(name: str) -> str:
    """osir's (timm's) key of the tagger -> the release's key (downsample at the end of the stage before)."""
    match = re.match(r"visual_encoder\.layers\.(\d+)\.downsample\.(.*)", name)
    if match:
        return f"visual_encoder.layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
    return name


def expected_release_layout(tagger: RAMTagger) -> dict[str, tuple[int, ...]]:
    return {release_key(k): tuple(v.shape) for k, v in tagger.state_dict().items()}


def _meta(layout: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in layout.items()}


def _read(path: str | Path, what: str) -> dict:
    from osir.core.checkpoint import CheckpointError
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: '{path}'")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:    # truncated zip, pickle with code, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read '{path}' as {what} (torch.load, weights_only): {first}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"'{path}' holds a {type(data).__name__}, not the {what} state dict")
    return data


def tagger_state_from_release(ram: dict, dape: Optional[dict], tagger: RAMTagger, source: str = "RAM file",
                              dape_source: str = "DAPE file") -> dict[str, torch.Tensor]:
    """The tagger's state dict from the release's RAM state dict (``['model']``) and DAPE's LoRA dict,
    LoRA merged.  Keys or shapes other than the release's raise ReleaseLayoutError naming them."""
    from timm.models.swin_transformer import checkpoint_filter_fn
    ram = {k.replace("vision_multi", "tagging_head"): v for k, v in ram.items()}
    expected = expected_release_layout(tagger)
    dropped = [k for k in ram if k.endswith(("relative_position_index", "attn_mask"))]
    known = {k: v for k, v in ram.items() if k not in dropped and not k.startswith(_IGNORED_PREFIXES)}
    diff = describe_mismatch(_meta(expected), known)
    if diff:
        raise ReleaseLayoutError(f"{source} is not the RAM (Swin-L) release layout: {diff}")
    state = {k: v.float().clone() for k, v in known.items()}
    if dape is not None:
        merge_dape(state, dape, dape_source)
    visual = {k[len("visual_encoder."):]: v for k, v in state.items() if k.startswith("visual_encoder.")}
    out = {f"visual_encoder.{k}": v for k, v in checkpoint_filter_fn(visual, tagger.visual_encoder).items()}
    out.update({k: v for k, v in state.items() if not k.startswith("visual_encoder.")})
    return out


def dape_layout(state: dict) -> dict[str, tuple[int, ...]]:
    """DAPE's LoRA tensors that tagging reads (release key -> shape), given the RAM state (release keys)."""
    layout = {}
    for key, value in state.items():
        if key.endswith("attn.qkv.weight"):
            dim = value.shape[1]
            layout[key[:-len("weight")] + "lora_A"] = (16, dim)
            layout[key[:-len("weight")] + "lora_B"] = (2 * dim, 8)
        elif re.match(r"tagging_head\.encoder\.layer\.\d+\.crossattention\.self\.(query|key)\.weight$", key):
            base = key[:-len("weight")]
            for module in (base, base.replace("tagging_head.", "tag_encoder.")):   # the tied tag-encoder layer
                layout[module + "lora_A"] = (8, value.shape[1])
                layout[module + "lora_B"] = (value.shape[0], 8)
    return layout


def merge_dape(state: dict, dape: dict, source: str = "DAPE file") -> None:
    """Merge DAPE's loralib LoRA into ``state`` (release keys) in place."""
    wanted = dape_layout(state)
    # LoRA of modules tagging does not run (tag encoder, caption decoder) is ignored; anything else is not DAPE's
    given = {k: v for k, v in dape.items() if k in wanted or not k.endswith(("lora_A", "lora_B"))}
    diff = describe_mismatch(_meta(wanted), given)
    if diff:
        raise ReleaseLayoutError(f"{source} is not DAPE's LoRA layout: {diff}")
    for key in state:
        if key.endswith("attn.qkv.weight"):
            base = key[:-len("weight")]
            a, b = dape[base + "lora_A"].float(), dape[base + "lora_B"].float()
            dim = state[key].shape[1]
            state[key][:dim] += LORA_SCALE * b[:dim] @ a[:8]                   # q rows
            state[key][2 * dim:] += LORA_SCALE * b[dim:] @ a[8:]               # v rows; k unchanged
        elif key[:-len("weight")] + "lora_A" in wanted and key.startswith("tagging_head."):
            base = key[:-len("weight")]
            for module in (base, base.replace("tagging_head.", "tag_encoder.")):
                state[key] += LORA_SCALE * dape[module + "lora_B"].float() @ dape[module + "lora_A"].float()


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def tags_from_logits(logits: torch.Tensor, thresholds: torch.Tensor, tag_list: list[str]) -> list[str]:
    """', '-joined tags whose sigmoid exceeds the class threshold, in class order."""
    chosen = torch.sigmoid(logits.float()) > thresholds.to(logits.device)
    return [", ".join(tag_list[i] for i in torch.nonzero(row).flatten().tolist()) for row in chosen]


def load_tagger(ram_path: str | Path, dape_path: Optional[str | Path] = None, swin: dict = SWIN_L_384,
                head: dict = TAGGING_HEAD) -> RAMTagger:
    """The RAM tagger from the release files (read with weights_only; only the tagging part is kept:
    the release's tag encoder and caption decoder are never materialised, the file is memory-mapped)."""
    from osir.core.checkpoint import CheckpointError
    tag_list = read_lines(DATA / "ram_tag_list.txt")
    tagger = RAMTagger(swin, head, num_classes=len(tag_list))
    data = _read(ram_path, "RAM checkpoint")
    if "model" not in data or not isinstance(data["model"], dict):
        raise CheckpointError(f"'{ram_path}' is not the RAM release ({{'model': state_dict}}); "
                              f"top-level keys: {sorted(data)[:5]}")
    dape = _read(dape_path, "DAPE LoRA file") if dape_path is not None else None
    try:
        state = tagger_state_from_release(data["model"], dape, tagger, f"'{ram_path}'", f"'{dape_path}'")
    except ReleaseLayoutError as exc:
        raise CheckpointError(str(exc)) from None
    tagger.load_state_dict(state, strict=True)
    return tagger.eval().requires_grad_(False)


@PROMPTS.register(name="dape")
class DAPEPrompt:
    """OSEDiff's prompt: DAPE's tags of the LQ, ``f"{tags}, {extra},"``.

    Args:
        ram_path: ``ram_swin_large_14m.pth``; dape_path: ``DAPE.pth`` (null: plain RAM tags).
        extra: text after the tags (the original's ``--prompt``, empty by default).
        precision: 'fp32', 'bf16' or 'fp16' for the tagger.
    """

    def __init__(self, ram_path: str, dape_path: Optional[str] = None, extra: str = "",
                 precision: str = "fp32", swin: Optional[dict] = None, head: Optional[dict] = None):
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision: expected one of fp32, bf16, fp16, got {precision!r}")
        self.tagger = load_tagger(ram_path, dape_path, swin or SWIN_L_384, head or TAGGING_HEAD)
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.tagger.to(self.dtype)
        self.tag_list = read_lines(DATA / "ram_tag_list.txt")
        self.thresholds = torch.tensor([float(v) for v in read_lines(DATA / "ram_tag_list_threshold.txt")])
        self.extra = extra

    def tags(self, lq: torch.Tensor) -> list[str]:
        self.tagger.to(lq.device)
        with torch.no_grad():
            logits = self.tagger(self.tagger.preprocess(lq).to(self.dtype))
        return tags_from_logits(logits, self.thresholds, self.tag_list)

    def __call__(self, batch: dict) -> list[str]:
        return [f"{tags}, {self.extra}," for tags in self.tags(batch["lq"])]


@PROMPTS.register(name="ram")
class RAMPrompt:
    """Recognize Anything's tags (Zhang et al. 2023; the plain RAM release ``ram_swin_large_14m.pth``,
    no DAPE LoRA) of one image of the batch, joined by ", " and nothing else: OSEDiff's training prompts,
    which the release computes from each GT image.  The tagger is ``DAPEPrompt`` loaded without a DAPE
    file.

    Args:
        ram_path: ``ram_swin_large_14m.pth``; required (an options error names the key without it).
        image: the batch entry tagged: 'gt' (training, the release's choice) or 'lq'.
        precision: 'fp32', 'bf16' or 'fp16' for the tagger (the release's training runs it in fp16).
        swin, head: the tagger's architecture (default RAM's Swin-L 384; tests use tiny ones).
    """

    def __init__(self, ram_path: Optional[str] = None, image: Literal["gt", "lq"] = "gt", precision: str = "fp32",
                 swin: Optional[dict] = None, head: Optional[dict] = None):
        if ram_path is None:
            raise ValueError("ram_path: RAM's tags need the RAM weights (ram_swin_large_14m.pth); none given")
        if not Path(ram_path).is_file():
            raise ValueError(f"ram_path: file not found: '{ram_path}' (RAM's ram_swin_large_14m.pth)")
        if image not in ("gt", "lq"):
            raise ValueError(f"image: expected 'gt' or 'lq', got {image!r}")
        self.tagger = DAPEPrompt(ram_path, None, precision=precision, swin=swin, head=head)
        self.image = image

    def __call__(self, batch: dict) -> list[str]:
        if self.image not in batch:
            raise DataError(f"RAM prompts tag the batch's '{self.image}' image, which this batch does not hold "
                            f"(it has {', '.join(sorted(batch))})")
        return self.tagger.tags(batch[self.image])


def main(argv=None) -> int:
    """python -m osir.methods.osediff.dape LR_DIR --ram FILE [--dape FILE]: print each image's tags."""
    from osir.core import cli
    from osir.data.io import img2tensor, list_images, read_image
    from osir.methods.osediff.components import release_sr_input, to_uint8
    parser = argparse.ArgumentParser(prog="python -m osir.methods.osediff.dape", description="Print DAPE / RAM tags.")
    parser.add_argument("folder")
    parser.add_argument("--ram", required=True, help="ram_swin_large_14m.pth")
    parser.add_argument("--dape", help="DAPE.pth (without it: plain RAM tags)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--upscale", type=int, default=4,
                        help="tag the SR input OSEDiff's test script makes of the image at this scale (PIL: "
                             "small images enlarged, bicubic xN, LANCZOS to multiples of 8; default 4; 1: the "
                             "image as it is)")
    args = parser.parse_args(argv)

    def body() -> int:
        device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
        extractor = DAPEPrompt(args.ram, args.dape, precision=args.precision)
        for path in list_images(args.folder):
            lq = img2tensor(read_image(path))[None].to(device)
            if args.upscale != 1:
                lq = release_sr_input(to_uint8(lq), args.upscale).float() / 255
            print(f"{path.name}\t{extractor.tags(lq)[0]}")
        return 0
    return cli.run("osir.dape", body)


if __name__ == "__main__":
    sys.exit(main())
