"""DA-CLIP stage 1 on stock open_clip: the wrapper against open_clip's own encoder, where the controls
enter, gradients, the release layout (631 keys from the manifest), the same-label-positive loss against
a hand computation, the caption CSV, the degradation-type dataset."""
import json
import math

import numpy as np
import pytest
import torch

from osir.data.io import DataError
from osir.core.checkpoint import CheckpointError
from osir.methods.daclip.data import DegradationTypeDataset, read_caption_csv
from osir.methods.daclip.method import contrastive_loss
from osir.methods.daclip.model import DACLIP, load_release
from tests.conftest import FIXTURES, write_images

TINY = dict(embed_dim=16, vision_cfg=dict(layers=3, width=32, head_width=16, patch_size=8, image_size=32),
            text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=2))


def tiny_clip(seed: int = 0):
    from open_clip.model import CLIP
    torch.manual_seed(seed)
    return CLIP(**TINY).eval()


def test_content_path_equals_open_clips_encoder_while_the_zero_linears_are_zero():
    clip = tiny_clip()
    model = DACLIP(clip).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        content, degradation = model.encode_image(x)
        reference = clip.encode_image(x)
        plain, _ = model.encode_image(x, control=False)
    assert torch.allclose(content, reference, atol=1e-6) and torch.allclose(plain, reference, atol=1e-6)
    assert torch.allclose(degradation, reference, atol=1e-6)          # the controller starts as an exact copy
    assert all(float(z.weight.abs().sum() + z.bias.abs().sum()) == 0 for z in model.visual_control.transformer.zero_modules)


def test_controller_block_j_enters_the_frozen_tower_after_its_block_L_minus_1_minus_j():
    """A bias on zero linear j alone shifts every token after frozen block L-1-j: check against a manual
    forward of open_clip's blocks with that shift inserted there (j = 0: after the last block, before ln_post)."""
    clip = tiny_clip()
    model = DACLIP(clip).eval()
    x = torch.rand(2, 3, 32, 32)
    layers = len(clip.visual.transformer.resblocks)
    for j in (0, 1, layers - 1):
        for z in model.visual_control.transformer.zero_modules:
            torch.nn.init.zeros_(z.bias)
        shift = torch.randn(32)
        with torch.no_grad():
            model.visual_control.transformer.zero_modules[j].bias.copy_(shift)
            content, _ = model.encode_image(x)
            v = clip.visual
            t = v.conv1(x).flatten(2).transpose(1, 2)
            t = v.ln_pre(torch.cat([v.class_embedding.expand(2, 1, -1), t], 1) + v.positional_embedding)
            for i, block in enumerate(v.transformer.resblocks):
                t = block(t) + (shift if i == layers - 1 - j else 0)
            expected = v.ln_post(t[:, 0]) @ v.proj
        assert torch.allclose(content, expected, atol=1e-5), j


def test_gradients_flow_only_into_the_controller():
    model = DACLIP(tiny_clip())
    with torch.no_grad():
        for z in model.visual_control.transformer.zero_modules:
            z.weight.normal_(std=0.01)
    content, degradation = model(torch.rand(2, 3, 32, 32))
    (content.sum() + degradation.sum()).backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert all(p.grad is not None for p in model.visual_control.parameters())


def test_release_layout_from_the_manifest_loads_and_saves_as_released(tmp_path):
    """The full ViT-B-32 DA-CLIP has exactly the manifest's 631 keys (the visual.* alias included) and
    246,213,634 parameters; a state dict built from the manifest loads strictly; a foreign one is refused."""
    import open_clip
    layout = json.loads((FIXTURES / "checkpoints" / "daclip_vit_b32.json").read_text())
    model = DACLIP(open_clip.create_model("ViT-B-32"))
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == layout["keys"]
    assert sum(p.numel() for p in model.parameters()) == layout["num_parameters"]
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) if shape else torch.tensor(4.6) for k, shape in layout["keys"].items()}
    for k in list(state):                           # the alias holds the same tensors as clip.visual
        if k.startswith("visual."):
            state[k] = state[f"clip.{k}"]
    torch.save(state, tmp_path / "daclip_ViT-B-32.pt")
    load_release(model, tmp_path / "daclip_ViT-B-32.pt")
    assert torch.equal(model.visual_control.transformer.zero_modules[3].weight,
                       state["visual_control.transformer.zero_modules.3.weight"])
    saved = model.state_dict()
    assert set(saved) == set(state) and all(torch.equal(saved[k], state[k]) for k in state)
    del state["logit_scale"]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"1 missing keys: logit_scale"):
        load_release(model, tmp_path / "other.pt")


