"""Prompt extractors through the registry."""
import pytest

from osir.data.io import DataError
from osir.registry import PROMPTS
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
