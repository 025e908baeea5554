"""Registry behaviour, a method added from outside the package, and tiled restoration."""
import pytest
import torch

from osir.engine.trainer import Trainer
from osir.core.method import Method
from osir.inference import restore_image, restore_tiled
from osir.core.options import load_options
from osir.core.registry import OptionsError, Registry
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
    from tests.test_engine import losses_of
    opt = tiny_options(tmp_path, **{"train.total_iter": 20, "val.freq": 100, "train.ema": {}, "logger.print_freq": 1})
    opt["imports"] = ["tests.plugins.l1_method"]
    opt["method"] = {"type": "PlainL1", "network": {"type": "TinyConvNet", "channels": 8}}
    opt["train"]["optimizers"]["g"]["lr"] = 3e-3
    trainer = Trainer(load_options(write_yaml(tmp_path / "o.yml", opt)))
    result = trainer.train()
    losses = losses_of(tmp_path / "experiments" / "tiny", "l_pix")
    assert len(losses) == 20 and sum(losses[-5:]) < sum(losses[:5])        # it learns
    assert "psnr" in result["val"]["val"] and "input" in result["val"]["val"]["psnr"]
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


class _UNetLike(torch.nn.Module):
    """Down 3x by stride-2 convs, up 3x: only sizes that are multiples of 8 come back whole."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.down = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, 2, 1) for _ in range(3)])
        self.up = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(3, 3, 3, 1, 1))
                                        for _ in range(3)])

    def forward(self, x):
        return x + self.up(self.down(x))


class _Padded(Method):
    size_multiple, pad_mode = 8, "reflect"

    def __init__(self, net):
        super().__init__()
        self.networks["g"] = net

    def restore(self, batch, generator=None):
        return self.net("g")(batch["lq"])


def test_inference_pads_to_the_size_multiple_and_crops_back():
    net = _UNetLike()
    lq = torch.rand(1, 3, 45, 70)
    with pytest.raises(RuntimeError):
        net(lq)                                           # the raw network refuses this size
    out = restore_image(_Padded(net), {"lq": lq})
    expected = net(torch.nn.functional.pad(lq, (0, 2, 0, 3), mode="reflect"))[..., :45, :70]
    assert out.shape == lq.shape and torch.equal(out, expected)
    tiny = torch.rand(1, 3, 3, 5)                         # too small to reflect-pad to 8: replicate
    expected = net(torch.nn.functional.pad(tiny, (0, 3, 0, 5), mode="replicate"))[..., :3, :5]
    assert torch.equal(restore_image(_Padded(net), {"lq": tiny}), expected)


def test_tiling_a_network_with_a_receptive_field_stays_close_to_the_whole_image():
    """Three 3x3 convolutions (receptive radius 3 <= overlap / 4): tiles of 32 with 16 px overlaps
    give the whole-image output up to float rounding; without overlaps the seams show."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)])
    lq = torch.rand(1, 3, 80, 96)
    with torch.no_grad():
        whole = net(lq)
        tiled = restore_tiled(lambda b: net(b["lq"]), {"lq": lq}, tile=32, overlap=16)
        no_overlap = restore_tiled(lambda b: net(b["lq"]), {"lq": lq}, tile=32, overlap=0)
    assert float((tiled - whole).abs().max()) < 1e-6
    assert float((no_overlap - whole).abs().max()) > 1e-2                    # seams
    wide = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(8)])   # radius 8 > 16 / 4
    with torch.no_grad():
        error = float((restore_tiled(lambda b: wide(b["lq"]), {"lq": lq}, 32, 16) - wide(lq)).abs().max())
    assert 1e-6 < error < 1e-2


def test_methods_that_tile_internally_get_the_whole_image():
    seen = []

    class Latent(_Padded):
        tiles_internally = True

        def restore(self, batch, generator=None):
            seen.append(tuple(batch["lq"].shape[-2:]))
            return batch["lq"]
    restore_image(Latent(torch.nn.Identity()), {"lq": torch.rand(1, 3, 64, 64)}, tile=16)
    assert seen == [(64, 64)]


def test_tiles_start_on_the_size_multiple():
    from osir.inference.tiling import _starts
    for length, tile, stride, multiple in ((70, 16, 12, 4), (45, 16, 8, 8), (100, 32, 24, 8)):
        starts = _starts(length, tile, stride, multiple)
        assert all(s % multiple == 0 for s in starts) and starts[-1] + tile >= length
        assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
    net = _UNetLike()          # downsamples by 8: a tile off the 8-grid would see another sampling phase
    lq = torch.rand(1, 3, 45, 70)
    with torch.no_grad():
        tiled = restore_image(_Padded(net), {"lq": lq}, tile=32, overlap=8)
    assert tiled.shape == lq.shape and torch.isfinite(tiled).all()
