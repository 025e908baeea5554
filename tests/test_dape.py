"""DAPE / RAM tagger: the release layouts (full-size tree against the manifest), a tiny tagger saved in
the release layouts and loaded through the real loader, LoRA merged against applied at run time,
the threshold rule and the prompt string, bad files."""
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from osir.core.checkpoint import CheckpointError
from osir.methods.osediff import dape
from osir.core.registry import PROMPTS

LAYOUT = json.loads((Path(__file__).parent / "fixtures" / "checkpoints" / "ram_tagging_layout.json").read_text())
TINY_SWIN = dict(img_size=32, patch_size=4, window_size=4, embed_dim=8, depths=(2, 2), num_heads=(2, 2))
TINY_HEAD = dict(hidden_size=16, num_attention_heads=2, num_hidden_layers=2, intermediate_size=32,
                 layer_norm_eps=1e-12, image_width=8)


def test_full_size_tagger_has_exactly_the_release_keys_and_shapes():
    with torch.device("meta"):
        tagger = dape.RAMTagger()
    expected = {k: tuple(v) for k, v in LAYOUT["ram"].items() if not k.endswith(("relative_position_index", "attn_mask"))}
    assert dape.expected_release_layout(tagger) == expected                     # 366 keys after the mapping
    assert len(expected) == 366
    state = {dape.release_key(k): v for k, v in tagger.state_dict().items()}
    assert dape.dape_layout(state) == {k: tuple(v) for k, v in LAYOUT["dape"].items()}
    assert sum(p.numel() for p in tagger.parameters()) == 212_117_045          # what tagging keeps in memory


