"""OSEDiff on tiny random SD-architecture components (saved with save_pretrained, loaded through the
real path): what a training step changes, the frozen score, VSD's gradient, checkpoints."""
import pytest
import torch

from osir.engine.trainer import Trainer
from osir.methods.osediff.method import OSEDiff, vsd_from_estimates
from osir.methods.osediff.tiny import build_tiny_sd
from osir.core.options import load_options
from tests.conftest import tiny_options, train_on_two_cpu_processes, write_images, write_yaml


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd21_tiny")


def osediff_options(tmp_path, sd_folder, **overrides):
    opt = tiny_options(tmp_path, **{"train.total_iter": 2, "val.freq": 100, "train.ema": {}})
    opt["method"] = {"type": "OSEDiff", "sd_path": str(sd_folder), "prompt": {"type": "FixedPrompt", "prompt": "a photo"},
                     "train_prompt": None, "process_size": 32}      # LQs of 8 px and more are not enlarged
    opt["degradation"] = {"type": "RealESRGANDegradation", "preset": "osediff"}
    train = opt["datasets"]["train"]
    train.pop("degradation")
    train.update(dataroot_gt=str(write_images(tmp_path / "big", 2, (80, 80))), gt_size=80)
    opt["datasets"]["val"] = {"type": "SyntheticPairDataset", "dataroot_gt": str(write_images(tmp_path / "v", 1, (32, 32))),
                              "degradation": {"type": "BicubicDownscale", "scale": 4}}
    opt["train"]["optimizers"] = {"g": {"type": "AdamW", "lr": 1e-3, "params": ["unet_lora", "conv_in", "vae_lora"]},
                                  "reg": {"type": "AdamW", "lr": 1e-3, "params": ["reg_lora"]}}
    opt["train"]["ddp"] = {"find_unused_parameters": True, "static_graph": False}
    opt.update(overrides)
    return opt


def frozen_score(method, z, t, text):
    with torch.no_grad(), method.unet_as("frozen") as unet:
        return unet(z, t, encoder_hidden_states=text).sample


def test_a_training_iteration_changes_only_the_trained_tensors_and_never_the_frozen_score(tmp_path, sd_folder):
    trainer = Trainer(load_options(write_yaml(tmp_path / "o.yml", osediff_options(tmp_path, sd_folder))))
    method = trainer.method
    torch.manual_seed(0)
    z, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    text = method.encode_prompts(["a photo"])
    score_before = frozen_score(method, z, t, text)
    state = {n: {k: v.clone() for k, v in method.net(n).state_dict().items()} for n in method.networks}
    trainer.train()
    changed = {n: sorted(k for k, v in method.net(n).state_dict().items() if not torch.equal(state[n][k], v))
               for n in method.networks}
    assert changed["text_encoder"] == []
    assert changed["unet"] and all("lora_" in k or k.startswith("gen_conv_in.") for k in changed["unet"])
    assert any(".reg." in k for k in changed["unet"]) and any("default_decoder" in k for k in changed["unet"])
    assert any(k.startswith("gen_conv_in.conv_in.base_layer") for k in changed["unet"])      # conv_in trains
    assert changed["vae"] and all(k.startswith(("vae.encoder.", "vae.quant_conv.")) and "lora_" in k
                                  for k in changed["vae"])
    assert torch.equal(frozen_score(method, z, t, text), score_before)
    models = tmp_path / "experiments" / "tiny" / "models"
    from safetensors.torch import load_file
    saved = load_file(models / "net_unet_2.safetensors")
    assert all("lora_" in k or k.startswith("gen_conv_in.") for k in saved)                  # trained tensors only
    assert not (models / "net_text_encoder_2.safetensors").exists()


