"""OSEDiff at inference on tiny random SD-architecture components: tiled against whole-image
restoration, merged against unmerged LoRA, the prompts kept in metrics.json."""
import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from osir.methods.osediff.method import OSEDiff
from osir.methods.osediff.tiny import build_tiny_sd
from osir.core.registry import PROMPTS, OptionsError
from tests.conftest import write_images, write_yaml


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd21_tiny")


def trained_looking(method: OSEDiff, seed: int = 0) -> OSEDiff:
    """Seeded LoRA A and non-zero B (as after training) and a moved conv_in, so two instances are
    the same model and merging has something to merge."""
    torch.manual_seed(seed)
    for module in [*method.networks["unet"].modules(), *method.networks["vae"].modules()]:
        if hasattr(module, "lora_B"):
            for adapter in module.lora_B:
                torch.nn.init.normal_(module.lora_A[adapter].weight, std=0.2)
                torch.nn.init.normal_(module.lora_B[adapter].weight, std=0.05)
    with torch.no_grad():
        method.networks["unet"].gen_conv_in.conv_in.base_layer.weight.mul_(1.1)
    return method


def astronaut_lq(size: int) -> dict:
    img = torch.from_numpy(skimage.data.astronaut().copy()).permute(2, 0, 1)[None].float() / 255
    return {"lq": F.interpolate(img, size=(size, size), mode="area"), "lq_path": ["astronaut.png"],
            "name": ["astronaut"]}


def restore(method, batch):
    with torch.no_grad():
        return method.restore(batch, generator=torch.Generator().manual_seed(0))


def generate(method, up):
    with torch.no_grad():
        return method.generate(up, method.encode_prompts([""]), generator=torch.Generator().manual_seed(0))[0]


def test_shared_statistics_vae_tiles_give_the_whole_image_output(sd_folder):
    """VAE tiles below the image (encoder 96 px, decoder 48 latents: 2 x 2 tiles) with the UNet whole: the
    shared-statistics tiled VAE reproduces the whole-image output (osir.methods.osediff.tiled_vae)."""
    whole = trained_looking(OSEDiff(sd_path=str(sd_folder), tiling=None))
    whole.setup(torch.device("cpu"))
    up = F.interpolate(astronaut_lq(32)["lq"], scale_factor=4, mode="bicubic").clamp(0, 1)   # 128 x 128
    tiled = trained_looking(OSEDiff(sd_path=str(sd_folder), tiling={"vae_encoder": 96, "vae_decoder": 48,
                                                                    "latent": 1000}))
    tiled.setup(torch.device("cpu"))
    assert tiled.tiles_internally
    reference, out = generate(whole, up), generate(tiled, up)
    assert out.shape == reference.shape == (1, 3, 128, 128)
    assert (out - reference).abs().max() <= 1e-4


def test_latent_tiles_agree_with_the_whole_image_away_from_tile_seams(sd_folder):
    """Latent tiles of 32 with overlap 8 (Gaussian-weighted, as released) stay within the tolerance
    measured for these random networks, whose attention and GroupNorms see one latent tile."""
    whole = trained_looking(OSEDiff(sd_path=str(sd_folder), tiling=None))
    whole.setup(torch.device("cpu"))
    up = F.interpolate(astronaut_lq(32)["lq"], scale_factor=4, mode="bicubic").clamp(0, 1)   # latent 64 x 64
    tiled = trained_looking(OSEDiff(sd_path=str(sd_folder), tiling={"latent": 32, "latent_overlap": 8}))
    tiled.setup(torch.device("cpu"))
    difference = (generate(tiled, up) - generate(whole, up)).abs()[..., 8:-8, 8:-8].mean().item()
    assert 0 < difference <= 0.1


def test_tiling_defaults_are_the_releases_and_options_are_checked(sd_folder):
    """The release's test script: VAE tiles of 1024 px (encoder) and 224 latents (decoder), each padded
    by 32 px / 11 latents a side, an image running whole up to tile + 2 x padding; latent tiles 96 / 32."""
    from osir.methods.osediff.method import _check_tiling
    assert OSEDiff(sd_path=str(sd_folder)).tiling == {"vae_encoder": 1024 + 2 * 32, "vae_decoder": 224 + 2 * 11,
                                                      "latent": 96, "latent_overlap": 32}
    with pytest.raises(OptionsError, match=r"method\.tiling: unknown key\(s\) \['vae'\]; allowed"):
        _check_tiling({"vae": 512})
    with pytest.raises(OptionsError, match=r"method\.tiling\.vae_decoder: expected a positive integer, got 0"):
        _check_tiling({"vae_decoder": 0})
    with pytest.raises(OptionsError, match=r"method\.tiling\.latent_overlap: 64 must be an integer in \[0, latent"):
        _check_tiling({"latent": 64, "latent_overlap": 64})
    with pytest.raises(OptionsError, match=r"method\.process_size: expected an integer of at least scale \(4\)"):
        OSEDiff(sd_path=str(sd_folder), process_size=2)


