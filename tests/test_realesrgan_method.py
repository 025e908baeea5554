"""Real-ESRNet / Real-ESRGAN baseline: official layout, a few training iterations on tiny data."""
import math

import pytest
import torch
import torchvision

from osir.engine.trainer import Trainer
from osir.methods.realesrgan import RealESRGAN
from osir.core.options import load_options
from osir.core.registry import OptionsError
from tests.conftest import tiny_options, write_images, write_yaml

TINY_G = {"type": "RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 4, "scale": 4}


def test_official_params_ema_file_loads_and_computes_the_same(tmp_path):
    from basicsr.archs.rrdbnet_arch import RRDBNet
    torch.manual_seed(0)
    release = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=4, scale=4)
    torch.save({"params_ema": release.state_dict()}, tmp_path / "RealESRGAN_x4plus.pth")
    method = RealESRGAN(network=TINY_G)
    method.load_pretrained("g", str(tmp_path / "RealESRGAN_x4plus.pth"))
    lq = torch.rand(1, 3, 12, 10)
    assert torch.equal(method.restore({"lq": lq}), release.eval()(lq)) and method.restore({"lq": lq}).shape == (1, 3, 48, 40)


def test_full_size_generator_matches_the_release_layout():
    """RealESRGAN_x4plus.pth's params_ema: 23 RRDBs of 3 dense blocks (5 convs, growth 32) between
    conv_first and two nearest-upsampling convs (conv k of a dense block sees 64 + (k - 1) * 32
    channels); 702 tensors, 16,697,987 parameters (the release)."""
    ours = RealESRGAN(network={**TINY_G, "num_feat": 64, "num_block": 23, "num_grow_ch": 32}).networks["g"]
    shapes = {k: list(v.shape) for k, v in ours.state_dict().items()}
    assert len(shapes) == 702 and sum(p.numel() for p in ours.parameters()) == 16_697_987
    expected = {"conv_first.weight": [64, 3, 3, 3], "body.0.rdb1.conv1.weight": [32, 64, 3, 3],
                "body.0.rdb1.conv5.weight": [64, 192, 3, 3], "body.22.rdb3.conv5.bias": [64],
                "conv_body.weight": [64, 64, 3, 3], "conv_up1.weight": [64, 64, 3, 3], "conv_up2.weight": [64, 64, 3, 3],
                "conv_hr.weight": [64, 64, 3, 3], "conv_last.weight": [3, 64, 3, 3]}
    assert {k: shapes[k] for k in expected} == expected


def _options(tmp_path, **method):
    opt = tiny_options(tmp_path, **{"train.total_iter": 2, "val.freq": 100})
    opt["method"] = {"type": "RealESRGAN", "network": TINY_G, **method}
    opt["degradation"] = {"type": "RealESRGANDegradation", "preset": "realesrgan_x4"}
    train = opt["datasets"]["train"]
    train.pop("degradation")
    train.update(dataroot_gt=str(write_images(tmp_path / "big", 2, (96, 96))), gt_size=96)
    opt["datasets"]["val"] = {"type": "PairedImageDataset", "dataroot_gt": str(tmp_path / "vgt"),
                              "dataroot_lq": str(tmp_path / "vlq"), "scale": 4}
    write_images(tmp_path / "vgt", 1, (32, 32), scale=4, lq_folder=tmp_path / "vlq")
    return opt


def test_realesrnet_trains_a_few_iterations(tmp_path):
    trainer = Trainer(load_options(write_yaml(tmp_path / "o.yml", _options(tmp_path))))
    before = {k: v.clone() for k, v in trainer.method.net("g").state_dict().items()}
    result = trainer.train()
    after = trainer.method.net("g").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert math.isfinite(result["train"]["l_pix"]) and math.isfinite(result["val"]["val"]["psnr"]["restored"])


def test_realesrgan_trains_generator_and_discriminator(tmp_path):
    vgg = tmp_path / "vgg19.pth"
    torch.save(torchvision.models.vgg19().state_dict(), vgg)
    opt = _options(tmp_path, perceptual_weight=1.0, gan_weight=0.1, vgg_path=str(vgg),
                   discriminator={"type": "UNetDiscriminatorSN", "num_in_ch": 3, "num_feat": 8})
    opt["train"]["optimizers"]["d"] = {"type": "Adam", "lr": 1e-4}
    trainer = Trainer(load_options(write_yaml(tmp_path / "o.yml", opt)))
    d_before = {k: v.clone() for k, v in trainer.method.networks["d"].state_dict().items()}
    result = trainer.train()
    assert {"l_pix", "l_percep", "l_g_gan", "l_d_real", "l_d_fake"} <= set(result["train"])
    d_after = trainer.accelerator.unwrap_model(trainer.method.networks["d"]).state_dict()
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before)


def test_missing_vgg_or_discriminator_is_an_options_error(tmp_path):
    with pytest.raises(OptionsError, match=r"method\.vgg_path: the perceptual loss needs a local VGG19 file"):
        RealESRGAN(network=TINY_G, perceptual_weight=1.0)
    with pytest.raises(FileNotFoundError, match=r"weights file not found: '.*nope\.pth'"):
        RealESRGAN(network=TINY_G, perceptual_weight=1.0, vgg_path=str(tmp_path / "nope.pth"))
    with pytest.raises(OptionsError, match=r"method\.discriminator: gan_weight > 0 needs a discriminator"):
        RealESRGAN(network=TINY_G, gan_weight=0.1)


def test_the_discriminator_sees_the_unsharpened_gt_as_real(tmp_path):
    """train_realesrgan_x4plus.yml: l1_gt_usm and percep_gt_usm true, gan_gt_usm false."""
    from accelerate import Accelerator
    from tests.conftest import reset_accelerate
    reset_accelerate()
    method = RealESRGAN(network=TINY_G, gan_weight=0.1,
                        discriminator={"type": "UNetDiscriminatorSN", "num_in_ch": 3, "num_feat": 4})
    acc = Accelerator(cpu=True)
    method.setup(acc.device)
    optimizers = {n: acc.prepare(torch.optim.Adam(m.parameters(), lr=1e-4)) for n, m in method.networks.items()}
    method.attach(acc, optimizers)
    seen = []
    method.networks["d"].register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    gt = torch.rand(1, 3, 32, 32)
    batch = {"lq": torch.rand(1, 3, 8, 8), "gt": gt, "gt_unsharpened": gt * 0.5}
    method.training_step(batch)
    assert any(torch.equal(x, batch["gt_unsharpened"]) for x in seen)
    assert not any(torch.equal(x, gt) for x in seen)
    method.gan_gt_usm = True
    seen.clear()
    method.training_step(batch)
    assert any(torch.equal(x, gt) for x in seen)