def release_files(tmp_path: Path, seed: int = 0, rename_head: bool = False):
    """A tiny random tagger written in the release layouts: {'model': state} with the original Swin
    names, the buffers the original loader drops, the tag encoder / decoder it ignores; DAPE's LoRA."""
    torch.manual_seed(seed)
    tagger = dape.RAMTagger(TINY_SWIN, TINY_HEAD)
    with torch.no_grad():
        tagger.label_embed.normal_()
    state = {dape.release_key(k): v.clone() for k, v in tagger.state_dict().items()}
    for name, module in tagger.visual_encoder.named_modules():
        if name.endswith(".attn"):
            state[f"visual_encoder.{name}.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    state["visual_encoder.layers.0.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    state["tag_encoder.encoder.layer.0.attention.self.query.weight"] = torch.zeros(4, 4)
    state["text_decoder.cls.predictions.bias"] = torch.zeros(3)
    if rename_head:
        state = {k.replace("tagging_head.", "vision_multi."): v for k, v in state.items()}
    torch.save({"model": state}, tmp_path / "ram.pth")
    lora = {k: 0.3 * torch.randn(shape) for k, shape in dape.dape_layout(
        {dape.release_key(k): v for k, v in tagger.state_dict().items()}).items()}
    lora["text_decoder.bert.encoder.layer.0.attention.self.query.lora_A"] = torch.zeros(8, 4)   # ignored
    torch.save(lora, tmp_path / "dape.pth")
    return tagger, lora


def test_release_files_load_and_merged_lora_equals_lora_applied_at_run_time(tmp_path):
    reference, lora = release_files(tmp_path, rename_head=True)
    plain = dape.load_tagger(tmp_path / "ram.pth", None, TINY_SWIN, TINY_HEAD)
    image = plain.preprocess(torch.rand(2, 3, 40, 52))
    with torch.no_grad():
        assert torch.allclose(plain(image), reference.eval()(image), atol=1e-5)   # the mapping is exact
    merged = dape.load_tagger(tmp_path / "ram.pth", tmp_path / "dape.pth", TINY_SWIN, TINY_HEAD)

    def qkv_hook(name):              # loralib MergedLinear, unmerged: q and v rows get their own LoRA
        a, b = lora[f"visual_encoder.{name}.lora_A"], lora[f"visual_encoder.{name}.lora_B"]

        def hook(module, inputs, out):
            dim = inputs[0].shape[-1]
            q = inputs[0] @ a[:8].T @ b[:dim].T
            v = inputs[0] @ a[8:].T @ b[dim:].T
            return out + dape.LORA_SCALE * torch.cat([q, torch.zeros_like(q), v], dim=-1)
        return hook

    def linear_hook(name):           # the tagging head's query / key: its LoRA and the tied tag encoder's
        pairs = [(lora[f"{m}.lora_A"], lora[f"{m}.lora_B"]) for m in (name, name.replace("tagging_head.", "tag_encoder."))]

        def hook(module, inputs, out):
            return out + sum(dape.LORA_SCALE * inputs[0] @ a.T @ b.T for a, b in pairs)
        return hook

    for name, module in plain.named_modules():
        if name.endswith("attn.qkv"):
            module.register_forward_hook(qkv_hook(name[len("visual_encoder."):]))
        elif name.startswith("tagging_head.") and name.endswith(("self.query", "self.key")):
            module.register_forward_hook(linear_hook(name))
    with torch.no_grad():
        unmerged, merged_logits = plain(image), merged(image)
    assert torch.allclose(unmerged, merged_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, reference(image), atol=1e-3)        # the LoRA did something


def test_threshold_rule_and_prompt_string(tmp_path):
    tags = dape.read_lines(dape.DATA / "ram_tag_list.txt")
    thresholds = torch.tensor([float(v) for v in dape.read_lines(dape.DATA / "ram_tag_list_threshold.txt")])
    assert len(tags) == len(thresholds) == 4585 and tags[0] == "3D CG rendering"
    logit = lambda p: math.log(p / (1 - p))                                 # noqa: E731
    logits = torch.full((2, 4585), -20.0)
    logits[0, 2] = logit(float(thresholds[2]) + 0.01)         # just above: kept
    logits[0, 0] = logit(float(thresholds[0]) - 0.01)         # just below: dropped
    logits[0, 1] = logit(float(thresholds[1]) + 0.01)
    assert dape.tags_from_logits(logits, thresholds, tags) == [f"{tags[1]}, {tags[2]}", ""]
    release_files(tmp_path)
    extractor = PROMPTS.build({"type": "dape", "ram_path": str(tmp_path / "ram.pth"),
                               "dape_path": str(tmp_path / "dape.pth"), "swin": TINY_SWIN, "head": TINY_HEAD})
    with torch.no_grad():                           # fc: every class at sigmoid 0.8 -> tags with thresholds < 0.8
        extractor.tagger.fc.weight.zero_()
        extractor.tagger.fc.bias.fill_(logit(0.8))
    expected = ", ".join(t for t, th in zip(tags, thresholds.tolist()) if th < 0.8)
    batch = {"lq": torch.rand(1, 3, 24, 24), "lq_path": ["a.png"], "name": ["a"]}
    assert extractor(batch) == [f"{expected}, ,"]                            # empty extra, as released
    with torch.no_grad():                           # at 0.95 the thresholds above 0.9 apply as read, uncapped
        extractor.tagger.fc.bias.fill_(logit(0.95))
    high = [t for t, th in zip(tags, thresholds.tolist()) if th > 0.95]
    chosen = extractor(batch)[0][:-len(", ,")].split(", ")
    assert len(high) == 11 and not set(high) & set(chosen)
    assert chosen == [t for t, th in zip(tags, thresholds.tolist()) if th < 0.95]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_tags_follow_fp32(tmp_path, precision):
    release_files(tmp_path)
    spec = {"type": "dape", "ram_path": str(tmp_path / "ram.pth"), "dape_path": str(tmp_path / "dape.pth"),
            "swin": TINY_SWIN, "head": TINY_HEAD}
    full, half = PROMPTS.build(spec), PROMPTS.build({**spec, "precision": precision})
    lq = torch.rand(2, 3, 30, 30)
    with torch.no_grad():
        a = full.tagger(full.tagger.preprocess(lq))
        b = half.tagger(half.tagger.preprocess(lq).to(half.dtype)).float()
    assert b.dtype == torch.float32 and torch.allclose(a, b, atol=0.05 if precision == "bf16" else 0.01)


def test_truncated_or_foreign_files_are_refused_in_one_line(tmp_path):
    release_files(tmp_path)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes((tmp_path / "ram.pth").read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"cannot read '.*cut\.pth' as RAM checkpoint"):
        dape.load_tagger(truncated, None, TINY_SWIN, TINY_HEAD)
    torch.save({"model": {"visual_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 4, 4), "w": torch.zeros(1)}},
               tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"not the RAM \(Swin-L\) release layout: \d+ missing keys: .*; "
                                              r"1 unexpected keys: w"):
        dape.load_tagger(tmp_path / "other.pth", None, TINY_SWIN, TINY_HEAD)
    torch.save({"state_dict": {}}, tmp_path / "wrapped.pth")
    with pytest.raises(CheckpointError, match=r"is not the RAM release \(\{'model': state_dict\}\)"):
        dape.load_tagger(tmp_path / "wrapped.pth", None, TINY_SWIN, TINY_HEAD)
    lora = torch.load(tmp_path / "dape.pth", weights_only=True)
    lora.pop(next(k for k in lora if "qkv" in k))
    torch.save(lora, tmp_path / "dape_short.pth")
    with pytest.raises(CheckpointError, match=r"not DAPE's LoRA layout: 1 missing keys: visual_encoder\..*qkv\.lora_A"):
        dape.load_tagger(tmp_path / "ram.pth", tmp_path / "dape_short.pth", TINY_SWIN, TINY_HEAD)
    from osir.core.registry import OptionsError
    with pytest.raises(OptionsError, match=r"method\.prompt: .*precision: expected one of fp32, bf16, fp16"):
        PROMPTS.build({"type": "dape", "ram_path": str(tmp_path / "ram.pth"), "precision": "int8"}, "method.prompt")


def test_tags_command_prints_each_images_tags(tmp_path, monkeypatch, capsys):
    from tests.conftest import write_images
    release_files(tmp_path)
    monkeypatch.setattr(dape, "SWIN_L_384", TINY_SWIN)       # the command builds the full-size tagger otherwise
    monkeypatch.setattr(dape, "TAGGING_HEAD", TINY_HEAD)
    folder = write_images(tmp_path / "lr", 2, (20, 20))
    assert dape.main([str(folder), "--ram", str(tmp_path / "ram.pth"), "--dape", str(tmp_path / "dape.pth")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["img0.png", "img1.png"]
    extractor = PROMPTS.build({"type": "dape", "ram_path": str(tmp_path / "ram.pth"),
                               "dape_path": str(tmp_path / "dape.pth"), "swin": TINY_SWIN, "head": TINY_HEAD})
    from PIL import Image
    for line, name in zip(lines, ["img0.png", "img1.png"]):     # tags of the release script's SR input, by PIL:
        lr = Image.open(folder / name).convert("RGB")          # 20 px < 512 / 4: enlarged to int(6.4 * 20) = 128,
        up = lr.resize((128, 128), Image.BICUBIC).resize((512, 512), Image.BICUBIC)   # then bicubic x4
        up = torch.from_numpy(np.asarray(up).copy()).permute(2, 0, 1)[None] / 255.0
        assert line.split("\t")[1] == extractor.tags(up)[0]
    assert dape.main([str(folder), "--ram", str(tmp_path / "ram.pth"), "--dape", str(tmp_path / "dape.pth"),
                      "--upscale", "1"]) == 0
    lr = torch.from_numpy(cv2.imread(str(folder / "img1.png"))[..., ::-1].copy()).permute(2, 0, 1)[None] / 255.0
    assert capsys.readouterr().out.strip().splitlines()[1].split("\t")[1] == extractor.tags(lr)[0]
    assert dape.main([str(folder), "--ram", str(tmp_path / "missing.pth")]) == 2
    assert "osir.dape: checkpoint error: RAM checkpoint not found" in capsys.readouterr().err
