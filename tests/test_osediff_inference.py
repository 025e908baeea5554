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
from osir.registry import PROMPTS, OptionsError
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


def test_tiled_inference_agrees_with_the_whole_image_away_from_tile_seams(sd_folder):
    """Tiles as large as the image give the whole-image output exactly; smaller tiles (VAE tiles of
    128 px, latent tiles of 64 with overlap 16) stay within the tolerance measured for these random
    networks, whose GroupNorm statistics and attention are per tile (as in the original's tiled mode)."""
    whole = trained_looking(OSEDiff(sd_path=str(sd_folder), tiling=None, color_correction="none"))
    whole.setup(torch.device("cpu"))
    batch = astronaut_lq(64)                                        # -> 256 x 256 output, latent 128 x 128
    reference = restore(whole, batch)
    for tiling, tolerance in (({"vae": 256, "latent": 128}, 0.0), ({"vae": 128, "latent": 64, "latent_overlap": 16}, 0.1)):
        tiled = trained_looking(OSEDiff(sd_path=str(sd_folder), tiling=tiling, color_correction="none"))
        tiled.setup(torch.device("cpu"))
        assert tiled.tiles_internally
        out = restore(tiled, batch)
        assert out.shape == reference.shape == (1, 3, 256, 256)
        difference = (out - reference).abs()[..., 16:-16, 16:-16].mean().item()
        assert difference <= tolerance + 1e-6, (tiling, difference)


def test_tiling_options_are_checked():
    from osir.methods.osediff.method import _check_tiling
    with pytest.raises(OptionsError, match=r"method\.tiling: unknown key\(s\) \['size'\]; allowed"):
        _check_tiling({"size": 3}, 2, 2)
    with pytest.raises(OptionsError, match=r"method\.tiling\.vae: 100 pixels is not a positive multiple of 16"):
        _check_tiling({"vae": 100}, 2, 2)
    with pytest.raises(OptionsError, match=r"latent_overlap 64 in \[0, latent\)"):
        _check_tiling({"latent": 64, "latent_overlap": 64}, 2, 2)


def test_merged_lora_restores_the_same_image_with_plain_modules(sd_folder):
    from peft.tuners.tuners_utils import BaseTunerLayer
    method = trained_looking(OSEDiff(sd_path=str(sd_folder), tiling=None, merge_lora=True))
    method.setup(torch.device("cpu"))
    batch = astronaut_lq(24)
    before = restore(method, batch)
    method.prepare_inference()
    assert not any(isinstance(m, BaseTunerLayer) for net in method.networks.values() for m in net.modules())
    assert not any("lora_" in n for n, _ in method.networks["unet"].named_parameters())
    after = restore(method, batch)
    assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()
    with pytest.raises(RuntimeError, match="merge_lora merged the generator"):
        with method.unet_as("frozen"):
            pass


def test_test_py_keeps_each_images_prompt_in_metrics_json(tmp_path, sd_folder):
    from osir import test as test_script
    from osir.options import load_options
    lq = write_images(tmp_path / "lq", 2, (12, 12))
    gt = write_images(tmp_path / "gt", 2, (48, 48))
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    for i in range(2):
        (prompts / f"img{i}.txt").write_text(f"a photo number {i}")
    opt = {"name": "osediff_prompts", "seed": 0,
           "method": {"type": "OSEDiff", "sd_path": str(sd_folder), "merge_lora": True,
                      "prompt": {"type": "TextFilePrompt", "folder": str(prompts)}},
           "datasets": {"real": {"type": "PairedImageDataset", "dataroot_gt": str(gt), "dataroot_lq": str(lq),
                                 "scale": 4, "batch_size": 2}},
           "metrics": {"psnr": {"type": "psnr"}}, "path": {"results_root": str(tmp_path / "results")}}
    summaries = test_script.run(load_options(write_yaml(tmp_path / "t.yml", opt)))
    saved = json.loads((tmp_path / "results" / "osediff_prompts" / "real" / "metrics.json").read_text())
    assert [(r["image"], r["prompt"]) for r in saved["images"]] == [("img0.png", "a photo number 0"),
                                                                     ("img1.png", "a photo number 1")]
    assert set(saved["mean"]) == {"psnr"} and summaries["real"]["count"] == 2


