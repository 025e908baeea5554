"""Prompt extractors through the registry."""
import pytest

from osir.data.io import DataError
from osir.core.registry import PROMPTS
from tests.conftest import write_images


def test_prompt_extractors(tmp_path):
    write_images(tmp_path / "lq" / "sub", 2, (16, 16))
    batch = {"lq_path": [str(tmp_path / "lq" / "sub" / "img0.png"), str(tmp_path / "lq" / "sub" / "img1.png")],
             "name": ["sub/img0", "sub/img1"]}
    assert PROMPTS.build({"type": "EmptyPrompt"})(batch) == ["", ""]
    assert PROMPTS.build({"type": "FixedPrompt", "prompt": "a cat"})(batch) == ["a cat", "a cat"]
    (tmp_path / "lq" / "sub" / "img0.txt").write_text("a red car\n")
    (tmp_path / "prompts" / "sub").mkdir(parents=True)
    for i in (0, 1):
        (tmp_path / "prompts" / "sub" / f"img{i}.txt").write_text(f"prompt {i}")
    assert PROMPTS.build({"type": "TextFilePrompt", "folder": str(tmp_path / "prompts")})(batch) == ["prompt 0", "prompt 1"]
    beside = PROMPTS.build({"type": "TextFilePrompt"})
    with pytest.raises(DataError, match=r"no prompt file '.*sub/img1\.txt' for image '.*sub/img1\.png'"):
        beside(batch)
    assert beside({k: v[:1] for k, v in batch.items()}) == ["a red car"]


def test_caption_prompt_from_a_local_blip_folder(tmp_path):
    """The captions of the LQ tensors are those the model gives the same images as 8-bit PIL images
    (the processor's usual input): the [0, 1] tensors are not rescaled a second time."""
    import numpy as np
    import torch
    from PIL import Image
    from tests.conftest import tiny_caption_folder
    from osir.core.registry import OptionsError
    folder = tiny_caption_folder(tmp_path / "blip")
    extractor = PROMPTS.build({"type": "CaptionPrompt", "model_path": str(folder), "max_new_tokens": 6,
                               "suffix": ", high quality"}, "method.prompt")
    torch.manual_seed(0)
    lq = (torch.rand(3, 3, 40, 48) * 255).round() / 255
    captions = extractor({"lq": lq, "lq_path": ["a", "b", "c"], "name": ["a", "b", "c"]})
    pil = [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for x in lq]
    ids = extractor.model.generate(**extractor.processor(images=pil, return_tensors="pt"), max_new_tokens=6,
                                   do_sample=False)
    expected = [c.strip() + ", high quality" for c in extractor.processor.batch_decode(ids, skip_special_tokens=True)]
    assert captions == expected and len(captions) == 3 and all(c.endswith(", high quality") for c in captions)
    with pytest.raises(OptionsError, match=r"method\.prompt.*model_path: '.*nowhere' is not a transformers model folder"):
        PROMPTS.build({"type": "CaptionPrompt", "model_path": str(tmp_path / "nowhere")}, "method.prompt")


def test_ram_prompt_gives_the_plain_ram_tags_of_the_chosen_image(tmp_path):
    """OSEDiff's training prompts as the release computes them: RAM's tags (no DAPE file) of the GT,
    joined by ', ' and nothing after them (the test-time prompt ends in ', <extra>,'); a tiny tagger
    in the release layout is loaded through the real loader and compared with the tagger it was saved from."""
    import torch
    from osir.methods.osediff import dape
    from osir.core.registry import OptionsError
    from tests.test_dape import TINY_HEAD, TINY_SWIN, release_files
    reference, _ = release_files(tmp_path)
    reference.eval()
    thresholds = torch.tensor([float(v) for v in dape.read_lines(dape.DATA / "ram_tag_list_threshold.txt")])
    tag_list = dape.read_lines(dape.DATA / "ram_tag_list.txt")
    torch.manual_seed(0)
    gt, lq = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        expected = [", ".join(tag_list[i] for i in torch.nonzero(row).flatten().tolist())
                    for row in torch.sigmoid(reference(reference.preprocess(gt))) > thresholds]
    spec = {"type": "ram", "ram_path": str(tmp_path / "ram.pth"), "swin": TINY_SWIN, "head": TINY_HEAD}
    prompts = PROMPTS.build(spec, "method.train_prompt")({"gt": gt, "lq": lq})
    assert prompts == expected and any(prompts) and not any(p.endswith(",") for p in prompts)
    assert PROMPTS.build({**spec, "image": "lq"})({"gt": gt, "lq": lq}) != prompts
    with pytest.raises(DataError, match=r"RAM prompts tag the batch's 'gt' image, which this batch does not hold"):
        PROMPTS.build(spec)({"lq": lq})
    with pytest.raises(OptionsError, match=r"method\.train_prompt: ram_path: RAM's tags need the RAM weights "
                                           r"\(ram_swin_large_14m\.pth\); none given"):
        PROMPTS.build({"type": "ram"}, "method.train_prompt")
    with pytest.raises(OptionsError, match=r"method\.train_prompt: ram_path: file not found: '.*nowhere\.pth'"):
        PROMPTS.build({"type": "ram", "ram_path": str(tmp_path / "nowhere.pth")}, "method.train_prompt")