def test_same_label_positive_loss_equals_a_hand_computed_value():
    """Batch of 3, labels [0, 0, 1], scale 2, the two samples of label 0 with *different* texts: row i's
    target is uniform over its positives, and the release's arange targets give another value (computed by
    hand too).  With one text per label (as with degradation names) both targets give the same loss and
    the same gradients, so the default is then exactly the release's loss."""
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    sims = [[1.0, 0.8, 0.0], [0.6, 0.96, 0.8], [0.0, 0.6, 1.0]]        # image_i . text_j (unit vectors)
    columns = [[sims[i][j] for i in range(3)] for j in range(3)]

    def soft_ce(rows, positives):
        total = 0.0
        for i, row in enumerate(rows):
            logz = math.log(sum(math.exp(2 * s) for s in row))
            total += -sum((2 * row[j] - logz) / len(positives[i]) for j in positives[i])
        return total / len(rows)

    same_label = (soft_ce(sims, [[0, 1], [0, 1], [2]]) + soft_ce(columns, [[0, 1], [0, 1], [2]])) / 2
    arange = (soft_ce(sims, [[0], [1], [2]]) + soft_ce(columns, [[0], [1], [2]])) / 2
    assert abs(same_label - arange) > 0.05
    assert float(contrastive_loss(image, text, torch.tensor(2.0), labels)) == pytest.approx(same_label, abs=1e-6)
    assert float(contrastive_loss(image, text, torch.tensor(2.0))) == pytest.approx(arange, abs=1e-6)

    one_text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])        # label 0's two samples share a text
    grads = []
    for lab in (labels, None):
        x = image.clone().requires_grad_()
        loss = contrastive_loss(x, one_text, torch.tensor(2.0), lab)
        loss.backward()
        grads.append((float(loss), x.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=1e-6)


def test_caption_csv_rows_and_bad_rows_named(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    good = tmp_path / "daclip_train.csv"
    good.write_text('filepath\ttitle\na.png\t"a cat on a sofa: noisy"\n/abs/b.png\t"two dogs: hazy"\n')
    rows = read_caption_csv(good)
    assert rows == [(str(tmp_path / "a.png"), "a cat on a sofa", "noisy"), ("/abs/b.png", "two dogs", "hazy")]
    bad = tmp_path / "bad.csv"
    bad.write_text('filepath\ttitle\na.png\t"a cat: noisy"\nb.png\tno degradation here\n')
    with pytest.raises(DataError, match=r"bad\.csv' line 3: expected 'filepath<TAB>\"caption: degradation\"'"):
        read_caption_csv(bad)


def test_degradation_type_dataset_from_folders_and_from_registered_degradations(tmp_path):
    for kind in ("noisy", "hazy"):
        write_images(tmp_path / "mix" / kind / "LQ", 2, (24, 24))
        write_images(tmp_path / "mix" / kind / "GT", 2, (24, 24))
    folders = DegradationTypeDataset(dataroot=str(tmp_path / "mix"), caption_template="a photo of {}")
    assert folders.types == ["hazy", "noisy"] and len(folders) == 4
    item = folders[0]
    assert item["degradation_type"] == "hazy" and item["caption"] == "a photo of img0" and item["gt"].shape == (3, 24, 24)
    gt = write_images(tmp_path / "gt", 2, (32, 32))
    synth = DegradationTypeDataset(dataroot_gt=str(gt), degradations={
        "noisy": {"type": "GaussianNoise", "sigma": 50, "clip": True}, "jpeg": {"type": "JPEGCompression", "quality": [5, 5]}})
    assert len(synth) == 4 and [synth[i]["degradation_type"] for i in range(4)] == ["jpeg", "noisy", "jpeg", "noisy"]
    a, b = synth[1], synth[1]
    assert torch.equal(a["lq"], b["lq"]) and not torch.equal(a["lq"], a["gt"])      # seeded, degraded
    with pytest.raises(ValueError, match="exactly one of dataroot, csv, dataroot_gt"):
        DegradationTypeDataset(dataroot=str(tmp_path / "mix"), dataroot_gt=str(gt))
    with pytest.raises(DataError, match="has no <type>/LQ folders"):
        DegradationTypeDataset(dataroot=str(gt))


def test_jpeg_degradation_matches_pil_at_the_same_quality():
    """OpenCV's and PIL's baseline JPEG (4:2:0, the same quantisation tables) agree to a few grey levels."""
    from io import BytesIO

    from PIL import Image

    from osir.degradations.simple import JPEGCompression
    rng = np.random.default_rng(0)
    import skimage.data
    gt = skimage.data.astronaut()[:64, :64].astype(np.float32) / 255
    lq, params = JPEGCompression(quality=[30, 30])(gt, rng)
    buffer = BytesIO()
    Image.fromarray(np.round(gt * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=30)
    reference = np.asarray(Image.open(buffer)).astype(np.float32) / 255
    assert params["quality"] == 30 and np.abs(lq - reference).mean() < 2 / 255 and np.abs(lq - gt).mean() > 2 / 255


def test_test_py_reports_accuracy_and_writes_the_confusion_matrix(tmp_path):
    """The demo's options, trained 30 iterations, then through test.py with the saved weights: the same
    accuracies as the run's last validation (the random frozen CLIP is in the checkpoint), the confusion
    matrix as JSON (counts summing to the images) and PNG."""
    from pathlib import Path

    import cv2

    from osir import test as test_script
    from osir.core.options import load_options
    from tests.conftest import write_yaml
    from osir.engine.trainer import Trainer
    root = Path(__file__).resolve().parents[1] / "options"
    train_opt = load_options(root / "daclip_demo.yml", [
        "train.total_iter=30", "val.freq=30", "logger.checkpoint_freq=30", "logger.progress_bar=false",
        "logger.tensorboard=false", f"path.experiments_root={tmp_path / 'experiments'}",
        f"path.tb_logger_root={tmp_path / 'tb'}", "datasets.train.batch_size=12"])
    train_opt["datasets"]["val"]["dataroot_gt"] = "astronaut"
    validated = Trainer(train_opt).train()["val"]["val"]
    weights = tmp_path / "experiments" / "demo_daclip" / "models" / "net_daclip_30.safetensors"
    opt = load_options(root / "test" / "daclip_demo.yml", [f"path.results_root={tmp_path}",
                                                          f"path.pretrained.daclip={weights}"])
    opt["datasets"]["held_out"]["dataroot_gt"] = "astronaut"
    summary = test_script.run(load_options(write_yaml(tmp_path / "t.yml", opt)))
    assert set(summary["held_out"]["mean"]) == {"degradation_accuracy", "accuracy_without_controller", "chance"}
    for key in ("degradation_accuracy", "accuracy_without_controller"):
        assert summary["held_out"]["mean"][key] == pytest.approx(validated[key]["value"])
    folder = tmp_path / opt["name"] / "held_out"
    confusion = json.loads((folder / "confusion.json").read_text())
    assert len(confusion["labels"]) == 6 and sum(map(sum, confusion["counts"])) == 6
    assert cv2.imread(str(folder / "confusion.png")) is not None


def test_universal_ir_unet_has_the_release_layout_and_loads_it_strictly(tmp_path):
    """universal-ir.pth's 224 keys and 48,975,747 parameters (manifest in tests/fixtures); a state dict
    built from the manifest loads through the engine's strict loader; a foreign key is refused."""
    from osir.core.checkpoint import load_network
    from osir.methods.daclip.unet import DACLIPUNet
    layout = json.loads((FIXTURES / "checkpoints" / "daclip_universal_ir_unet.json").read_text())
    net = DACLIPUNet(**layout["constructor"])
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == layout["keys"]
    assert sum(p.numel() for p in net.parameters()) == layout["num_parameters"]
    gen = torch.Generator().manual_seed(0)
    state = {k: 0.02 * torch.randn(shape, generator=gen) for k, shape in layout["keys"].items()}
    torch.save(state, tmp_path / "universal-ir.pth")
    load_network(net, tmp_path / "universal-ir.pth")
    assert torch.equal(net.prompt, state["prompt"])
    torch.save({**state, "fusion.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: fusion\.weight"):
        load_network(net, tmp_path / "other.pth")


def test_universal_ir_unet_forward_with_and_without_the_da_clip_conditions():
    """Both embeddings change the prediction; without the degradation embedding the time embedding has
    no prompt, without the content embedding a cross-attending network refuses to run; with the
    conditions switched off it has no prompt or cross-attention weights and ignores embeddings."""
    from osir.methods.daclip.unet import DACLIPUNet
    torch.manual_seed(0)
    kw = dict(nf=32, ch_mult=[1, 2, 2, 2], context_dim=16)
    net = DACLIPUNet(**kw).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "proj_out" in name:                  # give the spatial transformers' output some weight
                p.normal_(std=0.1)
        x, mu = torch.rand(2, 3, 20, 28), torch.rand(2, 3, 20, 28)
        degradation, content = torch.randn(2, 16), torch.randn(2, 16)
        both = net(x, mu, 7, degradation, content)
        assert both.shape == (2, 3, 20, 28)
        assert not torch.allclose(both, net(x, mu, 7, torch.randn(2, 16), content))
        assert not torch.allclose(both, net(x, mu, 7, degradation, torch.randn(2, 16)))
        assert not torch.allclose(both, net(x, mu, 7, None, content))
        with pytest.raises(ValueError, match="cross-attends to the DA-CLIP content embedding"):
            net(x, mu, 7, degradation)
        plain = DACLIPUNet(**kw, use_degra_context=False, use_image_context=False).eval()
        assert not any(k.startswith(("prompt", "text_mlp")) or "transformer_blocks" in k for k in plain.state_dict())
        assert torch.equal(plain(x, mu, 7, degradation, content), plain(x, mu, 7))


def test_universal_ir_trains_and_restores_with_embeddings_computed_once_per_image(tmp_path):
    """A tiny stage-1 DA-CLIP run's weights condition a tiny universal-IR run (IR-SDE + DACLIPUNet): two
    training iterations and a 4-step restoration call DA-CLIP once per batch (counted), not per step;
    its checkpoints do not repeat the DA-CLIP weights; a missing daclip_path is one clear error."""
    from safetensors.torch import load_file

    from osir.engine.trainer import Trainer
    from osir.methods.daclip.method import DACLIPMethod, DACLIPUniversalIR
    from osir.core.options import load_options
    from osir.core.registry import OptionsError
    from tests.conftest import tiny_options, write_yaml
    clip_config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2,
                                                   "head_width": 16},
                   "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    stage1 = DACLIPMethod(clip_config=clip_config)
    from safetensors.torch import save_file
    save_file({k: v.clone() for k, v in stage1.networks["daclip"].state_dict().items()},   # the alias: copies
              str(tmp_path / "daclip.safetensors"))
    with pytest.raises(OptionsError, match="method.daclip_path: universal IR needs the DA-CLIP weights"):
        DACLIPUniversalIR(network={"type": "DACLIPUNet", "nf": 32, "ch_mult": [1, 2, 2, 2], "context_dim": 16})
    opt = tiny_options(tmp_path, **{"train.total_iter": 2, "val.freq": 2, "logger.checkpoint_freq": 2})
    opt["method"] = {"type": "DACLIPUIR", "T": 20, "sample_steps": 4, "clip_config": clip_config,
                     "daclip_path": str(tmp_path / "daclip.safetensors"),
                     "network": {"type": "DACLIPUNet", "nf": 32, "ch_mult": [1, 2, 2, 2], "context_dim": 16}}
    opt["datasets"]["train"]["gt_size"] = 32
    opt["train"]["ema"] = {}
    trainer = Trainer(load_options(write_yaml(tmp_path / "uir.yml", opt)))
    method = trainer.method
    calls = []
    encode = method.networks["daclip"].encode_image
    method.networks["daclip"].encode_image = lambda *a, **k: calls.append(1) or encode(*a, **k)
    trainer.train()
    assert len(calls) == 2 + 1                       # one per training batch, one for the validation image
    with torch.no_grad():
        calls.clear()
        out = method.restore({"lq": torch.rand(1, 3, 32, 32)}, torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 32, 32) and len(calls) == 1
    models = tmp_path / "experiments" / "tiny" / "models"
    assert not (models / "net_daclip_2.safetensors").exists() and load_file(str(models / "net_g_2.safetensors"))


def test_wild_ir_unet_has_the_release_layout_and_runs_at_half_resolution(tmp_path):
    """wild-ir.pth's 221 keys and 49,470,467 parameters (ViT-L/14 content context, no degradation prompt,
    the stride-2 downsample / x2 upsample pair); loads strictly; the U-Net body runs at half resolution."""
    from osir.core.checkpoint import load_network
    from osir.methods.daclip.unet import DACLIPUNet
    layout = json.loads((FIXTURES / "checkpoints" / "wild_ir_unet.json").read_text())
    net = DACLIPUNet(**layout["constructor"])
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == layout["keys"]
    assert sum(p.numel() for p in net.parameters()) == layout["num_parameters"] == 49_470_467
    gen = torch.Generator().manual_seed(0)
    state = {k: 0.02 * torch.randn(shape, generator=gen) for k, shape in layout["keys"].items()}
    torch.save(state, tmp_path / "wild-ir.pth")
    load_network(net, tmp_path / "wild-ir.pth")
    assert torch.equal(net.downsample.weight, state["downsample.weight"])
    small = DACLIPUNet(nf=16, ch_mult=[1, 2], context_dim=8, use_degra_context=False, scale=0.5).eval()
    assert small.size_multiple == 4                                   # 2^depth, as the release
    sizes = []
    small.downs[0][0].register_forward_hook(lambda m, i, o: sizes.append(o.shape[-2:]))
    with torch.no_grad():
        out = small(torch.rand(1, 3, 22, 28), torch.rand(1, 3, 22, 28), 3, content=torch.randn(1, 8))
    assert out.shape == (1, 3, 22, 28) and sizes == [(12, 14)]       # 24 x 28 padded, halved
    with pytest.raises(ValueError, match="scale must be 1"):
        DACLIPUNet(scale=0.25)


def test_tiled_restoration_uses_the_embeddings_of_the_whole_image(tmp_path):
    """With tiles, DA-CLIP runs once on the whole LQ (the release's preprocessing of the whole photo) and
    every tile's network call gets those embeddings, not a tile's."""
    from osir.inference import restore_image
    from osir.methods.daclip.method import DACLIPUniversalIR, clip_preprocess
    clip_config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2,
                                                   "head_width": 16},
                   "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    method = DACLIPUniversalIR(network={"type": "DACLIPUNet", "nf": 16, "ch_mult": [1, 2, 2, 2], "context_dim": 16},
                               T=10, sample_steps=2, clip_config=clip_config)
    for net in method.networks.values():
        net.eval()
    lq = torch.rand(1, 3, 96, 80)
    with torch.no_grad():
        whole_content, whole_degradation = method.networks["daclip"].encode_image(clip_preprocess(lq, 32))
    seen, calls = [], []
    encode = method.networks["daclip"].encode_image
    method.networks["daclip"].encode_image = lambda *a, **k: calls.append(1) or encode(*a, **k)
    unet = method.networks["g"]
    unet.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args[0].shape[-2:], kwargs["content"],
                                                                        kwargs["degradation"])), with_kwargs=True)
    with torch.no_grad():
        out = restore_image(method, {"lq": lq}, tile=48, overlap=16, generator=torch.Generator().manual_seed(0))
    assert out.shape == lq.shape and len(calls) == 1
    assert len({tuple(s) for s, _, _ in seen}) >= 1 and len(seen) >= 2 * 4       # 2 steps x several tiles
    assert all(s[0] <= 48 and s[1] <= 48 for s, _, _ in seen)
    for _, content, degradation in seen:
        assert torch.equal(content, whole_content.float()) and torch.equal(degradation, whole_degradation.float())