def test_merged_lora_restores_the_same_image_with_plain_modules(sd_folder):
    from peft.tuners.tuners_utils import BaseTunerLayer
    method = trained_looking(OSEDiff(sd_path=str(sd_folder), tiling=None, merge_lora=True))
    method.setup(torch.device("cpu"))
    up = F.interpolate(astronaut_lq(24)["lq"], scale_factor=4, mode="bicubic").clamp(0, 1)
    before = generate(method, up)
    method.prepare_inference()
    assert not any(isinstance(m, BaseTunerLayer) for net in method.networks.values() for m in net.modules())
    assert not any("lora_" in n for n, _ in method.networks["unet"].named_parameters())
    after = generate(method, up)
    assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()
    with pytest.raises(RuntimeError, match="merge_lora merged the generator"):
        with method.unet_as("frozen"):
            pass


def test_test_py_keeps_each_images_prompt_in_metrics_json(tmp_path, sd_folder):
    from osir import test as test_script
    from osir.core.options import load_options
    lq = write_images(tmp_path / "lq", 2, (12, 12))
    gt = write_images(tmp_path / "gt", 2, (48, 48))
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    for i in range(2):
        (prompts / f"img{i}.txt").write_text(f"a photo number {i}")
    opt = {"name": "osediff_prompts", "seed": 0,
           "method": {"type": "OSEDiff", "sd_path": str(sd_folder), "merge_lora": True, "process_size": 48,
                      "prompt": {"type": "TextFilePrompt", "folder": str(prompts)}},
           "datasets": {"real": {"type": "PairedImageDataset", "dataroot_gt": str(gt), "dataroot_lq": str(lq),
                                 "scale": 4, "batch_size": 2}},
           "metrics": {"psnr": {"type": "psnr"}}, "path": {"results_root": str(tmp_path / "results")}}
    summaries = test_script.run(load_options(write_yaml(tmp_path / "t.yml", opt)))
    saved = json.loads((tmp_path / "results" / "osediff_prompts" / "real" / "metrics.json").read_text())
    assert [(r["image"], r["prompt"]) for r in saved["images"]] == [("img0.png", "a photo number 0"),
                                                                     ("img1.png", "a photo number 1")]
    assert set(saved["mean"]) == {"psnr"} and summaries["real"]["count"] == 2


