"""Tiny randomly initialised Stable Diffusion components of the real architectures (diffusers UNet2D
and AutoencoderKL, transformers CLIP text encoder and tokenizer, SD 2.1-base's scheduler), saved in the
diffusers folder layout with ``save_pretrained``: what the tests and ``options/osediff_tiny.yml`` load
through the real loading path when no SD 2.1-base weights are at hand.

    python -m osir.methods.osediff.tiny --output pretrained/sd21_tiny
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

#: SD 2.1-base's scheduler (its scheduler_config.json)
SD21_BASE_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                           num_train_timesteps=1000, prediction_type="epsilon", set_alpha_to_one=False,
                           steps_offset=1)


def build_tiny_sd(folder: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Write unet/ vae/ text_encoder/ tokenizer/ scheduler/ of a tiny SD model under ``folder``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    root = Path(folder)
    torch.manual_seed(seed)
    UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, sample_size=16,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         attention_head_dim=4, use_linear_projection=True).save_pretrained(root / "unet")
    vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        layers_per_block=1, sample_size=64)
    calibrate_like_a_trained_vae(vae)
    vae.save_pretrained(root / "vae")
    CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                 max_position_embeddings=16, vocab_size=64, projection_dim=16,
                                 bos_token_id=0, eos_token_id=1, pad_token_id=1)   # the letter tokenizer's ids
                  ).save_pretrained(root / "text_encoder")
    write_letter_tokenizer(root / "tokenizer", model_max_length=16)
    DDPMScheduler.from_config({**SD21_BASE_SCHEDULER, "prediction_type": prediction_type}).save_pretrained(
        root / "scheduler")
    return root


def write_letter_tokenizer(folder: Path, model_max_length: int) -> None:
    """A CLIP tokenizer over single letters (no BPE merges): what random text encoders need."""
    from transformers import CLIPTokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                  model_max_length=model_max_length).save_pretrained(folder)


def build_random_sd(folder: str | Path, configs: str | Path, seed: int = 0) -> Path:
    """SD 2.1-base's real architecture (UNet, VAE, text encoder from the configs file, e.g.
    ``tests/fixtures/checkpoints/sd21_base_configs.json``) with random weights, in the diffusers folder
    layout: for timing and memory, which do not need trained weights.  About 5 GB on disk."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    cfg = json.loads(Path(configs).read_text())
    root = Path(folder)
    torch.manual_seed(seed)
    UNet2DConditionModel.from_config(cfg["unet"]).save_pretrained(root / "unet")
    AutoencoderKL.from_config(cfg["vae"]).save_pretrained(root / "vae")
    text = next(v for k, v in cfg.items() if k.startswith("text_encoder"))
    CLIPTextModel(CLIPTextConfig(**text)).save_pretrained(root / "text_encoder")
    write_letter_tokenizer(root / "tokenizer", model_max_length=text["max_position_embeddings"])
    DDPMScheduler.from_config(cfg["scheduler"]).save_pretrained(root / "scheduler")
    return root


def calibrate_like_a_trained_vae(vae) -> None:
    """Give a random AutoencoderKL the two properties of SD's trained VAE that the one-step formula
    relies on: a near-deterministic posterior (a random ``quant_conv`` draws log-variances near 0, so a
    sampled latent would be mostly noise; SD's posterior std is tiny) and latents of unit variance
    (SD's ``scaling_factor`` 0.18215 is chosen by that rule: 1 / std of the latents).  The weights stay
    random; only the log-variance half of ``quant_conv`` and the scaling factor are set."""
    import skimage.data
    half = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[half:] = 0
        vae.quant_conv.bias[half:] = -14.0                       # posterior std e^-7, about 1e-3
        photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
        x = torch.cat([torch.from_numpy(p[:256, :256].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
                       for p in photos])
        std = vae.encode(x).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osir.methods.osediff.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"wrote {build_tiny_sd(args.output, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
