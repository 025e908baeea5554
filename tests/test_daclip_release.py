"""DA-CLIP / universal / wild IR against the release's own steps (issue 21, points 12-15): the CLIP
preprocessing at restoration time is torchvision on the 8-bit PIL image (the release datasets'
``clip_transform``), the wild-IR U-Net pads to 2^depth, ``logit_scale`` is clamped after every step, and the
stage-1 images are open_clip's training transform (the release's ``RandomResizedCrop`` call) of each
whole 8-bit LQ."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import write_images

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)      # the release's Normalize constants
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TINY = dict(embed_dim=16, vision_cfg=dict(layers=3, width=32, head_width=16, patch_size=8, image_size=32),
            text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=2))


def release_clip_transform(np_image: np.ndarray, resolution: int = 224) -> torch.Tensor:
    """The calls of the release's ``clip_transform`` (universal-image-restoration/data): H x W x 3 float32
    in [0, 1] -> (x * 255).astype(uint8) -> PIL -> Resize(bicubic), CenterCrop, ToTensor, Normalize."""
    from PIL import Image
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor
    pil_image = Image.fromarray((np_image * 255).astype(np.uint8))
    return Compose([Resize(resolution, interpolation=InterpolationMode.BICUBIC), CenterCrop(resolution),
                    ToTensor(), Normalize(OPENAI_MEAN, OPENAI_STD)])(pil_image)


@pytest.mark.parametrize("h, w", [(67, 53), (53, 67), (225, 300), (224, 227)])
def test_clip_preprocess_is_the_releases_torchvision_steps_on_the_8bit_image(h, w):
    """Float images that are not 8-bit values (so truncation to 8 bits matters) on odd sizes: osir's
    preprocessing equals the release's calls exactly.  225 x 300: long side int(224 * 300 / 225) = 298
    (truncated); 224 x 227: left offset int(round(1.5)) = 2; 67 x 53: top offset int(round(29.5)) = 30."""
    from osir.methods.daclip.method import clip_preprocess
    images = np.random.default_rng(h * w).random((2, h, w, 3), dtype=np.float32)
    expected = torch.stack([release_clip_transform(a) for a in images])
    got = clip_preprocess(torch.from_numpy(images).permute(0, 3, 1, 2), 224)
    assert got.shape == (2, 3, 224, 224) and torch.equal(got, expected)


def test_clip_preprocess_geometry_by_hand_with_pil():
    """The 67 x 53 case spelt out with PIL alone: short side 53 -> 224, long side int(224 * 67 / 53) = 283,
    PIL bicubic on the truncated 8-bit image, rows 30..253 (offset int(round(59 / 2)) = 30)."""
    from PIL import Image

    from osir.methods.daclip.method import clip_preprocess
    image = np.random.default_rng(0).random((67, 53, 3), dtype=np.float32)
    pil = Image.fromarray((image * 255).astype(np.uint8)).resize((224, 283), Image.BICUBIC).crop((0, 30, 224, 254))
    by_hand = torch.from_numpy(np.asarray(pil).astype(np.float32) / 255).permute(2, 0, 1)
    by_hand = (by_hand - torch.tensor(OPENAI_MEAN)[:, None, None]) / torch.tensor(OPENAI_STD)[:, None, None]
    got = clip_preprocess(torch.from_numpy(image).permute(2, 0, 1)[None], 224)[0]
    torch.testing.assert_close(got, by_hand, rtol=0, atol=1e-6)


def test_wild_ir_unet_pads_to_a_multiple_of_2_to_the_depth_as_the_release():
    """The release's check_image_size pads to 2^depth (16 for the four-level wild-IR network), the
    half-resolution stride included: a 48 x 48 input is not padded, and a 40 x 44 input gives exactly the
    crop of the network's output on its reflect-padded 48 x 48 version."""
    from osir.methods.daclip.unet import DACLIPUNet
    torch.manual_seed(0)
    net = DACLIPUNet(nf=16, ch_mult=[1, 2, 2, 2], context_dim=8, use_degra_context=False, scale=0.5).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "proj_out" in name:
                p.normal_(std=0.1)
    assert net.size_multiple == 16
    seen = []
    net.init_conv.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    x, mu, content = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48), torch.randn(1, 8)
    with torch.no_grad():
        assert net(x, mu, 5, content=content).shape == (1, 3, 48, 48)
        assert seen == [(48, 48)]
        small, small_mu = x[..., :40, :44], mu[..., :40, :44]
        out = net(small, small_mu, 5, content=content)
        padded = net(F.pad(small, (0, 4, 0, 8), mode="reflect"), F.pad(small_mu, (0, 4, 0, 8), mode="reflect"), 5,
                     content=content)
    assert seen[1:] == [(48, 48), (48, 48)]
    torch.testing.assert_close(out, padded[..., :40, :44], rtol=0, atol=1e-6)


