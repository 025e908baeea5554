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
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    root = Path(folder)
    torch.manual_seed(seed)
    UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, sample_size=16,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         attention_head_dim=4, use_linear_projection=True).save_pretrained(root / "unet")
    AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  layers_per_block=1, sample_size=64).save_pretrained(root / "vae")
    CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                 max_position_embeddings=16, vocab_size=64, projection_dim=16)
                  ).save_pretrained(root / "text_encoder")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (root / "tokenizer").mkdir(parents=True, exist_ok=True)
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(root / "tokenizer" / "vocab.json"), str(root / "tokenizer" / "merges.txt"),
                  model_max_length=16).save_pretrained(root / "tokenizer")
    DDPMScheduler.from_config({**SD21_BASE_SCHEDULER, "prediction_type": prediction_type}).save_pretrained(
        root / "scheduler")
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osir.methods.osediff.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"wrote {build_tiny_sd(args.output, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
