"""DA-CLIP caption cache: a tiny random BLIP of the real architecture saved as a local transformers folder,
captions equal to BLIP's own generate on the same pixels, the cache (skip, append, unfinished line), the
file read by DegradationTypeDataset, bad inputs named."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")
from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,  # noqa: E402
                          BlipProcessor)

from osir.data.io import DataError  # noqa: E402
from osir.methods.daclip import captions as cap  # noqa: E402
from osir.methods.daclip.data import DegradationTypeDataset  # noqa: E402
from tests.conftest import write_images  # noqa: E402

WORDS = "a photo photography of cat dog tree sky red blue on the in with house road car".split()


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    """(folder, processor, model): a tiny random BLIP captioner and its processor saved together."""
    root = tmp_path_factory.mktemp("blip")
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    tokenizer = BertTokenizer(str(root / "vocab.txt"))
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=2, sep_token_id=3,
                         pad_token_id=0, eos_token_id=3),
        projection_dim=32)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():                       # large random weights, so the caption depends on the image
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    folder = root / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, processor, model


def direct_caption(processor, model, path: Path, prompt=None) -> str:
    """BLIP's own captioning of the file, read by PIL: the transformers example's steps."""
    image = Image.open(path).convert("RGB")
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        return processor.decode(model.generate(**inputs, max_new_tokens=8)[0], skip_special_tokens=True).strip()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_captions_equal_blips_own_and_the_cache_only_adds_new_images(blip, tmp_path, monkeypatch, capsys):
    folder, processor, model = blip
    gt = write_images(tmp_path / "data" / "noisy" / "GT", 3, (40, 48))
    out = tmp_path / "captions.tsv"
    got = cap.caption_folder(gt, folder, out, batch_size=2, max_new_tokens=8)
    expected = {p.name: direct_caption(processor, model, p) for p in sorted(gt.iterdir())}
    assert got == expected
    assert len(set(expected.values())) > 1                                  # the images are told apart
    first = lines(out)
    assert first == [f"{name}\t{caption}" for name, caption in expected.items()]

    # a 4th image in a sub-folder: only it is captioned, the old lines stay as they were
    write_images(tmp_path / "more", 4, (40, 48), seed=1)
    (gt / "sub").mkdir()
    shutil.copy(tmp_path / "more" / "img3.png", gt / "sub" / "img3.png")
    new_line = f"img3.png\t{direct_caption(processor, model, gt / 'sub' / 'img3.png')}"
    seen = []
    generate = BlipForConditionalGeneration.generate

    def spy(self, pixel_values=None, **kwargs):
        seen.append(pixel_values.shape[0])
        return generate(self, pixel_values=pixel_values, **kwargs)
    monkeypatch.setattr(BlipForConditionalGeneration, "generate", spy)
    assert cap.main([str(gt), "--model", str(folder), "--out", str(out), "--max-new-tokens", "8"]) == 0
    assert "4 images: 1 captioned, 3 cached" in capsys.readouterr().out
    assert seen == [1]
    now = lines(out)
    assert now[:3] == first and len(now) == 4
    assert now[3] == new_line

    # nothing new: the model is not run; an unfinished last line (a stopped run) is captioned again
    assert cap.main([str(gt), "--model", str(folder), "--out", str(out), "--max-new-tokens", "8"]) == 0
    assert seen == [1]
    out.write_text("\n".join(now[:3]) + "\nimg3.png\tthe ca", encoding="utf-8")
    assert cap.caption_folder(gt, folder, out, max_new_tokens=8)["img3.png"] == now[3].split("\t")[1]
    assert lines(out) == now and seen == [1, 1]

    # what DegradationTypeDataset reads: captions keyed by the LQ file name
    write_images(tmp_path / "data" / "noisy" / "LQ", 3, (40, 48))
    dataset = DegradationTypeDataset(dataroot=str(tmp_path / "data"), captions=str(out))
    assert {Path(item["lq_path"]).name: item["caption"] for item in dataset} == expected
    synth = DegradationTypeDataset(dataroot_gt=str(gt), captions=str(out),       # GT + registered degradations
                                   degradations={"noisy": {"type": "GaussianNoise", "sigma": 10}})
    assert len(synth) == 4 and {Path(synth[i]["lq_path"]).name: synth[i]["caption"] for i in range(4)} == \
        dict(line.split("\t") for line in now)


def test_prompt_and_caption_cleaning(blip, tmp_path, monkeypatch):
    folder, processor, model = blip
    gt = write_images(tmp_path / "gt", 2, (40, 48))
    out = tmp_path / "nested" / "captions.tsv"
    got = cap.caption_folder(gt, folder, out, max_new_tokens=8, prompt="a photo of")
    assert got == {p.name: direct_caption(processor, model, p, "a photo of") for p in sorted(gt.iterdir())}
    assert all(c.startswith("a photo of") for c in got.values())
    monkeypatch.setattr(processor.__class__, "batch_decode", lambda self, tokens, **kw: ["two\tcats\non a  mat"])
    write_images(tmp_path / "gt2", 1, (40, 48))
    got = cap.caption_folder(tmp_path / "gt2", folder, tmp_path / "other.tsv", max_new_tokens=4)
    assert got == {"img0.png": "two cats on a mat"}
    assert lines(tmp_path / "other.tsv") == ["img0.png\ttwo cats on a mat"]


def test_bad_inputs_are_named_and_written_captions_kept(blip, tmp_path, capsys):
    folder, _, _ = blip
    gt = write_images(tmp_path / "gt", 3, (40, 48))
    out = tmp_path / "captions.tsv"
    missing = tmp_path / "no_such_model"
    with pytest.raises(DataError, match="no_such_model"):
        cap.caption_folder(gt, missing, out)
    assert cap.main([str(gt), "--model", str(missing), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("osir.daclip.captions: error: captioning model folder not found") and str(missing) in err
    assert not out.exists()
    with pytest.raises(DataError, match=r"'.*gt' is not a transformers model folder \(no config.json\)"):
        cap.caption_folder(gt, gt, out)

    (gt / "zz_broken.png").write_bytes(b"not a png")                       # sorted last: 3 captions first
    assert cap.main([str(gt), "--model", str(folder), "--out", str(out), "--batch-size", "1",
                     "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert "zz_broken.png" in err and "cannot decode image" in err
    assert [line.split("\t")[0] for line in lines(out)] == ["img0.png", "img1.png", "img2.png"]

    (gt / "zz_broken.png").unlink()
    (gt / "sub").mkdir()
    shutil.copy(gt / "img1.png", gt / "sub" / "img1.png")
    with pytest.raises(DataError, match=r"two images named 'img1.png'.*gt/img1.png.*sub/img1.png"):
        cap.caption_folder(gt, folder, out)
    out.write_text("img0.png no tab\n", encoding="utf-8")
    with pytest.raises(DataError, match="captions.tsv' line 1"):
        cap.read_captions(out)
