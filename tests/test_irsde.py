"""IR-SDE network, official checkpoint layout, training step and restoration."""
import json
from pathlib import Path

import pytest
import torch

from osir.core.checkpoint import CheckpointError
from osir.methods.irsde import IRSDE, ConditionalUNet
from tests.conftest import FIXTURES

LAYOUT = FIXTURES / "checkpoints" / "irsde_conditional_unet_nf64_depth4.json"   # copied from shared/checkpoints
OPTIONS = Path(__file__).resolve().parents[1] / "options"


def test_official_layout_keys_shapes_and_parameter_count():
    ref = json.loads(LAYOUT.read_text())
    net = ConditionalUNet(**ref["constructor"])
    state = net.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == ref["keys"]
    assert sum(p.numel() for p in net.parameters()) == ref["num_parameters"]


def tiny_method(**kw):
    spec = {"type": "ConditionalUNet", "nf": 4, "depth": 2}
    return IRSDE(network=spec, max_sigma=25, T=20, sample_steps=5, **kw)


def test_official_pth_round_trip_and_refusal(tmp_path):
    """A plain state dict saved as the official *.pth loads through the method's loader and computes
    the same function; one with other keys or shapes is refused, naming what differs."""
    torch.manual_seed(0)
    source = ConditionalUNet(nf=4, depth=2)
    torch.save(source.state_dict(), tmp_path / "official.pth")
    method = tiny_method()
    method.load_pretrained("g", str(tmp_path / "official.pth"))
    x, mu = torch.rand(1, 3, 13, 11), torch.rand(1, 3, 13, 11)
    assert torch.equal(method.networks["g"](x, mu, 7), source(x, mu, 7))
    bad = dict(source.state_dict())
    bad["final_conv.weight"] = torch.zeros(3, 4, 5, 5)
    del bad["init_conv.weight"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"1 missing keys: init_conv\.weight; 1 shape mismatches: final_conv\.weight: "
                                              r"checkpoint \(3, 4, 5, 5\) vs network \(3, 4, 3, 3\)"):
        tiny_method().load_pretrained("g", str(tmp_path / "bad.pth"))


def test_pickled_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))
    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        tiny_method().load_pretrained("g", str(tmp_path / "evil.pth"))


def test_network_pads_to_its_multiple_and_crops_back():
    net = ConditionalUNet(nf=4, depth=3, attn_levels=[0, 3])
    out = net(torch.rand(2, 3, 17, 9), torch.rand(2, 3, 17, 9), torch.tensor([3, 5]))
    assert out.shape == (2, 3, 17, 9) and net.size_multiple == 8   # 2^depth, as the official check_image_size


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    from accelerate import Accelerator
    torch.manual_seed(0)
    method = IRSDE(network={"type": "ConditionalUNet", "nf": 8, "depth": 2}, max_sigma=25, T=20)
    net = method.networks["g"]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    method.attach(Accelerator(cpu=True), {"g": opt})
    gt = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4), size=16, mode="bilinear")   # smooth images
    batch = {"gt": gt, "lq": gt + 0.1 * torch.randn_like(gt)}

    def eval_loss():
        torch.manual_seed(123)   # the same t and noise as the training steps: a fixed batch
        with torch.no_grad():
            return float(method.matching_loss(net, batch["gt"], batch["lq"]))

    before = eval_loss()
    for _ in range(100):
        torch.manual_seed(123)
        logged = method.training_step(batch)["l_ml"]
    assert eval_loss() < 0.5 * before and logged < before


def test_restore_is_seeded_and_upscales_mu():
    method = tiny_method(upscale=2)
    lq = torch.rand(1, 3, 8, 8)
    a = method.restore({"lq": lq}, generator=torch.Generator().manual_seed(1))
    b = method.restore({"lq": lq}, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 3, 16, 16) and torch.equal(a, b)


