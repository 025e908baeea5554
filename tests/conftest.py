"""Shared fixtures: tiny image folders and option files written to a temporary directory."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def write_images(folder: Path, count: int = 3, size=(40, 48), seed: int = 0, scale: int = 1, lq_folder=None):
    """Smooth random RGB images (and optional ×scale downsampled partners)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3)).astype(np.uint8)
        img = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"img{i}.png"), img)
        if lq_folder is not None:
            lq_folder.mkdir(parents=True, exist_ok=True)
            lq = cv2.resize(img, (size[1] // scale, size[0] // scale), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(lq_folder / f"img{i}.png"), lq)
    return folder


def tiny_options(root: Path, **overrides) -> dict:
    """A tiny IR-SDE denoising experiment on synthetic images under ``root``."""
    gt = write_images(root / "gt", 4, (32, 32))
    opt = {
        "name": "tiny",
        "seed": 3,
        "method": {"type": "IRSDE", "max_sigma": 25, "T": 20, "sample_steps": 4,
                   "network": {"type": "ConditionalUNet", "nf": 4, "depth": 2, "attn_levels": [2]}},
        "datasets": {
            "train": {"type": "SyntheticPairDataset", "dataroot_gt": str(gt), "gt_size": 16,
                      "degradation": {"type": "GaussianNoise", "sigma": 25}, "batch_size": 2, "use_flip": True},
            "val": {"type": "SyntheticPairDataset", "dataroot_gt": str(gt), "max_images": None,
                    "degradation": {"type": "GaussianNoise", "sigma": 25}} ,
        },
        "train": {"total_iter": 6, "optimizers": {"g": {"type": "Adam", "lr": 1e-3}}, "ema": {"g": {"decay": 0.9}}},
        "val": {"freq": 3, "max_images": 1},
        "metrics": {"psnr": {"type": "psnr"}},
        "logger": {"print_freq": 2, "checkpoint_freq": 3, "tensorboard": False, "progress_bar": False},
        "path": {"experiments_root": str(root / "experiments"), "results_root": str(root / "results"),
                 "tb_logger_root": str(root / "tb_logger")},
    }
    del opt["datasets"]["val"]["max_images"]
    return set_keys(opt, overrides)


def set_keys(opt: dict, overrides: dict) -> dict:
    """Set ``{'a.b.c': value}`` entries in a nested options dict."""
    for key, value in overrides.items():
        node = opt
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return opt


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny(tmp_path):
    return tiny_options(tmp_path)


def reset_accelerate() -> None:
    """accelerate keeps one process-wide state (mixed precision, device); tests build several trainers
    with different settings in one process, so each starts from a clean state."""
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset_accelerate()


def tiny_vae_folder(path: Path) -> Path:
    """A tiny randomly initialised diffusers AutoencoderKL saved with save_pretrained."""
    import torch
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                  up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=4,
                  layers_per_block=1, sample_size=32).save_pretrained(path)
    return path


def refiner_options(root: Path, **overrides) -> dict:
    """The README's worked example (tests/plugins/latent_refiner.py) on the tiny image folder."""
    opt = tiny_options(root)
    opt["imports"] = ["tests.plugins.latent_refiner"]
    opt["method"] = {"type": "LatentRefiner", "vae_path": str(tiny_vae_folder(root / "vae")), "channels": 4}
    opt["train"].update({"optimizers": {"g": {"type": "AdamW", "lr": 1e-3, "params": ["body", "head"]}},
                         "ema": {"body": {"decay": 0.9}}, "mixed_precision": "bf16"})
    return set_keys(opt, overrides)


DDP_PROBE = ("import sys, torch\n"
             "from osir.engine.trainer import Trainer\n"
             "from osir.core.options import load_options\n"
             "t = Trainer(load_options(sys.argv[1]))\n"
             "t.train()\n"
             "m = t.method\n"
             "state = {f'{n}.{k}': v.detach().clone() for n in m.networks for k, v in m.net(n).state_dict().items()}\n"
             "torch.save(state, f'{sys.argv[2]}/rank{t.accelerator.process_index}.pt')\n")


def train_on_two_cpu_processes(options_file: Path, folder: Path):
    """torchrun --nproc_per_node 2 (gloo, a free port) on ``options_file``; returns (process result,
    rank-0 state, rank-1 state) with every network's state dict as each rank ends."""
    import os
    import socket
    import subprocess
    import sys
    import torch
    probe = folder / "ddp_probe.py"
    probe.write_text(DDP_PROBE)
    with socket.socket() as s:          # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                           str(probe), str(options_file), str(folder)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=folder)
    if done.returncode != 0:
        return done, None, None
    return done, torch.load(folder / "rank0.pt", weights_only=True), torch.load(folder / "rank1.pt", weights_only=True)


def tiny_caption_folder(path: Path) -> Path:
    """A tiny randomly initialised BLIP captioning model and its processor, saved with save_pretrained."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor
    path.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "cat", "dog", "tree", "house",
             "red", "blue", "sky", "road", "car", "man", "boat"]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}),
                              BertTokenizer(str(path / "vocab.txt"), bos_token="[DEC]"))
    text = dict(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                encoder_hidden_size=16, max_position_embeddings=32, bos_token_id=5, pad_token_id=0, sep_token_id=3)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8, projection_dim=16)
    torch.manual_seed(0)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(path)
    processor.save_pretrained(path)
    return path
