"""Registry behaviour, a method added from outside the package, and tiled restoration."""
import pytest
import torch

from osir.engine.trainer import Trainer
from osir.inference import restore_tiled
from osir.options import load_options
from osir.registry import OptionsError, Registry
from tests.conftest import tiny_options, write_yaml


def test_registry_lists_names_and_refuses_duplicates():
    reg = Registry("thing", "things")
    reg.register(dict, name="a")
    with pytest.raises(OptionsError, match=r"x\.type: unknown thing 'b'; registered: a"):
        reg.get("b", "x.type")
    with pytest.raises(KeyError, match="registered twice"):
        reg.register(list, name="a")
    assert reg.build({"type": "a", "k": 1}) == {"k": 1}


def test_a_method_registered_through_imports_trains_and_validates(tmp_path):
    opt = tiny_options(tmp_path, **{"train.total_iter": 20, "val.freq": 100, "train.ema": {}})
    opt["imports"] = ["tests.plugins.l1_method"]
    opt["method"] = {"type": "PlainL1", "network": {"type": "TinyConvNet", "channels": 8}}
    opt["train"]["optimizers"]["g"]["lr"] = 3e-3
    trainer = Trainer(load_options(write_yaml(tmp_path / "o.yml", opt)))
    result = trainer.train()
    psnr = result["val"]["val"]["psnr"]
    assert psnr["restored"] > psnr["input"] - 1.0      # starts at identity + noise; training keeps it sane
    with pytest.raises(OptionsError, match=r"method\.network\.channel: unknown key \(did you mean 'channels'\?\)"):
        load_options(write_yaml(tmp_path / "p.yml", {**opt, "method": {"type": "PlainL1",
                                                                     "network": {"type": "TinyConvNet", "channel": 8}}}))


@pytest.mark.parametrize("scale", [1, 2])
def test_tiled_restoration_matches_whole_image_for_a_local_operator(scale):
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 45, 70)

    def pointwise(x):  # a per-pixel operator: tiling must not change it at all
        up = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
        return up.sqrt() * 0.5 + 0.1

    whole = pointwise(lq)
    tiled = restore_tiled(pointwise, lq, tile=16, overlap=6, scale=scale, multiple=4)
    assert tiled.shape == whole.shape and torch.allclose(tiled, whole, atol=1e-6)
    const = restore_tiled(lambda x: torch.ones_like(x), lq, tile=16, overlap=6)
    assert torch.allclose(const, torch.ones_like(lq))
    assert restore_tiled(pointwise, lq, tile=None, scale=scale).shape == whole.shape