def test_gradient_caching_gives_the_whole_batch_gradient():
    """One step with gradient_cache_chunk 3 on a batch of 8 moves the controller and logit_scale exactly as
    the whole batch at once (both contrastive terms); gradient accumulation over the same chunks does not."""
    from accelerate import Accelerator

    from osir.methods.daclip.method import DACLIPMethod
    clip_config = {**TINY, "text_cfg": {**TINY["text_cfg"], "vocab_size": 49408}}
    gen = torch.Generator().manual_seed(0)
    batch = {"lq": torch.rand(8, 3, 40, 40, generator=gen),
             "degradation_type": ["noisy", "hazy", "noisy", "low-light", "hazy", "noisy", "snowy", "hazy"],
             "caption": [f"a photo of thing {i}" for i in range(8)]}

    def stepped(chunk):
        torch.manual_seed(0)
        method = DACLIPMethod(clip_config=clip_config, gradient_cache_chunk=chunk)
        net = method.networks["daclip"].train()
        with torch.no_grad():                        # let the controls act, so content depends on them
            for p in net.visual_control.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        opt = torch.optim.SGD(method.parameter_groups()["controller"], lr=1.0)
        method.attach(Accelerator(cpu=True), {"controller": opt})
        method.training_step(batch)
        return [p.detach().clone() for p in method.parameter_groups()["controller"]]

    whole, cached = stepped(None), stepped(3)
    assert len(whole) == len(cached)
    moved = max((a - b).abs().max().item() for a, b in zip(whole, stepped(8)))      # chunk >= batch: no caching
    assert moved == 0
    for a, b in zip(whole, cached):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

    torch.manual_seed(0)                             # accumulation: each chunk's own negatives
    method = DACLIPMethod(clip_config=clip_config)
    net = method.networks["daclip"].train()
    with torch.no_grad():
        for p in net.visual_control.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    acc = Accelerator(cpu=True, gradient_accumulation_steps=3)
    opt = torch.optim.SGD(method.parameter_groups()["controller"], lr=1.0)
    method.attach(acc, {"controller": acc.prepare(opt)})
    for part in (slice(0, 3), slice(3, 6), slice(6, 8)):
        with acc.accumulate(net):
            method.training_step({k: v[part] for k, v in batch.items()})
    accumulated = method.parameter_groups()["controller"]
    assert max((a - b).abs().max().item() for a, b in zip(whole, accumulated)) > 1e-4