def pil_bicubic_x4(path: Path) -> torch.Tensor:
    """The release test script's SR input: PIL's bicubic x4 of the 8-bit LQ."""
    image = Image.open(path).convert("RGB")
    up = np.asarray(image.resize((image.width * 4, image.height * 4), Image.BICUBIC))
    return torch.from_numpy(up.copy()).permute(2, 0, 1)[None].float() / 255


def test_the_lq_is_upsampled_with_pils_bicubic_as_released(tmp_path, sd_folder):
    """PIL's bicubic (a = -0.5, clipped, 8-bit) within one grey level; torch's default bicubic
    (a = -0.75) is several levels away, so the check tells the kernels apart."""
    path = tmp_path / "crop.png"
    Image.fromarray(skimage.data.astronaut()[100:131, 150:177]).save(path)          # odd sizes
    lq = torch.from_numpy(np.asarray(Image.open(path)).copy()).permute(2, 0, 1)[None].float() / 255
    method = OSEDiff(sd_path=str(sd_folder), tiling=None)
    reference = pil_bicubic_x4(path)
    assert (method.upscale(lq) - reference).abs().max() <= 1 / 255 + 1e-6
    other = F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    assert (other - reference).abs().max() > 3 / 255


def test_the_prompt_extractor_reads_the_upsampled_lq_without_the_inference_padding(sd_folder):
    from osir.inference.tiling import restore_padded
    method = OSEDiff(sd_path=str(sd_folder), tiling=None)
    method.setup(torch.device("cpu"))
    seen = []
    method.prompt = lambda batch: seen.append(batch["lq"]) or [""] * len(batch["lq"])   # records its input
    batch = astronaut_lq(22)
    with torch.no_grad():
        out = restore_padded(lambda b: method.restore(b), batch, scale=4, multiple=8)
    assert out.shape[-2:] == (88, 88) and torch.equal(seen[0], method.upscale(batch["lq"]))
    padded = F.pad(batch["lq"], (0, 2, 0, 2), mode="reflect")
    assert not torch.equal(method.upscale(padded)[..., :88, :88], seen[0])     # the border differs


def test_osediff_test_options_with_the_dape_prompt_run_end_to_end(tmp_path, sd_folder):
    """options/test/osediff.yml's prompt stage with DAPE (tiny tagger in the release layouts): every
    output's prompt in metrics.json is 'tags, extra,' with the tags of the x4 PIL-bicubic LQ (the
    release tags the upsampled image, not the LR nor the inference layer's padding)."""
    from osir import test as test_script
    from osir.options import load_options
    from tests.test_dape import TINY_HEAD, TINY_SWIN, release_files
    release_files(tmp_path)
    lq = write_images(tmp_path / "lq", 2, (25, 27))
    gt = write_images(tmp_path / "gt", 2, (100, 108))              # NIQE needs 96 x 96
    prompt = {"type": "dape", "ram_path": str(tmp_path / "ram.pth"), "dape_path": str(tmp_path / "dape.pth"),
              "extra": "", "swin": TINY_SWIN, "head": TINY_HEAD}
    opt = {"_base_": str(Path(__file__).parents[1] / "options" / "test" / "osediff.yml"), "name": "dape_e2e",
           "method": {"sd_path": str(sd_folder), "release_path": None, "prompt": prompt},
           "datasets": {"RealSR": {"dataroot_gt": str(gt), "dataroot_lq": str(lq)}},
           "inference": {"mixed_precision": "no"},
           "path": {"results_root": str(tmp_path / "results")}}
    test_script.run(load_options(write_yaml(tmp_path / "t.yml", opt)))
    saved = json.loads((tmp_path / "results" / "dape_e2e" / "RealSR" / "metrics.json").read_text())
    prompts = [r["prompt"] for r in saved["images"]]
    extractor = PROMPTS.build(prompt)
    assert all(p.endswith(", ,") for p in prompts)
    for i, saved_prompt in enumerate(prompts):
        tags = set(saved_prompt[:-len(", ,")].split(", "))
        up = pil_bicubic_x4(lq / f"img{i}.png")
        expected = set(extractor({"lq": up})[0][:-len(", ,")].split(", "))
        from_lr = set(extractor({"lq": up[..., ::4, ::4]})[0][:-len(", ,")].split(", "))
        # PIL's fixed-point rounding (one grey level) may flip a tag at its threshold, no more
        assert len(tags ^ expected) <= 2 < len(tags ^ from_lr), (len(tags ^ expected), len(tags ^ from_lr))
    assert saved["method"]["prompt"]["type"] == "dape"
