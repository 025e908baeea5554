"""OSEDiff's parts against the release: LoRA targets and layout on the real SD 2.1-base architecture,
the one-step formula, SD folder checks, and osediff.pkl round trips."""
import json

import pytest
import torch

from osir.core.checkpoint import CheckpointError
from osir.methods.osediff.components import (alpha_bar, check_sd_folder, export_osediff_pkl, load_osediff_pkl,
                                             one_step_latent, trained_state)
from osir.methods.osediff.lora import VAE_ADAPTER, add_lora, unet_targets, vae_targets
from osir.core.registry import OptionsError
from tests.conftest import FIXTURES

LAYOUT = json.loads((FIXTURES / "checkpoints" / "osediff_pkl.json").read_text())      # from shared/checkpoints
SD21 = json.loads((FIXTURES / "checkpoints" / "sd21_base_configs.json").read_text())


def real_sd_architecture():
    """SD 2.1-base's UNet and VAE from their configs, on the meta device (no memory, no weights)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    with init_empty_weights():
        return UNet2DConditionModel.from_config(SD21["unet"]), AutoencoderKL.from_config(SD21["vae"])


def test_lora_targets_counts_and_keys_equal_the_release_on_sd21_base():
    unet, vae = real_sd_architecture()
    targets = unet_targets(unet)
    for adapter, key in (("default_encoder", "unet_lora_encoder_modules"), ("default_decoder", "unet_lora_decoder_modules"),
                         ("default_others", "unet_lora_others_modules")):
        assert targets[adapter] == LAYOUT["module_lists"][key]                     # the release's order
    assert sorted(vae_targets(vae)) == sorted(set(LAYOUT["module_lists"]["vae_lora_encoder_modules"]))
    from accelerate import init_empty_weights
    with init_empty_weights():
        add_lora(unet, targets)
        add_lora(vae, {VAE_ADAPTER: vae_targets(vae)})
    unet_state, vae_state = trained_state(unet, vae)
    assert {k: list(v.shape) for k, v in unet_state.items()} == LAYOUT["state_dict_unet"]
    assert {k: list(v.shape) for k, v in vae_state.items()} == LAYOUT["state_dict_vae"]
    lora_unet = sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)
    lora_vae = sum(p.numel() for n, p in vae.named_parameters() if "lora_" in n)
    conv_in = unet_state["conv_in.base_layer.weight"].numel() + unet_state["conv_in.base_layer.bias"].numel()
    assert (lora_unet, conv_in, lora_vae) == (4_055_712, 11_840, 369_356)
    assert round((lora_unet + conv_in + lora_vae) / 1e6, 2) == 4.44                 # the paper's generator
    assert round((lora_unet + conv_in + lora_vae + lora_unet) / 1e6, 1) == 8.5      # + the regulariser's LoRA


def test_the_vae_module_list_is_written_as_the_release_writes_it():
    """osediff.pkl's vae_lora_encoder_modules holds each name once per target pattern it contains and
    quant_conv once per pattern: 65 entries for 32 modules, in module order (the manifest's list)."""
    from collections import Counter
    from osir.methods.osediff.lora import release_vae_list
    _, vae = real_sd_architecture()
    written = LAYOUT["module_lists"]["vae_lora_encoder_modules"]
    assert release_vae_list(vae_targets(vae)) == written
    counts = Counter(written)
    assert (len(written), len(counts), counts["quant_conv"], counts["encoder.conv_in"]) == (65, 32, 10, 2)
    assert counts["encoder.mid_block.attentions.0.to_q"] == counts["encoder.down_blocks.0.downsamplers.0.conv"] == 1


def release_file_from_the_manifest(path, vae_list=None):
    """osediff.pkl as the manifest describes it (lists as the release writes them, tensors of its shapes;
    zero-stride zeros, so the file stays small)."""
    payload = {**LAYOUT["module_lists"], "rank_unet": 4, "rank_vae": 4,
               **{part: {k: torch.zeros(()).expand(*shape) for k, shape in LAYOUT[part].items()}
                  for part in ("state_dict_unet", "state_dict_vae")}}
    if vae_list is not None:
        payload["vae_lora_encoder_modules"] = vae_list
    torch.save(payload, path)
    return path


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")     # meta model: shapes only
def test_the_release_file_built_from_the_manifest_loads_through_the_real_loader(tmp_path):
    """SD 2.1-base's architecture (meta device) with osir's LoRA accepts the release's file, repeats in
    its VAE list included; a list naming a module osir does not target is still refused."""
    from accelerate import init_empty_weights
    unet, vae = real_sd_architecture()
    with init_empty_weights():
        add_lora(unet, unet_targets(unet))
        add_lora(vae, {VAE_ADAPTER: vae_targets(vae)})
    load_osediff_pkl(unet, vae, release_file_from_the_manifest(tmp_path / "osediff.pkl"))
    bad = release_file_from_the_manifest(tmp_path / "bad.pkl", LAYOUT["module_lists"]["vae_lora_encoder_modules"]
                                         + ["decoder.conv_in"])
    with pytest.raises(CheckpointError, match=r"bad\.pkl': vae_lora_encoder_modules differ from osir's LoRA targets "
                                              r"\(not targets: \['decoder\.conv_in'\]; not listed: none\)"):
        load_osediff_pkl(unet, vae, bad)


def test_osediff_preset_rounds_the_resized_back_lq_once_as_the_release():
    """The release resizes the un-rounded LQ back to the GT size and rounds once; with every random stage
    off and bicubic everywhere the LQ is a closed form (round_before_resize_back keeps the old double
    rounding, which differs)."""
    import torch.nn.functional as F
    from osir.degradations.realesrgan import RealESRGANDegradation
    from tests.test_realesrgan_degradation import run, smooth
    off = dict(blur_prob=0.0, second_blur_prob=0.0, resize_prob=[0.0, 0.0, 1.0], resize_prob2=[0.0, 0.0, 1.0],
               noise_prob=0.0, noise_prob2=0.0, jpeg_prob=0.0, jpeg_prob2=0.0, final_sinc_prob=0.0,
               resize_mode_prob=[0.0, 0.0, 1.0])
    gt = smooth()
    small = F.interpolate(F.interpolate(gt, scale_factor=1.0, mode="bicubic"), size=(24, 24), mode="bicubic")
    back = F.interpolate(small, size=(96, 96), mode="bicubic")
    lq, _ = run(RealESRGANDegradation("osediff", **off), gt, [5, 6])
    assert (lq - (back.clamp(0, 1) * 255).round() / 255).abs().max() < 1e-6
    old, _ = run(RealESRGANDegradation("osediff", round_before_resize_back=True, **off), gt, [5, 6])
    twice = F.interpolate((small.clamp(0, 1) * 255).round() / 255, size=(96, 96), mode="bicubic")
    assert (old - (twice.clamp(0, 1) * 255).round() / 255).abs().max() < 1e-6
    assert (old - lq).abs().max() > 0.5 / 255


def test_training_lq_resize_draws_one_of_the_release_modes_per_image_and_rounds():
    import torch.nn.functional as F
    from osir.methods.osediff.components import resize_like_release_training, upsample_like_pil
    torch.manual_seed(0)
    lq = torch.rand(6, 3, 8, 10)
    candidates = {m: (F.interpolate(lq, size=(32, 40), mode=m) * 255).round().clamp(0, 255) / 255
                  for m in ("area", "bilinear", "bicubic")}
    seen = set()
    for seed in range(4):
        torch.manual_seed(seed)
        up = resize_like_release_training(lq, (32, 40))
        for i in range(6):
            modes = [m for m, c in candidates.items() if torch.equal(up[i], c[i])]
            assert len(modes) == 1
            seen |= set(modes)
    assert seen == {"area", "bilinear", "bicubic"}
    assert not any(torch.equal(upsample_like_pil(lq, (32, 40)), c) for c in candidates.values())
    assert resize_like_release_training(lq, (8, 10)) is lq


def test_one_step_formula_equals_ddpm_x0_prediction_at_999():
    from diffusers import DDPMScheduler
    scheduler = DDPMScheduler.from_config(SD21["scheduler"])
    assert alpha_bar(scheduler) == pytest.approx(0.0046601, abs=5e-8)              # the paper's value
    torch.manual_seed(0)
    z, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    reference = scheduler.step(eps, 999, z).pred_original_sample
    assert torch.allclose(one_step_latent(z, eps, alpha_bar(scheduler)), reference, atol=1e-4, rtol=1e-5)


def test_sd_folder_checks_name_the_key_and_refuse_v_prediction(tmp_path):
    from diffusers import DDPMScheduler
    with pytest.raises(OptionsError, match=r"method\.sd_path: folder not found: '.*nope'"):
        check_sd_folder(str(tmp_path / "nope"))
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    with pytest.raises(OptionsError, match=r"has no vae/, text_encoder/, tokenizer/, scheduler/"):
        check_sd_folder(str(tmp_path / "sd"))
    for sub in ("vae", "text_encoder", "tokenizer"):
        (tmp_path / "sd" / sub).mkdir()
    DDPMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction").save_pretrained(tmp_path / "sd" / "scheduler")
    with pytest.raises(OptionsError, match=r"predicts 'v_prediction' \(Stable Diffusion 2\.1, 768 px\); OSEDiff needs "
                                           r"Stable Diffusion 2\.1-base"):
        check_sd_folder(str(tmp_path / "sd"))
    DDPMScheduler(beta_schedule="scaled_linear").save_pretrained(tmp_path / "sd" / "scheduler")
    assert check_sd_folder(str(tmp_path / "sd")) == tmp_path / "sd"


def tiny_unet_vae(lora_seed, base_seed=0):
    """Tiny SD-architecture UNet and VAE (the same frozen base for a given base_seed) with osir's LoRA."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    torch.manual_seed(base_seed)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=8,
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2,
                                use_linear_projection=True)
    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=4, layers_per_block=1)
    torch.manual_seed(lora_seed)
    add_lora(unet, unet_targets(unet))
    add_lora(vae, {VAE_ADAPTER: vae_targets(vae)})
    with torch.no_grad():                  # B = 0 at init: give the adapters something to do
        for name, p in list(unet.named_parameters()) + list(vae.named_parameters()):
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return unet, vae


def outputs(unet, vae):
    torch.manual_seed(1)
    x, text = torch.rand(1, 3, 16, 16), torch.randn(1, 3, 8)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        return z, unet(torch.randn(1, 4, 8, 8), 999, encoder_hidden_states=text).sample


def test_all_three_unet_adapters_are_active_and_merging_keeps_the_output(tmp_path):
    from peft.tuners.tuners_utils import BaseTunerLayer
    unet, vae = tiny_unet_vae(0)
    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
    assert {a for m in layers for a in m.active_adapters} == {"default_encoder", "default_decoder", "default_others"}
    before = outputs(unet, vae)
    for m in layers + [m for m in vae.modules() if isinstance(m, BaseTunerLayer)]:
        m.merge()
    after = outputs(unet, vae)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(before, after))
    assert all(p.requires_grad == ("lora_" in n) for n, p in unet.named_parameters())


def test_osediff_pkl_round_trip_and_refusal(tmp_path):
    unet, vae = tiny_unet_vae(0)
    with torch.no_grad():
        unet.conv_in.base_layer.weight.add_(0.3)           # conv_in's base weights are trained too
    export_osediff_pkl(unet, vae, tmp_path / "osediff.pkl")
    payload = torch.load(tmp_path / "osediff.pkl", weights_only=True)
    assert payload["rank_unet"] == 4 and "conv_in.base_layer.weight" in payload["state_dict_unet"]
    mid = "encoder.mid_block."                   # the release's form: a name per pattern it contains
    assert payload["vae_lora_encoder_modules"] == (
        ["encoder.conv_in"] * 2 + ["encoder.down_blocks.0.resnets.0.conv1"] * 2
        + ["encoder.down_blocks.0.resnets.0.conv2"] * 2
        + [mid + f"attentions.0.{n}" for n in ("to_q", "to_k", "to_v", "to_out.0")]
        + [mid + f"resnets.{i}.{c}" for i in (0, 1) for c in ("conv1", "conv1", "conv2", "conv2")]
        + ["encoder.conv_out"] * 2 + ["quant_conv"] * 10)
    other_unet, other_vae = tiny_unet_vae(1)
    assert not torch.allclose(outputs(other_unet, other_vae)[1], outputs(unet, vae)[1])
    load_osediff_pkl(other_unet, other_vae, tmp_path / "osediff.pkl")
    assert all(torch.allclose(a, b) for a, b in zip(outputs(other_unet, other_vae), outputs(unet, vae)))
    del payload["state_dict_vae"]["encoder.conv_in.lora_A.default_encoder.weight"]
    torch.save(payload, tmp_path / "bad.pkl")
    with pytest.raises(CheckpointError, match=r"bad\.pkl': state_dict_vae does not fit: 1 missing keys: "
                                              r"encoder\.conv_in\.lora_A\.default_encoder\.weight"):
        load_osediff_pkl(other_unet, other_vae, tmp_path / "bad.pkl")