def test_padding_matches_the_official_network_on_a_rain100h_size():
    """Rain100H's 481x321: the output equals the network run on the input reflect-padded (bottom/right)
    to a multiple of 2^depth = 16, then cropped (the official check_image_size); padding only to
    2^(depth-1) = 8, as osir did before, gives another output (linear attention is global)."""
    torch.manual_seed(0)
    net = ConditionalUNet(nf=4, depth=4).eval()
    x, mu = torch.rand(1, 3, 321, 481), torch.rand(1, 3, 321, 481)
    with torch.no_grad():
        out = net(x, mu, 5)
        cat = torch.cat([x - mu, mu], dim=1)
        padded = torch.nn.functional.pad(cat, (0, 15, 0, 15), mode="reflect")     # 496 x 336
        xp, mup = padded[:, 3:] + padded[:, :3], padded[:, 3:]
        expected = net(xp, mup, 5)[..., :321, :481]
        by_8 = torch.nn.functional.pad(cat, (0, 7, 0, 7), mode="reflect")          # 488 x 328
        old = net(by_8[:, 3:] + by_8[:, :3], by_8[:, 3:], 5)
    assert out.shape == (1, 3, 321, 481) and torch.allclose(out, expected, atol=1e-6)
    assert net.size_multiple == 16
    # 488 x 328 is no multiple of 16: the network pads it again, to 496 x 336 with other contents
    assert not torch.allclose(old[..., :321, :481], out, atol=1e-4)


def test_restoration_leaves_the_padding_to_the_network_at_every_step():
    """The release pads the state inside every network call; padding the LQ once before sampling would
    let the padded border evolve on its own.  So the inference layer adds no padding for IR-SDE."""
    from osir.inference import restore_image
    torch.manual_seed(0)
    method = tiny_method()
    lq = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        a = restore_image(method, {"lq": lq}, generator=torch.Generator().manual_seed(4))
        b = method.restore({"lq": lq}, generator=torch.Generator().manual_seed(4))
    assert method.size_multiple == 1 and a.shape == lq.shape and torch.equal(a, b)


def test_restore_adds_the_last_step_noise_unless_the_option_disables_it():
    """The release's reverse SDE adds sigma_1 sqrt(dt) z on its last step too (issue 21, point 10): with the
    same weights and draws, the default output minus the ``last_step_noise: false`` output is exactly
    -sqrt(2 lambda^2 (thetabar_4 - thetabar_0)) z_last (steps 20, 16, ..., 4, 0), z_last the 6th draw of the
    generator (x_T's noise first, then one per step)."""
    torch.manual_seed(0)
    noisy = tiny_method(sampler="sde")
    quiet = tiny_method(sampler="sde", last_step_noise=False)
    quiet.networks["g"].load_state_dict(noisy.networks["g"].state_dict())
    lq = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        a = noisy.restore({"lq": lq}, generator=torch.Generator().manual_seed(2))
        b = quiet.restore({"lq": lq}, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    z_last = [torch.randn(lq.shape, generator=g) for _ in range(6)][-1]
    sde = noisy.sde
    assert noisy.timesteps == [20, 16, 12, 8, 4, 0]
    std = (2 * sde.lam ** 2 * float(sde.theta_bar[4] - sde.theta_bar[0])) ** 0.5
    assert torch.allclose(a - b, -std * z_last, rtol=0, atol=1e-6)


@pytest.mark.parametrize("path, key, expected", [
    ("irsde/denoising.yml", "sampler", "ode"),        # the release's denoising test code calls reverse_ode
    ("irsde/deraining.yml", "last_step_noise", True),  # the release's reverse_sde: noise on every step
])
def test_option_files_sample_as_the_release(path, key, expected):
    from osir.core.options import load_options
    assert load_options(OPTIONS / path)["method"][key] == expected


@pytest.mark.parametrize("path", ["irsde/deraining.yml", "refusion/deraining.yml", "refusion/latent_stage2.yml",
                                  "daclip_uir.yml"])
def test_last_step_noise_is_a_typed_option_of_every_sde_method(path):
    from osir.core.options import load_options
    from osir.core.registry import OptionsError
    assert load_options(OPTIONS / path, ["method.last_step_noise=false"])["method"]["last_step_noise"] is False
    with pytest.raises(OptionsError, match="method.last_step_noise"):
        load_options(OPTIONS / path, ["method.last_step_noise=sometimes"])


def test_refusion_passes_last_step_noise_to_the_sampler():
    from osir.methods.refusion.method import Refusion
    net = {"type": "ConditionalNAFNet", "width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1]}
    assert Refusion(network=net, last_step_noise=False).sampler_extras == {"last_step_noise": False}
    assert Refusion(network=net).sampler_extras == {}
