"""Refusion: the release layouts (built from the key/shape manifests), the NAFNet's padding and
modulation, the compression model and its stage-1 loss, stage 2's stage-1 checkpoint, the two-stage
latent pipeline end to end with batch size 1, bokeh lens conditioning and the extra losses option."""
import json

import pytest
import torch
import torch.nn.functional as F

from osir.core.checkpoint import CheckpointError
from osir.engine.trainer import Trainer
from osir.methods.refusion.arch import CompressionUNet, ConditionalNAFNet, NAFBlock
from osir.methods.refusion.method import LatentRefusion, Refusion, RefusionCompression
from osir.core.options import load_options
from osir.core.registry import OptionsError
from tests.conftest import FIXTURES, set_keys, write_images, write_yaml

LAYOUTS = FIXTURES / "checkpoints"            # copied from shared/checkpoints
TINY_NAF = {"type": "ConditionalNAFNet", "img_channel": 3, "width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1,
            "dec_blk_nums": [1, 1]}
TINY_L = {"type": "CompressionUNet", "in_ch": 3, "out_ch": 3, "ch": 2, "ch_mult": [1, 2, 2, 2], "embed_dim": 4}


def release_state(name: str, seed: int = 0) -> tuple[dict, dict]:
    """A random state dict in the release layout ``name`` (keys and shapes from the manifest)."""
    layout = json.loads((LAYOUTS / f"{name}.json").read_text())
    gen = torch.Generator().manual_seed(seed)
    return layout, {k: 0.02 * torch.randn(shape, generator=gen) for k, shape in layout["keys"].items()}


@pytest.mark.parametrize("name, network", [
    ("refusion_conditional_nafnet_w64", lambda c: ConditionalNAFNet(**c)),
    ("refusion_latent_nafnet_haze", lambda c: ConditionalNAFNet(**c, global_skip=True)),
    ("refusion_latent_unet_haze", lambda c: CompressionUNet(**c))])
def test_release_layouts_have_the_manifests_keys_shapes_and_parameter_counts(name, network):
    layout = json.loads((LAYOUTS / f"{name}.json").read_text())
    net = network(layout["constructor"])
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == layout["keys"]
    assert sum(p.numel() for p in net.parameters()) == layout["num_parameters"]


def test_release_pth_files_load_strictly_and_others_are_refused(tmp_path):
    """State dicts built from the manifests, saved as the release's plain *.pth, load through the
    method's loader (strictly: the original's test options load non-strictly); a file with one key too
    many or one shape wrong is refused naming the difference."""
    _, state = release_state("refusion_conditional_nafnet_w64")
    torch.save(state, tmp_path / "refusion.pth")
    method = Refusion()
    method.load_pretrained("g", str(tmp_path / "refusion.pth"))
    loaded = method.networks["g"].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    state["extra.weight"] = torch.zeros(1)
    state["ending.bias"] = torch.zeros(4)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: extra\.weight; 1 shape mismatches: ending\.bias: "
                                              r"checkpoint \(4,\) vs network \(3,\)"):
        method.load_pretrained("g", str(tmp_path / "other.pth"))


def test_nafnet_zero_pads_to_its_multiple_and_crops_back():
    """The output on a 13 x 11 input equals the output on the input zero-padded to 16 x 12 (multiple 4), cropped;
    reflect padding gives other values everywhere (the channel attention pools the padded area)."""
    torch.manual_seed(0)
    net = ConditionalNAFNet(**{k: v for k, v in TINY_NAF.items() if k != "type"}).eval()
    with torch.no_grad():
        for p in net.parameters():                  # beta / gamma start at 0: give the blocks effect
            p.add_(0.1 * torch.randn_like(p))
        x, mu, t = torch.rand(2, 3, 13, 11), torch.rand(2, 3, 13, 11), torch.tensor([3, 40])
        out = net(x, mu, t)
        padded = net(F.pad(x, (0, 1, 0, 3)), F.pad(mu, (0, 1, 0, 3)), t)[..., :13, :11]
        reflected = net(F.pad(x, (0, 1, 0, 3), mode="reflect"), F.pad(mu, (0, 1, 0, 3), mode="reflect"), t)
    assert out.shape == (2, 3, 13, 11) and net.size_multiple == 4
    assert torch.allclose(out, padded, atol=1e-6)
    assert (reflected[..., :13, :11] - out).abs().min() > 0        # every value differs