def release_script_input(image: Image.Image, process_size: int = 512, upscale: int = 4) -> Image.Image:
    """The release's test script (test_osediff.py) on an LR, step by step with PIL: an LR with a side
    under process_size // upscale enlarged (PIL's default filter, sizes int(...)), x upscale, then
    LANCZOS to sides cut down to multiples of 8."""
    width, height = image.size
    if width < process_size // upscale or height < process_size // upscale:
        factor = (process_size // upscale) / min(width, height)
        image = image.resize((int(factor * width), int(factor * height)))
    image = image.resize((image.width * upscale, image.height * upscale))
    return image.resize((image.width - image.width % 8, image.height - image.height % 8), Image.LANCZOS)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """torchvision's ToTensor of an 8-bit RGB image, batched."""
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float().div(255)


def photo(path: Path, width: int, height: int) -> Path:
    Image.fromarray(skimage.data.astronaut()[100:100 + height, 150:150 + width]).save(path)
    return path


@pytest.mark.parametrize("width, height", [(129, 131), (45, 71), (49, 60), (140, 132)])
def test_the_sr_input_is_the_release_scripts_pil_chain(tmp_path, width, height):
    """129 x 131: x4 is cut to 512 x 520 by LANCZOS (not padded); 45 x 71: enlarged by 128 / 45 to
    128 x int(201.96) = 201 first; 49 x 60: to int(127.99999999999999) = 127 x 156 (the script's float
    truncation), so x4 is 508 and cut to 504; 140 x 132: x4 only."""
    from osir.methods.osediff.components import release_sr_input
    image = Image.open(photo(tmp_path / "lr.png", width, height)).convert("RGB")
    expected = np.asarray(release_script_input(image))
    lq = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
    assert np.array_equal(release_sr_input(lq, 4).numpy()[0].transpose(1, 2, 0), expected)
    assert expected.shape == {(129, 131): (520, 512, 3), (45, 71): (800, 512, 3), (49, 60): (624, 504, 3),
                             (140, 132): (528, 560, 3)}[
        (width, height)]


def test_restore_reads_the_release_input_and_returns_the_nominal_size(tmp_path, sd_folder):
    """With process_size 96 a 15 x 21 LR is enlarged by 24 / 15 to 24 x 33, x4 to 96 x 132 and cut to
    96 x 128: the prompt extractor and the network see that image (PIL's own pixels); the output is
    resized back to 4 x the LR (60 x 84), on the 8-bit grid."""
    path = photo(tmp_path / "lr.png", 15, 21)
    method = OSEDiff(sd_path=str(sd_folder), tiling=None, process_size=96)
    method.setup(torch.device("cpu"))
    seen = []
    method.prompt = lambda batch: seen.append(batch["lq"]) or [""] * len(batch["lq"])   # records its input
    image = Image.open(path).convert("RGB")
    out = restore(method, {"lq": to_tensor(image), "lq_path": [str(path)], "name": ["lr"]})
    assert torch.equal(seen[0], to_tensor(release_script_input(image, process_size=96)))
    assert seen[0].shape[-2:] == (128, 96) and out.shape == (1, 3, 84, 60)
    assert torch.equal(out * 255, (out * 255).round())


def release_adain(target: torch.Tensor, source: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The release's AdaIN colour fix on ToTensor images: per-channel mean and std (unbiased variance
    + eps, square root) of the target replaced by the source's."""
    def mean_std(x):
        flat = x.reshape(*x.shape[:2], -1)
        return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]
    (t_mean, t_std), (s_mean, s_std) = mean_std(target), mean_std(source)
    return (target - t_mean) / t_std * s_std + s_mean