def test_resume_from_the_trained_tensor_checkpoints_repeats_the_run(tmp_path, sd_folder):
    """A run stopped after iteration 2 and resumed from its LoRA + conv_in checkpoint (and training
    state) logs the losses of the uninterrupted run and ends with the same trained tensors."""
    from safetensors.torch import load_file
    from tests.test_engine import losses_of
    opt = osediff_options(tmp_path, sd_folder)
    opt["train"]["total_iter"] = 3
    opt["logger"].update(print_freq=1, checkpoint_freq=1)
    Trainer(load_options(write_yaml(tmp_path / "s.yml", {**opt, "name": "straight"}))).train()
    Trainer(load_options(write_yaml(tmp_path / "r.yml", {**opt, "name": "resumed"}), ["train.total_iter=2"])).train()
    Trainer(load_options(tmp_path / "r.yml"), auto_resume=True).train()
    straight, resumed = tmp_path / "experiments" / "straight", tmp_path / "experiments" / "resumed"
    for key in ("l_l2", "l_vsd", "l_reg"):
        assert losses_of(resumed, key) == pytest.approx(losses_of(straight, key), rel=1e-5) and len(losses_of(straight, key)) == 3
    for net in ("unet", "vae"):
        a = load_file(straight / "models" / f"net_{net}_3.safetensors")
        b = load_file(resumed / "models" / f"net_{net}_3.safetensors")
        assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_gradient_checkpointing_trains_exactly_as_without(tmp_path, sd_folder):
    """The UNet's blocks are recomputed during backward, after the VSD passes switched adapters: the
    backward must run in the generator's (and the regulariser's) own state, giving the same step."""
    from safetensors.torch import load_file
    for name, ckpt in (("plain", False), ("ckpt", True)):
        opt = osediff_options(tmp_path, sd_folder, name=name)
        opt["train"]["total_iter"] = 1
        opt["logger"]["checkpoint_freq"] = 1
        opt["method"]["gradient_checkpointing"] = ckpt
        Trainer(load_options(write_yaml(tmp_path / f"{name}.yml", opt))).train()
    for net in ("unet", "vae"):
        a, b = (load_file(tmp_path / "experiments" / n / "models" / f"net_{net}_1.safetensors") for n in ("plain", "ckpt"))
        assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_vsd_gradient_matches_its_definition():
    """d/dz MSE(z, sg(z - (x0_fake - x0_real) / w)) = 2 (x0_fake - x0_real) / (w N), w = mean |z - x0_real|."""
    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    x0_fake, x0_real = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    vsd_from_estimates(z, x0_fake, x0_real).backward()
    w = (z.detach() - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(z.grad, 2 * (x0_fake - x0_real) / (w * z.numel()), atol=1e-7)
    assert float(w[0]) == pytest.approx(float((z[0].detach() - x0_real[0]).abs().sum()) / 36, rel=1e-6)


def test_restoration_is_x4_in_0_1_and_refuses_missing_optimisers(tmp_path, sd_folder):
    method = OSEDiff(sd_path=str(sd_folder), process_size=48)     # no enlargement: a 48 x 80 SR input
    method.setup(torch.device("cpu"))
    with torch.no_grad():
        out = method.restore({"lq": torch.rand(1, 3, 12, 20), "lq_path": ["x.png"], "name": ["x"]},
                             generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 48, 80) and 0 <= float(out.min()) and float(out.max()) <= 1
    opt = osediff_options(tmp_path, sd_folder)
    opt["train"]["optimizers"] = {"gen": opt["train"]["optimizers"]["g"], "reg": opt["train"]["optimizers"]["reg"]}
    from osir.core.registry import OptionsError
    with pytest.raises(OptionsError, match=r"OSEDiff steps an optimiser named g"):
        Trainer(load_options(write_yaml(tmp_path / "p.yml", opt)))


def test_release_layout_round_trip_through_the_method(tmp_path, sd_folder):
    """export_release writes osediff.pkl's layout (conv_in from the generator's copy, no regulariser);
    a method loading it (release_path) restores exactly as the exporting one."""
    torch.manual_seed(0)
    a = OSEDiff(sd_path=str(sd_folder), process_size=32)
    with torch.no_grad():
        for name, p in a.networks["unet"].named_parameters():
            if "lora_B" in name or name.startswith("gen_conv_in.conv_in.base_layer"):
                p.add_(0.05 * torch.randn_like(p))
        for name, p in a.networks["vae"].named_parameters():
            if "lora_B" in name:
                p.add_(0.05 * torch.randn_like(p))
    a.export_release(tmp_path / "osediff.pkl")
    payload = torch.load(tmp_path / "osediff.pkl", weights_only=True)
    assert "conv_in.base_layer.weight" in payload["state_dict_unet"]
    assert not any(".reg." in k or k.startswith("gen_conv_in") for k in payload["state_dict_unet"])
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from osir.methods.osediff.lora import unet_targets, vae_targets
    plain = unet_targets(UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet"))
    assert payload["unet_lora_encoder_modules"][0] == "conv_in"
    assert [payload[f"unet_lora_{g}_modules"] for g in ("encoder", "decoder", "others")] == \
        [plain[a] for a in ("default_encoder", "default_decoder", "default_others")]       # SD's module order
    from osir.methods.osediff.lora import release_vae_list
    vae = vae_targets(AutoencoderKL.from_pretrained(sd_folder, subfolder="vae"))
    assert payload["vae_lora_encoder_modules"] == release_vae_list(vae) != vae                   # the release's repeats
    torch.manual_seed(1)
    b = OSEDiff(sd_path=str(sd_folder), release_path=str(tmp_path / "osediff.pkl"), process_size=32)
    batch = {"lq": torch.rand(1, 3, 8, 8), "lq_path": ["x"], "name": ["x"]}
    with torch.no_grad():
        out_a = a.restore(batch, generator=torch.Generator().manual_seed(3))
        out_b = b.restore(batch, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out_a, out_b, atol=1e-6)
    assert b.pretrained["release"] == str(tmp_path / "osediff.pkl")


@pytest.mark.timeout(400)
def test_two_process_ddp_keeps_the_trained_tensors_identical(tmp_path, sd_folder):
    """torchrun, 2 CPU processes (gloo): the generator, VAE-encoder and regulariser LoRA train through
    DDP's forward and stay identical on both ranks."""
    done, r0, r1 = train_on_two_cpu_processes(write_yaml(tmp_path / "ddp.yml", osediff_options(tmp_path, sd_folder)),
                                              tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = [k for k in r0 if "lora_" in k or ".gen_conv_in." in k]
    assert trained and all(torch.equal(r0[k], r1[k]) for k in r0)
    assert any(not torch.all(r0[k] == 0) for k in trained if "lora_B" in k)      # B left zero: trained


def test_each_pass_uses_exactly_its_own_adapters(sd_folder):
    """Generator: its three adapters + its conv_in; regulariser: adapter reg on SD's conv_in; frozen:
    no adapter.  Perturbing one side's LoRA must move only the passes that use it."""
    method = OSEDiff(sd_path=str(sd_folder))
    unet = method.networks["unet"]
    torch.manual_seed(0)
    z, t = torch.randn(1, 4, 8, 8), torch.tensor([999])
    text = method.encode_prompts([""])

    def passes():
        out = {}
        with torch.no_grad():
            for role in ("generator", "regulariser", "frozen"):
                with method.unet_as(role) as net:
                    out[role] = net(z, t, encoder_hidden_states=text).sample.clone()
        return out

    def perturb(select):
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "lora_B" in name and select(name):
                    p.add_(0.1 * torch.randn_like(p))

    base = passes()
    assert torch.equal(base["generator"], base["frozen"]) and torch.equal(base["regulariser"], base["frozen"])  # B = 0
    perturb(lambda n: ".reg." in n)
    after_reg = passes()
    assert torch.equal(after_reg["generator"], base["generator"]) and torch.equal(after_reg["frozen"], base["frozen"])
    assert not torch.allclose(after_reg["regulariser"], base["regulariser"])
    perturb(lambda n: ".reg." not in n)
    after_gen = passes()
    assert torch.equal(after_gen["regulariser"], after_reg["regulariser"]) and torch.equal(after_gen["frozen"], base["frozen"])
    assert not torch.allclose(after_gen["generator"], after_reg["generator"])
    assert all(p.requires_grad == ("lora_" in n or n.startswith("gen_conv_in.")) for n, p in unet.named_parameters())


def test_reg_adapters_release_trains_only_the_mid_block_lora_of_the_regulariser(sd_folder):
    """reg_adapters: release reproduces the release's regulariser, where only the last-added adapter
    (default_others: the mid-block) is active: only its LoRA shapes the regulariser's output and gets
    gradient; 'all' (the default) trains the regulariser's LoRA everywhere, conv_in included."""
    from diffusers import UNet2DConditionModel
    from osir.methods.osediff.lora import unet_targets
    mid = set(unet_targets(UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet"))["default_others"])
    assert mid and all(n.startswith("mid_block.") for n in mid)
    trained = {}
    for mode in ("all", "release"):
        torch.manual_seed(0)
        method = OSEDiff(sd_path=str(sd_folder), reg_adapters=mode)
        unet = method.networks["unet"]
        with torch.no_grad():                # B = 0 at init: give A a gradient too
            for name, p in unet.named_parameters():
                if ".reg." in name and "lora_B" in name:
                    p.normal_(0, 0.1)
        z, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
        text = method.encode_prompts(["a photo"])
        with method.unet_as("regulariser") as net:
            net(z, t, encoder_hidden_states=text).sample.square().mean().backward()
        reg = {n: p for n, p in unet.named_parameters() if ".reg." in n}
        trained[mode] = {n.split(".lora_")[0] for n, p in reg.items() if p.grad is not None and p.grad.abs().sum() > 0}
        assert {id(p) for p in reg.values()} == {id(p) for p in method.parameter_groups()["reg_lora"]}
    assert trained["release"] == mid
    assert trained["all"] > mid and "conv_in" in trained["all"] and any(n.startswith("up_blocks.") for n in trained["all"])


def test_training_prompts_are_ram_tags_of_the_gt_and_an_lr_lq_is_resized_as_released(tmp_path, sd_folder):
    """train_prompt {type: ram}: the prompts of a training step are RAM's tags of the batch's GT; an LQ
    at LR size reaches the generator resized by one of the release's modes and rounded to 8 bits;
    without ram_path training stops with an options error naming the key."""
    import torch.nn.functional as F
    from osir.core.registry import PROMPTS, OptionsError
    from tests.test_dape import TINY_HEAD, TINY_SWIN, release_files
    release_files(tmp_path)
    spec = {"type": "ram", "ram_path": str(tmp_path / "ram.pth"), "swin": TINY_SWIN, "head": TINY_HEAD}
    opt = osediff_options(tmp_path, sd_folder, name="ram")
    opt["method"]["train_prompt"] = spec
    opt.pop("degradation")
    opt["datasets"]["train"]["degradation"] = {"type": "BicubicDownscale", "scale": 4}
    opt["train"]["total_iter"] = 1
    trainer = Trainer(load_options(write_yaml(tmp_path / "ram.yml", opt)))
    method, seen = trainer.method, {"batch": [], "prompts": [], "up": []}
    step, encode, generate = method.training_step, method.encode_prompts, method.generate
    method.training_step = lambda batch: seen["batch"].append(batch) or step(batch)
    method.encode_prompts = lambda prompts: seen["prompts"].append(list(prompts)) or encode(prompts)
    method.generate = lambda up, text, generator=None: seen["up"].append(up.detach().clone()) or generate(up, text, generator)
    trainer.train()
    batch, up = seen["batch"][0], seen["up"][0]
    assert batch["lq"].shape[-1] * 4 == batch["gt"].shape[-1] == up.shape[-1]
    assert seen["prompts"][0] == PROMPTS.build(spec)({"gt": batch["gt"]})
    assert seen["prompts"][0] != PROMPTS.build({**spec, "image": "lq"})({"lq": up})
    for i in range(up.shape[0]):
        candidates = [(F.interpolate(batch["lq"][i:i + 1], size=up.shape[-2:], mode=m) * 255).round().clamp(0, 255) / 255
                      for m in ("area", "bilinear", "bicubic")]
        assert sum(torch.equal(up[i:i + 1], c) for c in candidates) == 1
    opt["method"]["train_prompt"] = {"type": "ram"}
    with pytest.raises(OptionsError, match=r"method\.train_prompt\.ram_path: the training prompts are RAM's tags of "
                                           r"the GT images \(as the release trains\)"):
        Trainer(load_options(write_yaml(tmp_path / "no_ram.yml", {**opt, "name": "no_ram"})))


def test_training_defaults_are_the_release_settings():
    from pathlib import Path
    from osir.core.options import load_options
    method = load_options(Path(__file__).parents[1] / "options" / "osediff.yml")["method"]
    assert method["train_prompt"]["type"] == "ram" and method["train_prompt"]["ram_path"].endswith("ram_swin_large_14m.pth")
    assert method.get("train_prompt", {}).get("image", "gt") == "gt" and method["train_lq_resize"] == "release"
    assert load_options(Path(__file__).parents[1] / "options" / "osediff.yml")["degradation"]["preset"] == "osediff"


def test_test_script_warns_only_about_networks_without_trained_weights(tmp_path, sd_folder, capsys):
    """test.py's warning is true: with the release file, the SD folder and the file feed every network
    (no warning); without it the generator's UNet and VAE keep their untrained LoRA and are named, the
    text encoder (SD's, used as it is) is not."""
    from osir import test as test_script
    a = OSEDiff(sd_path=str(sd_folder))
    a.export_release(tmp_path / "osediff.pkl")
    lq = write_images(tmp_path / "lq", 1, (16, 16))
    for name, release in (("with", str(tmp_path / "osediff.pkl")), ("without", None)):
        opt = {"name": name, "seed": 0, "method": {"type": "OSEDiff", "sd_path": str(sd_folder), "release_path": release,
                                                   "process_size": 32},
               "datasets": {"x": {"type": "SingleImageDataset", "dataroot_lq": str(lq)}},
               "metrics": {}, "path": {"results_root": str(tmp_path / "results")}}
        test_script.run(load_options(write_yaml(tmp_path / f"{name}.yml", opt)))
        err = capsys.readouterr().err
        if release:
            assert "warning" not in err
        else:
            assert "warning: network(s) unet, vae got no trained weights" in err