def _tiny_method(chunk=None):
    from accelerate import Accelerator

    from osir.methods.daclip.method import DACLIPMethod
    torch.manual_seed(0)
    method = DACLIPMethod(clip_config=TINY, gradient_cache_chunk=chunk)
    method.networks["daclip"].train()
    return method, Accelerator(cpu=True)


@pytest.mark.parametrize("chunk", [None, 2])
def test_logit_scale_is_clamped_to_0_ln100_after_every_step(chunk):
    """The release's training loop clamps logit_scale to [0, ln 100] after each step (with and without
    gradient caching); a value inside the range is left alone (lr 0: only the clamp moves it)."""
    batch = {"lq": torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
             "degradation_type": ["noisy", "hazy", "noisy", "snowy"], "caption": [f"a photo {i}" for i in range(4)]}
    for start, expected in ((7.0, math.log(100)), (-1.0, 0.0), (2.5, 2.5)):
        method, acc = _tiny_method(chunk)
        net = method.networks["daclip"]
        with torch.no_grad():
            net.logit_scale.fill_(start)
        method.attach(acc, {"controller": torch.optim.SGD(method.parameter_groups()["controller"], lr=0.0)})
        method.training_step(batch)
        assert net.logit_scale.item() == pytest.approx(expected, abs=1e-6), (start, chunk)


def test_stage1_dataset_gives_open_clips_training_transform_of_the_whole_8bit_lq(tmp_path):
    """clip_train_size: the item is the release's stage-1 image -- RandomResizedCrop(224, scale (0.9, 1.0),
    bicubic), ToTensor, Normalize on the PIL image of the file -- drawn from torch seeded with the sample's
    seed (the global generator untouched); no lq / gt (whole images of any size batch together)."""
    from PIL import Image
    from torchvision.transforms import Compose, InterpolationMode, Normalize, RandomResizedCrop, ToTensor

    from osir.methods.daclip.data import DegradationTypeDataset
    write_images(tmp_path / "mix" / "noisy" / "LQ", 1, (67, 53))
    write_images(tmp_path / "mix" / "hazy" / "LQ", 1, (96, 100), seed=1)
    ds = DegradationTypeDataset(dataroot=str(tmp_path / "mix"), clip_train_size=224)
    release = Compose([RandomResizedCrop(224, scale=(0.9, 1.0), interpolation=InterpolationMode.BICUBIC),
                       lambda image: image.convert("RGB"), ToTensor(), Normalize(OPENAI_MEAN, OPENAI_STD)])
    torch.manual_seed(99)
    state = torch.get_rng_state()
    for index, seed in ((0, 1234), (0, 77), (1, 1234), (1, 3)):
        item = ds[(index, seed)]
        assert torch.equal(torch.get_rng_state(), state)
        torch.manual_seed(seed)
        expected = release(Image.open(item["lq_path"]))
        torch.set_rng_state(state)
        assert "lq" not in item and "gt" not in item
        assert item["lq_clip"].shape == (3, 224, 224) and torch.equal(item["lq_clip"], expected), (index, seed)
    assert not torch.equal(ds[(0, 1234)]["lq_clip"], ds[(0, 77)]["lq_clip"])          # index 0: the 96 x 100 image


def test_stage1_training_takes_the_datasets_clip_view_and_names_a_size_mismatch():
    """A batch of lq_clip images (no lq) trains; lq_clip of another size than the CLIP's is one error
    naming the dataset key."""
    from osir.core.registry import OptionsError
    method, acc = _tiny_method()
    method.attach(acc, {"controller": torch.optim.SGD(method.parameter_groups()["controller"], lr=1e-3)})
    batch = {"lq_clip": torch.randn(4, 3, 32, 32), "degradation_type": ["noisy", "hazy", "noisy", "snowy"],
             "caption": [f"a photo {i}" for i in range(4)]}
    logs = method.training_step(batch)
    assert math.isfinite(logs["l_degradation"])
    with pytest.raises(OptionsError, match=r"datasets\.train\.clip_train_size: the dataset gives \(48, 48\)"):
        method.training_step({**batch, "lq_clip": torch.randn(4, 3, 48, 48)})