def test_nafnet_block_starts_as_identity_and_modulates_with_one_plus_scale():
    torch.manual_seed(0)
    block = NAFBlock(4, time_dim=8)
    x, temb = torch.randn(2, 4, 5, 5), torch.randn(2, 8)
    assert torch.equal(block(x, temb), x)                            # beta = gamma = 0
    with torch.no_grad():
        block.beta.fill_(1.0)
        block.mlp[1].weight.zero_()
        block.mlp[1].bias.copy_(torch.tensor([0.5] * 4 + [-1.0] * 4 + [0.0] * 8))   # shift_att 0.5, scale_att -1
    # scale -1 removes LN(x): the attention branch sees the constant shift only, whatever x is
    branch = lambda inp: block(inp, temb) - inp                      # noqa: E731
    assert torch.allclose(branch(x), branch(torch.randn(2, 4, 5, 5)), atol=1e-5)


def test_compression_model_round_trip_sizes_and_pure_decoding():
    torch.manual_seed(0)
    net = CompressionUNet(**{k: v for k, v in TINY_L.items() if k != "type"}).eval()
    x = torch.rand(1, 3, 100, 72)                    # reflect-padded to 112 x 80, latent 14 x 10
    with torch.no_grad():
        z, skips = net.encode(x)
        assert z.shape == (1, 4, 14, 10) and net.downscale == 8 and net.pad_multiple == 16
        first = net.decode(z, skips, x.shape[-2:])
        net.encode(torch.rand(1, 3, 48, 64))         # the original would now crop to 48 x 64
        assert torch.equal(net.decode(z, skips, x.shape[-2:]), first) and first.shape == x.shape
        assert net.decode(z, skips).shape == (1, 3, 112, 80)
    # without gradients the upsampling convs run per output phase and the blocks in place: same values
    assert torch.allclose(net.decode(z, skips, x.shape[-2:]), first, atol=1e-5)


def test_compression_decoder_ends_with_final_conv_of_x_plus_the_first_skip():
    """The release's UNet.decode ends with final_conv(x + h0), h0 = init_conv(padded image), the first
    skip.  A state dict in the release layout (from the manifest) whose decoder and post-latent conv are
    zero leaves x = 0 before the final conv, so the output is final_conv(init_conv(x)) -- which the final
    conv alone (a constant: its bias) cannot explain."""
    layout, state = release_state("refusion_latent_unet_haze", seed=3)
    for key in state:
        if key.startswith(("decoder.", "post_latent_conv.")):
            state[key] = torch.zeros_like(state[key])
    net = CompressionUNet(**layout["constructor"]).eval()
    net.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 30, 36, generator=torch.Generator().manual_seed(4))     # reflect-padded to 32 x 48
    padded = F.pad(x, (0, 12, 0, 2), mode="reflect")
    h0 = F.conv2d(padded, state["init_conv.weight"], padding=1)
    expected = F.conv2d(h0, state["final_conv.weight"], state["final_conv.bias"], padding=1)
    with torch.no_grad():
        z, skips = net.encode(x)
        out = net.decode(z, skips)
    assert out.shape == (1, 3, 32, 48) and expected.std() > 1e-3
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert len(skips) == 2 * 4 + 1 and torch.allclose(skips[0], h0, atol=1e-6)
    # the skips of another image carry its h0: the LQ's skips decode the GT's latent through the LQ's h0
    with torch.no_grad():
        other = net.decode(net.encode(torch.rand(1, 3, 30, 36))[0], skips)
    torch.testing.assert_close(other, expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"decode: expected 9 skip features \(h0, then two per level\).*got 8"):
        net.decode(z, skips[1:])