def release_wavelet(target: torch.Tensor, source: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """The release's wavelet colour fix: the target's details (summed level by level) on the source's
    low frequencies, each level a [1 2 1]^T [1 2 1] / 16 blur with dilation 2^i and replicate padding."""
    kernel = (torch.tensor([1.0, 2.0, 1.0])[:, None] * torch.tensor([1.0, 2.0, 1.0]) / 16).expand(3, 1, 3, 3)

    def split(x):
        high = torch.zeros_like(x)
        for i in range(levels):
            low = F.conv2d(F.pad(x, (2 ** i,) * 4, mode="replicate"), kernel, groups=3, dilation=2 ** i)
            high += x - low
            x = low
        return high, x
    return split(target)[0] + split(source)[1]


RELEASE_FIX = {"adain": release_adain, "wavelet": release_wavelet}


@pytest.mark.parametrize("colour", ["adain", "wavelet", "none"])
def test_restore_gives_the_release_scripts_bytes(tmp_path, sd_folder, colour):
    """The release turns the decoded image into 8 bits with ToPILImage (mul(255).byte(): truncation),
    colour-fixes that 8-bit image against the SR input and truncates again.  osir's output, through the
    shared writer's rounding conversion, is exactly those bytes."""
    from torchvision.transforms import ToPILImage
    from osir.data.io import tensor2uint8
    path = photo(tmp_path / "lr.png", 40, 36)
    method = trained_looking(OSEDiff(sd_path=str(sd_folder), tiling=None, process_size=128,
                                     color_correction=colour))
    method.setup(torch.device("cpu"))
    generated, network = [], method.generate

    def recorded(up, *args, **kwargs):                          # records the network's input and output
        generated.append((up, network(up, *args, **kwargs)))
        return generated[-1][1]
    method.generate = recorded
    image = Image.open(path).convert("RGB")
    out = restore(method, {"lq": to_tensor(image), "lq_path": [str(path)], "name": ["lr"]})
    source = release_script_input(image, process_size=128)                        # 160 x 144, not enlarged
    assert torch.equal(generated[0][0], to_tensor(source))
    decoded = generated[0][1][0][0] * 0.5 + 0.5                     # the network's image restore received
    expected = ToPILImage()(decoded)
    if colour != "none":
        expected = ToPILImage()(RELEASE_FIX[colour](to_tensor(expected), to_tensor(source))[0].clamp(0, 1))
    expected = np.asarray(expected)
    assert np.array_equal(tensor2uint8(out[0]), expected)
    rounded = (decoded.clamp(0, 1) * 255).round()
    if colour != "none":
        rounded = (RELEASE_FIX[colour](rounded[None] / 255, to_tensor(source))[0].clamp(0, 1) * 255).round()
    assert (rounded.permute(1, 2, 0).numpy() != expected).mean() > 0.2      # rounding would give other bytes


def test_training_batches_upsample_within_one_grey_level_of_pil(tmp_path, sd_folder):
    """The training path's torch bicubic (a = -0.5, clipped, 8-bit) is within one grey level of PIL's;
    torch's default bicubic (a = -0.75) is several levels away, so the check tells the kernels apart."""
    path = photo(tmp_path / "crop.png", 27, 31)                                      # odd sizes
    image = Image.open(path).convert("RGB")
    lq = to_tensor(image)
    method = OSEDiff(sd_path=str(sd_folder), tiling=None)
    reference = to_tensor(image.resize((image.width * 4, image.height * 4), Image.BICUBIC))
    assert (method.upscale(lq) - reference).abs().max() <= 1 / 255 + 1e-6
    other = F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    assert (other - reference).abs().max() > 3 / 255


def test_the_prompt_extractor_reads_the_sr_input_without_the_inference_padding(sd_folder):
    """The inference layer pads the LQ (22 -> 24); restore cuts it back to ``lq_size``: the prompt
    extractor reads PIL's x4 of the LQ itself, and the output is 4 x the LQ."""
    from osir.inference.tiling import restore_padded
    method = OSEDiff(sd_path=str(sd_folder), tiling=None, process_size=88)
    method.setup(torch.device("cpu"))
    seen = []
    method.prompt = lambda batch: seen.append(batch["lq"]) or [""] * len(batch["lq"])   # records its input
    batch = astronaut_lq(22)
    with torch.no_grad():
        out = restore_padded(lambda b: method.restore(b), batch, scale=4, multiple=8)
    lq8 = Image.fromarray((batch["lq"][0] * 255).round().byte().permute(1, 2, 0).numpy())
    assert out.shape[-2:] == (88, 88) and torch.equal(seen[0], to_tensor(lq8.resize((88, 88), Image.BICUBIC)))


def test_osediff_test_options_with_the_dape_prompt_run_end_to_end(tmp_path, sd_folder):
    """options/test/osediff.yml's prompt stage with DAPE (tiny tagger in the release layouts): every
    output's prompt in metrics.json is 'tags, extra,' with the tags of the release's SR input (PIL's
    x4, cut to multiples of 8 by LANCZOS: 25 x 27 -> 96 x 104), not of the LR."""
    from osir import test as test_script
    from osir.core.options import load_options
    from tests.test_dape import TINY_HEAD, TINY_SWIN, release_files
    release_files(tmp_path)
    lq = write_images(tmp_path / "lq", 2, (25, 27))
    gt = write_images(tmp_path / "gt", 2, (100, 108))              # NIQE needs 96 x 96
    prompt = {"type": "dape", "ram_path": str(tmp_path / "ram.pth"), "dape_path": str(tmp_path / "dape.pth"),
              "extra": "", "swin": TINY_SWIN, "head": TINY_HEAD}
    opt = {"_base_": str(Path(__file__).parents[1] / "options" / "test" / "osediff.yml"), "name": "dape_e2e",
           "method": {"sd_path": str(sd_folder), "release_path": None, "prompt": prompt, "process_size": 100},
           "datasets": {"RealSR": {"dataroot_gt": str(gt), "dataroot_lq": str(lq)}},
           "inference": {"mixed_precision": "no"},
           "path": {"results_root": str(tmp_path / "results")}}
    test_script.run(load_options(write_yaml(tmp_path / "t.yml", opt)))
    saved = json.loads((tmp_path / "results" / "dape_e2e" / "RealSR" / "metrics.json").read_text())
    prompts = [r["prompt"] for r in saved["images"]]
    extractor = PROMPTS.build(prompt)
    assert all(p.endswith(", ,") for p in prompts)
    for i, saved_prompt in enumerate(prompts):
        image = Image.open(lq / f"img{i}.png").convert("RGB")
        up = to_tensor(release_script_input(image, process_size=100))
        assert up.shape[-2:] == (96, 104)
        assert saved_prompt == extractor({"lq": up})[0] != extractor({"lq": to_tensor(image)})[0]
    assert saved["method"]["prompt"]["type"] == "dape"