def test_universal_ir_test_options_give_one_row_per_degradation_type(tmp_path):
    """options/test/daclip_uir.yml's one-set-per-type layout on a two-type folder: the summary has a row per
    type; each row's PSNR is the mean of skimage's PSNR of the written images against their GT; a type
    the folder lacks is an error naming the folder's types."""
    from pathlib import Path

    import cv2
    from skimage.metrics import peak_signal_noise_ratio

    from osir import test as test_script
    from osir.core.options import load_options
    from tests.conftest import write_yaml
    for kind in ("noisy", "hazy"):
        write_images(tmp_path / "val" / kind / "LQ", 2, (32, 32))
        write_images(tmp_path / "val" / kind / "GT", 2, (32, 32))
    root = Path(__file__).resolve().parents[1] / "options"
    opt = load_options(root / "test" / "daclip_uir.yml", [f"path.results_root={tmp_path}"])
    assert list(opt["datasets"]) == ["motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy",
                                         "raindrop", "rainy", "shadowed", "snowy", "uncompleted"]
    sets = {k: {**opt["datasets"][k], "dataroot": str(tmp_path / "val")} for k in ("noisy", "hazy")}
    opt["datasets"] = sets
    opt["metrics"] = {"psnr": {"type": "psnr"}, "ssim": {"type": "ssim"}}
    opt["path"]["pretrained"] = {}
    opt["method"].update(T=10, sample_steps=2, daclip_path=None, clip_config={
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
        network={"type": "DACLIPUNet", "nf": 16, "ch_mult": [1, 2, 2, 2], "context_dim": 16})
    summary = test_script.run(load_options(write_yaml(tmp_path / "t.yml", opt)))
    assert set(summary) == {"noisy", "hazy"}
    for kind in ("noisy", "hazy"):
        assert summary[kind]["count"] == 2 and set(summary[kind]["mean"]) >= {"psnr", "ssim"}
        scores = []
        for i in range(2):
            out = cv2.imread(str(tmp_path / opt["name"] / kind / kind / f"img{i}.png"))
            gt = cv2.imread(str(tmp_path / "val" / kind / "GT" / f"img{i}.png"))
            scores.append(peak_signal_noise_ratio(gt, out, data_range=255))
        assert summary[kind]["mean"]["psnr"] == pytest.approx(np.mean(scores), abs=1e-3)
    with pytest.raises(DataError, match=r"types: snowy not in .*\(its types: hazy, noisy\)"):
        DegradationTypeDataset(dataroot=str(tmp_path / "val"), types=["snowy"])