def test_stage1_swaps_lq_and_gt_per_sample():
    """use_swap as released: each sample's LQ and GT trade places with probability 0.5, independently
    (its dataset's augmentation), not the whole batch at once."""
    method = RefusionCompression(network=TINY_L, swap_prob=0.5)
    n = 400
    lq = torch.arange(1.0, n + 1).view(n, 1, 1, 1).expand(n, 3, 4, 4)
    gt = -lq
    torch.manual_seed(0)
    a, b = method.swapped(lq, gt)
    assert torch.equal(a, -b)                                        # pairs stay pairs
    swapped = (a[:, 0, 0, 0] < 0)
    assert torch.equal(a[swapped], gt[swapped]) and torch.equal(a[~swapped], lq[~swapped])
    assert 150 < int(swapped.sum()) < 250                            # ~ n / 2 of one batch, not 0 or n
    never, always = RefusionCompression(network=TINY_L), RefusionCompression(network=TINY_L, swap_prob=1.0)
    assert all(torch.equal(u, v) for u, v in zip(never.swapped(lq, gt), (lq, gt)))
    assert all(torch.equal(u, v) for u, v in zip(always.swapped(lq, gt), (gt, lq)))


def test_shipped_options_follow_the_release_files():
    """The numbers the option files state as the release's, read from its files: pixel training
    (codes/config/*/options/train/refusion.yml) 700k iterations at batch 4; low light (spatial-entropy-loss,
    options/train/entropy-refusion.yml) the entropy loss alone at weight 1.0, a 5-level NAFNet, AdamW 1e-4
    without weight decay, cosine to 1e-6 over 500k, batch 8; latent stage 1 (train_haze.yml) use_swap
    per sample; latent stage 2 (nasde.yml) 400k; bokeh stage 1 (train_bokeh.yml) batch 16 of 256 px with
    the dataset's swap, stage 2 1M iterations."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "options"
    for name in ("refusion/_base.yml", "refusion/deraining.yml", "refusion/shadow_removal.yml", "refusion.yml"):
        opt = load_options(root / name)
        assert (opt["train"]["total_iter"], opt["train"]["scheduler"]["T_max"],
                opt["datasets"]["train"]["batch_size"], opt["datasets"]["train"]["gt_size"]) == (700000, 700000, 4, 128)
        assert opt["train"]["optimizers"]["g"]["type"] == "Lion" and opt["train"]["optimizers"]["g"]["lr"] == 4e-5
    low = load_options(root / "refusion/lowlight.yml")
    m, t = low["method"], low["train"]
    assert m["loss_weight"] == 0 and m["network"]["enc_blk_nums"] == [1, 1, 1, 1, 28]
    assert m["network"]["dec_blk_nums"] == [1, 1, 1, 1, 1] and m["network"]["width"] == 64
    entropy = m["extra_losses"]["entropy"]
    assert (entropy["weight"], entropy["variant"], entropy["distance"], entropy["bins"]) == (1.0, "release", "hellinger", 32)
    g = t["optimizers"]["g"]
    assert (g["type"], g["lr"], g["betas"], g["weight_decay"]) == ("AdamW", 1e-4, [0.9, 0.99], 0.0)
    assert (t["total_iter"], t["scheduler"]["T_max"], t["scheduler"]["eta_min"]) == (500000, 500000, 1e-6)
    assert low["datasets"]["train"]["batch_size"] == 8 and m["sampler"] == "posterior"
    assert load_options(root / "refusion/latent_stage1.yml")["method"]["swap_prob"] == 0.5
    stage2 = load_options(root / "refusion/latent_stage2.yml")["train"]
    assert (stage2["total_iter"], stage2["scheduler"]["T_max"]) == (400000, 400000)
    bokeh1 = load_options(root / "refusion/bokeh_stage1.yml")
    assert bokeh1["datasets"]["train"]["use_swap"] is True and bokeh1["method"]["swap_prob"] == 0.0
    assert (bokeh1["datasets"]["train"]["batch_size"], bokeh1["datasets"]["train"]["gt_size"]) == (16, 256)
    assert load_options(root / "refusion/bokeh_stage2.yml")["train"]["total_iter"] == 1000000


def test_stage1_loss_terms_on_known_tensors():
    """L1(dec(z_LQ, h_LQ), LQ), L1(dec(z_GT, h_LQ), GT) -- the GT's latent with the LQ's skips -- and
    |mean z_LQ - mean LQ| + |std z_LQ - 0.5 std LQ| (unbiased std, as torch's default)."""
    torch.manual_seed(0)
    method = RefusionCompression(network=TINY_L)
    net = method.networks["l"]
    lq, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        terms = method.losses(lq, gt)
        z_lq, h_lq = net.encode(lq)
        z_gt, h_gt = net.encode(gt)
        rep = (net.decode(z_gt, h_lq) - gt).abs().mean()
        rep_own_skips = (net.decode(z_gt, h_gt) - gt).abs().mean()
        rec = (net.decode(z_lq, h_lq) - lq).abs().mean()
    zl, ln = z_lq.double().flatten().numpy(), lq.double().flatten().numpy()
    reg = abs(zl.mean() - ln.mean()) + abs(zl.std(ddof=1) - 0.5 * ln.std(ddof=1))
    assert float(terms["rec"]) == pytest.approx(float(rec), abs=1e-6)
    assert float(terms["rep"]) == pytest.approx(float(rep), abs=1e-6) and abs(float(rep - rep_own_skips)) > 1e-4
    assert float(terms["reg"]) == pytest.approx(reg, abs=1e-5)


def test_stage2_refuses_a_missing_or_mismatched_stage1_checkpoint(tmp_path):
    with pytest.raises(OptionsError, match="method.compression_path: latent Refusion needs the stage-1"):
        LatentRefusion(network={**TINY_NAF, "img_channel": 4}, compression=TINY_L)
    with pytest.raises(OptionsError, match=r"method.compression_path: stage-1 checkpoint not found: '.*nope\.pth'"):
        LatentRefusion(network={**TINY_NAF, "img_channel": 4}, compression=TINY_L, compression_path=str(tmp_path / "nope.pth"))
    _, state = release_state("refusion_latent_unet_haze")           # the release's x8 model, not the tiny one
    torch.save(state, tmp_path / "latent-dehazing.pth")
    with pytest.raises(CheckpointError, match=r"method.compression_path: .*latent-dehazing\.pth' does not fit "
                                              r"CompressionUNet: .*shape mismatches"):
        LatentRefusion(network={**TINY_NAF, "img_channel": 4}, compression=TINY_L,
                       compression_path=str(tmp_path / "latent-dehazing.pth"))
    method = LatentRefusion(network={**TINY_NAF, "img_channel": 8, "global_skip": True},
                            compression_path=str(tmp_path / "latent-dehazing.pth"))   # the release file as it is
    assert torch.equal(method.networks["l"].final_conv.weight, state["final_conv.weight"])
    assert not any(p.requires_grad for p in method.networks["l"].parameters())


def latent_options(root, stage: int, **overrides):
    gt = write_images(root / "gt", 3, (48, 48))
    lq = write_images(root / "lq", 3, (48, 48), seed=1)
    method = ({"type": "RefusionCompression", "network": TINY_L} if stage == 1 else
              {"type": "LatentRefusion", "network": {**TINY_NAF, "img_channel": 4}, "compression": TINY_L,
               "compression_path": str(root / "experiments" / "stage1" / "models" / "net_l_4.safetensors"),
               "T": 20, "sample_steps": 4})
    opt = {"name": f"stage{stage}", "seed": 0, "method": method,
           "datasets": {"train": {"type": "PairedImageDataset", "dataroot_gt": str(gt), "dataroot_lq": str(lq),
                                  "gt_size": 32, "batch_size": 1},
                        "val": {"type": "PairedImageDataset", "dataroot_gt": str(gt), "dataroot_lq": str(lq)}},
           "train": {"total_iter": 4, "optimizers": {("l" if stage == 1 else "g"): {"type": "Lion", "lr": 1e-4}}},
           "val": {"freq": 4, "max_images": 1}, "metrics": {"psnr": {"type": "psnr"}},
           "logger": {"print_freq": 2, "checkpoint_freq": 4, "tensorboard": False, "progress_bar": False},
           "path": {"experiments_root": str(root / "experiments"), "results_root": str(root / "results"),
                    "tb_logger_root": str(root / "tb")}}
    return set_keys(opt, overrides)


def test_two_stage_latent_pipeline_trains_with_batch_size_1_and_restores_whole_images(tmp_path):
    from osir import test as test_script
    stage1 = load_options(write_yaml(tmp_path / "s1.yml", latent_options(tmp_path, 1)))
    Trainer(stage1).train()
    weights = tmp_path / "experiments" / "stage1" / "models" / "net_l_4.safetensors"
    assert weights.is_file()
    stage2 = load_options(write_yaml(tmp_path / "s2.yml", latent_options(tmp_path, 2)))
    results = Trainer(stage2).train()
    assert "psnr" in results["val"]["val"]
    test_opt = latent_options(tmp_path, 2)
    test_opt.update(name="stage2_test", datasets={"whole": {"type": "PairedImageDataset",
                                                           "dataroot_gt": str(tmp_path / "gt"),
                                                           "dataroot_lq": str(tmp_path / "lq")}},
                    path={**test_opt["path"], "pretrained": {
                        "g": str(tmp_path / "experiments" / "stage2" / "models" / "net_g_4.safetensors")}})
    summary = test_script.run(load_options(write_yaml(tmp_path / "t.yml", test_opt)))
    assert summary["whole"]["count"] == 3
    assert (tmp_path / "results" / "stage2_test" / "whole").is_dir()


def test_lens_info_conditions_the_bokeh_network():
    torch.manual_seed(0)
    net = ConditionalNAFNet(**{**{k: v for k, v in TINY_NAF.items() if k != "type"}, "lens_info": True}).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        x, mu = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
        a = net(x, mu, 5, lens_info=torch.tensor([[18.0, 160.0, 35.0]]))
        b = net(x, mu, 5, lens_info=torch.tensor([[160.0, 18.0, 35.0]]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="lens_info"):
        net(x, mu, 5)
    method = Refusion(network={**TINY_NAF, "lens_info": True}, condition_keys=["lens_info"])
    with pytest.raises(OptionsError, match=r"method.condition_keys: the batch has no \['lens_info'\]"):
        method.network_inputs({"lq": x})


def test_extra_losses_join_or_replace_the_matching_distance():
    torch.manual_seed(0)
    method = Refusion(network=TINY_NAF, T=20, extra_losses={"entropy": {"type": "SpatialEntropyLoss", "weight": 0.5}})
    gt = torch.rand(2, 3, 16, 16)
    loss, logs = method.objective(method.networks["g"], gt, gt + 0.1 * torch.randn_like(gt), {})
    assert set(logs) == {"l_ml", "l_entropy"}
    assert float(loss) == pytest.approx(logs["l_ml"] + 0.5 * logs["l_entropy"], rel=1e-5)
    only = Refusion(network=TINY_NAF, T=20, loss_weight=0, extra_losses={"entropy": {"type": "SpatialEntropyLoss"}})
    assert set(only.objective(only.networks["g"], gt, gt, {})[1]) == {"l_entropy"}
    with pytest.raises(OptionsError, match="method.loss_weight: 0 leaves no loss"):
        Refusion(network=TINY_NAF, loss_weight=0)


@pytest.mark.parametrize("name", ["refusion.yml", "refusion_demo.yml", "refusion/lowlight.yml", "refusion/deraining.yml",
                                  "refusion/latent_stage1.yml", "refusion/latent_stage2.yml",
                                  "refusion/bokeh_stage1.yml", "refusion/bokeh_stage2.yml"])
def test_shipped_training_files_build_their_method_optimisers_and_emas(tmp_path, name):
    """Each file as a user runs it (the stage-2 files with a stage-1 file of their compression model):
    the method, the optimisers over its parameter groups and the EMAs build."""
    from pathlib import Path
    from safetensors.torch import save_file
    from osir.engine.trainer import build_emas, build_method, build_optimizers
    from osir.core.registry import ARCHS
    root = Path(__file__).resolve().parents[1] / "options"
    opt = load_options(root / name)
    if opt["method"]["type"] == "LatentRefusion":
        save_file(ARCHS.build(opt["method"]["compression"]).state_dict(), str(tmp_path / "stage1.safetensors"))
        opt = load_options(root / name, [f"method.compression_path={tmp_path / 'stage1.safetensors'}"])
    method = build_method(opt)
    optimizers, trained = build_optimizers(method, opt["train"]["optimizers"])
    build_emas(method, opt["train"]["ema"], trained)
    assert set(optimizers) == set(opt["train"]["optimizers"])
    assert all(not p.requires_grad for n, net in method.networks.items() if n not in trained for p in net.parameters())
