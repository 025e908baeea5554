"""Checkpoint recognition: tiny random osir networks saved as osir safetensors and in the release layouts
are recognised with the hyper-parameters used and rebuild the same network; the release key / shape
manifests give the release hyper-parameters; unknown and corrupt files are clear errors; --convert
writes osir's layout and a model card recording the source's hash."""
import hashlib
import json

import pytest
import torch
import yaml

from osir.core.checkpoint import CheckpointError, read_state_dict, save_network, save_state_dict
from osir.engine.trainer import build_method
from osir.engine.validation import evaluation_mode
from osir.inference.tiling import restore_image
from osir.model_card import options_sha256
from osir.recognize import main, recognize
from osir.core.registry import ARCHS, OptionsError
from tests.conftest import FIXTURES

MANIFESTS = FIXTURES / "checkpoints"


def tiny(arch: str, seed: int = 0, **hp) -> torch.nn.Module:
    """A randomly initialised osir network; zero-initialised gains (NAFNet's beta / gamma) get values so
    that every tensor matters to the output."""
    torch.manual_seed(seed)
    net = ARCHS.build({"type": arch, **hp}, arch)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")) or "proj_out" in name or "zero_modules" in name:
                p.normal_(std=0.1)
    return net.eval()


def saved(net: torch.nn.Module, folder, name: str, layout: str = "osir"):
    """``net`` saved as osir's safetensors, a bare torch state dict (``pth``: the file format of the IR-SDE /
    Refusion / DA-CLIP releases) or under ``params_ema`` (the Real-ESRGAN releases' format).  osir's
    networks use the releases' key names; that the keys and shapes are the releases' own is checked from
    the key / shape manifests (``from_manifest``), not here."""
    if layout == "osir":
        path = folder / f"{name}.safetensors"
        save_network(net, path)
    else:
        path = folder / f"{name}.pth"
        state = {k: v.clone() for k, v in net.state_dict().items()}
        torch.save({"params_ema": state} if layout == "params_ema" else state, path)
    return path


def from_manifest(name: str, folder):
    """A file with the release's exact keys and shapes (tensors expanded from one value, so a 137 M
    parameter layout is a few kB) and the manifest's constructor."""
    layout = json.loads((MANIFESTS / name).read_text())
    state = {k: torch.randn(()).expand(*shape) if shape else torch.randn(()) for k, shape in layout["keys"].items()}
    path = folder / name.replace(".json", ".pth")
    torch.save(state, path)
    return path, layout


def restore(opt: dict, lq: torch.Tensor, seed: int = 0, state: dict | None = None, name: str = "g"):
    """Restore ``lq`` with the method ``opt`` builds (optionally with ``state`` loaded into ``name``)."""
    method = build_method(opt)
    method.setup(torch.device("cpu"))
    if state is not None:
        method.networks[name].load_state_dict(state)
    with evaluation_mode(method):
        return restore_image(method, {"lq": lq}, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- RRDBNet (spandrel)
@pytest.mark.parametrize("scale", [4, 2])
@pytest.mark.parametrize("layout", ["osir", "params_ema"])
def test_rrdbnet_is_recognised_by_spandrel_and_restores_as_the_original(tmp_path, layout, scale):
    hp = {"num_in_ch": 3, "num_out_ch": 3, "scale": scale, "num_feat": 16, "num_block": 2, "num_grow_ch": 32}
    net = tiny("RRDBNet", **hp)
    found = recognize(saved(net, tmp_path, "net_g", layout))
    assert (found.method, found.arch, found.network, found.detector) == ("RealESRGAN", "RRDBNet", "g", "spandrel")
    assert found.hyper_parameters == hp and not found.converted
    lq = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        expected = net(lq)
        assert torch.equal(found.build_network()(lq), expected)
    opt = found.method_options()
    assert opt["path"]["pretrained"] == {"g": found.path} and opt["method"]["scale"] == scale
    out = restore(opt, lq)
    assert out.shape == (1, 3, 12 * scale, 10 * scale)
    assert torch.allclose(out, expected, atol=1e-6)


def test_old_esrgan_layout_is_converted_to_basicsr_keys(tmp_path):
    """The original ESRGAN key layout (model.0, model.1.sub.*: spandrel's own network) becomes basicsr's
    RRDBNet keys; the file cannot be named in path.pretrained, so load_into loads the converted tensors."""
    from spandrel.architectures.ESRGAN import ESRGAN
    torch.manual_seed(1)
    old = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=4).eval()
    path = tmp_path / "old_esrgan.pth"
    torch.save(old.state_dict(), path)
    found = recognize(path)
    assert found.converted and found.arch == "RRDBNet" and "conv_first.weight" in found.state_dict
    assert found.hyper_parameters == {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 16, "num_block": 2,
                                      "num_grow_ch": 32}
    lq = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.allclose(found.build_network()(lq), old(lq), atol=1e-6)
    opt = found.method_options()
    assert opt["path"]["pretrained"] == {}
    method = build_method(opt)
    found.load_into(method)
    with torch.no_grad():
        assert torch.allclose(method.networks["g"].eval()(lq), old(lq), atol=1e-6)


# ----------------------------------------------------------------------------- conditional networks (osir)
def noise_output(net, found, size=(1, 3, 12, 20), **inputs):
    torch.manual_seed(5)
    x, mu = torch.rand(size), torch.rand(size)
    with torch.no_grad():
        return net(x, mu, 7, **inputs), found.build_network()(x, mu, 7, **inputs)


@pytest.mark.parametrize("layout", ["osir", "pth"])
def test_irsde_conditional_unet(tmp_path, layout):
    hp = {"in_nc": 3, "out_nc": 3, "nf": 8, "depth": 2, "attn_levels": None}
    net = tiny("ConditionalUNet", **hp)
    found = recognize(saved(net, tmp_path, "irsde", layout))
    assert (found.method, found.arch, found.detector) == ("IRSDE", "ConditionalUNet", "osir")
    assert found.hyper_parameters == hp
    a, b = noise_output(net, found)
    assert torch.equal(a, b)
    opt = found.method_options(sample_steps=3)
    assert opt["method"]["max_sigma"] == 10 and opt["method"]["T"] == 100       # the release's, not in the weights
    if layout == "osir":
        return                                  # restoring: once, from the .pth file
    lq = torch.rand(1, 3, 12, 20)
    out = restore(opt, lq, seed=3)
    assert out.shape == lq.shape and torch.isfinite(out).all()
    assert torch.equal(out, restore(found.method_options(pretrained=False, sample_steps=3), lq, 3, net.state_dict()))


def test_irsde_unet_without_attention_on_some_levels(tmp_path):
    hp = {"in_nc": 1, "out_nc": 1, "nf": 4, "depth": 3, "attn_levels": [1, 3]}
    net = tiny("ConditionalUNet", **hp)
    found = recognize(saved(net, tmp_path, "unet", "osir"))
    assert found.hyper_parameters == hp
    a, b = noise_output(net, found, size=(1, 1, 8, 16))
    assert torch.equal(a, b)


@pytest.mark.parametrize("lens", [False, True])
def test_refusion_conditional_nafnet(tmp_path, lens):
    hp = {"img_channel": 3, "width": 8, "enc_blk_nums": [1, 2], "middle_blk_num": 1, "dec_blk_nums": [2, 1],
          "global_skip": False, "lens_info": lens}
    net = tiny("ConditionalNAFNet", **hp)
    found = recognize(saved(net, tmp_path, "nafnet", "pth"))
    assert (found.method, found.arch) == ("Refusion", "ConditionalNAFNet") and found.hyper_parameters == hp
    inputs = {"lens_info": torch.rand(1, 3)} if lens else {}
    a, b = noise_output(net, found, **inputs)
    assert torch.equal(a, b)
    opt = found.method_options(sample_steps=2)
    assert opt["method"]["max_sigma"] == 50 and opt["method"]["sampler"] == "sde"
    assert opt["method"]["condition_keys"] == (["lens_info"] if lens else None)
    if not lens:
        lq = torch.rand(1, 3, 8, 12)
        out = restore(opt, lq, seed=1)
        reference = restore(found.method_options(pretrained=False, sample_steps=2), lq, 1, net.state_dict())
        assert torch.equal(out, reference)


def test_latent_refusion_networks_compression_model_and_latent_nafnet(tmp_path):
    """The compression model is RefusionCompression's network l; the 8-channel NAFNet is latent Refusion's,
    which needs the compression model (method.compression_path) to build."""
    comp_hp = {"in_ch": 3, "out_ch": 3, "ch": 4, "ch_mult": [2, 2], "embed_dim": 8}
    comp = tiny("CompressionUNet", **comp_hp)
    comp_path = saved(comp, tmp_path, "compression", "pth")
    found = recognize(comp_path)
    assert (found.method, found.arch, found.network) == ("RefusionCompression", "CompressionUNet", "l")
    assert found.hyper_parameters == comp_hp
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        assert torch.equal(found.build_network()(x), comp(x))
        assert torch.equal(restore(found.method_options(), x), comp(x))

    hp = {"img_channel": 8, "width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1],
          "global_skip": True, "lens_info": False}
    latent = tiny("ConditionalNAFNet", **hp)
    found = recognize(saved(latent, tmp_path, "latent_nafnet", "pth"))
    assert (found.method, found.hyper_parameters) == ("LatentRefusion", hp)
    assert any(n.startswith("global_skip") for n in found.notes)
    with pytest.raises(OptionsError, match="method.compression_path: latent Refusion needs the stage-1"):
        found.method_options()
    opt = found.method_options(compression_path=str(comp_path), compression={"type": "CompressionUNet", **comp_hp},
                               sample_steps=2)
    lq = torch.rand(1, 3, 16, 16)
    out = restore(opt, lq, seed=2)
    assert out.shape == lq.shape and torch.isfinite(out).all()


def test_daclip_universal_and_wild_ir_unets(tmp_path):
    universal = {"in_nc": 3, "out_nc": 3, "nf": 32, "ch_mult": [1, 2], "context_dim": 16, "use_degra_context": True,
                 "use_image_context": True, "cross_attention_levels": [1], "scale": 1.0}
    net = tiny("DACLIPUNet", **universal)
    found = recognize(saved(net, tmp_path, "universal-ir", "pth"))
    assert (found.method, found.arch) == ("DACLIPUIR", "DACLIPUNet") and found.hyper_parameters == universal
    emb = {"degradation": torch.randn(1, 16), "content": torch.randn(1, 16)}
    a, b = noise_output(net, found, **emb)
    assert torch.equal(a, b)
    with pytest.raises(OptionsError, match="method.daclip_path: the network is conditioned on DA-CLIP"):
        found.method_options()

    wild = {**universal, "nf": 16, "use_degra_context": False, "cross_attention_levels": [1], "context_dim": 8,
            "ch_mult": [2, 2, 2], "scale": 0.5}
    net = tiny("DACLIPUNet", **wild)
    found = recognize(saved(net, tmp_path, "wild-ir", "osir"))
    assert found.hyper_parameters == wild
    a, b = noise_output(net, found, size=(1, 3, 8, 16), content=torch.randn(1, 8))
    assert torch.equal(a, b)

    single = {**universal, "nf": 8, "use_degra_context": False, "use_image_context": False, "scale": 0.5,
              "cross_attention_levels": [1], "context_dim": 512}
    found = recognize(saved(tiny("DACLIPUNet", **single), tmp_path, "single", "osir"))
    assert found.hyper_parameters == single and found.settings["use_daclip"] is False
    restore(found.method_options(sample_steps=2), torch.rand(1, 3, 8, 8))


def test_daclip_vit_release_layout_of_a_tiny_clip(tmp_path):
    """The CLIP config is read from the shapes (widths, layers, patch, image size, vocabulary); heads are
    not in the weights, so building needs the config; the method then loads the file as released."""
    from open_clip.model import CLIP

    from osir.methods.daclip.model import DACLIP
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "mlp_ratio": 4.0,
                                              "layers": 3, "head_width": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 2}}
    torch.manual_seed(0)
    model = DACLIP(CLIP(**config)).eval()
    with torch.no_grad():
        for z in model.visual_control.transformer.zero_modules:
            z.weight.normal_(std=0.1)
    path = tmp_path / "daclip_tiny.pt"
    torch.save(model.state_dict(), path)
    found = recognize(path)
    assert (found.method, found.arch, found.network) == ("DACLIP", None, "daclip")
    readable = {"embed_dim": 16, "vision_cfg": {k: v for k, v in config["vision_cfg"].items() if k != "head_width"},
                "text_cfg": {k: v for k, v in config["text_cfg"].items() if k != "heads"}}
    assert found.hyper_parameters == {"controller_layers": 3, **readable}
    assert found.settings["clip_config"] == readable and found.settings["release_path"] == str(path)
    with pytest.raises(OptionsError, match="holds DACLIP weights, not one network"):
        found.build_network()
    method = build_method(found.method_options(clip_config=config))
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for got, want in zip(method.networks["daclip"].eval().encode_image(image), model.encode_image(image)):
            assert torch.equal(got, want)


def test_osediff_pkl_from_the_release_manifest(tmp_path):
    layout = json.loads((MANIFESTS / "osediff_pkl.json").read_text())
    payload = {**layout["module_lists"], "rank_unet": 4, "rank_vae": 4,
               **{part: {k: torch.zeros(()).expand(*shape) for k, shape in layout[part].items()}
                  for part in ("state_dict_unet", "state_dict_vae")}}
    path = tmp_path / "osediff.pkl"
    torch.save(payload, path)
    found = recognize(path)
    assert (found.method, found.arch) == ("OSEDiff", None)
    assert found.hyper_parameters == {"lora_rank": 4, "vae_lora_rank": 4, "vae_lora_encoder_targets": 32,
                                      "unet_lora_encoder_targets": 94, "unet_lora_decoder_targets": 148,
                                      "unet_lora_others_targets": 16, "trains_unet_conv_in": True,
                                      "cross_attention_dim": 1024}
    with pytest.raises(OptionsError, match="method.sd_path: osediff.pkl holds LoRA weights for Stable Diffusion 2.1"):
        found.method_options()
    with pytest.raises(OptionsError, match="not one network"):
        found.build_network()


# ----------------------------------------------------------------------------- release manifests
@pytest.mark.parametrize("manifest, method, arch", [
    ("irsde_conditional_unet_nf64_depth4.json", "IRSDE", "ConditionalUNet"),
    ("refusion_conditional_nafnet_w64.json", "Refusion", "ConditionalNAFNet"),
    ("refusion_latent_nafnet_haze.json", "LatentRefusion", "ConditionalNAFNet"),
    ("refusion_latent_unet_haze.json", "RefusionCompression", "CompressionUNet"),
    ("daclip_universal_ir_unet.json", "DACLIPUIR", "DACLIPUNet"),
    ("wild_ir_unet.json", "DACLIPUIR", "DACLIPUNet"),
])
def test_release_layouts_give_the_release_hyper_parameters(tmp_path, manifest, method, arch):
    path, layout = from_manifest(manifest, tmp_path)
    found = recognize(path)
    assert (found.method, found.arch, found.detector) == (method, arch, "osir")
    assert {k: found.hyper_parameters[k] for k in layout["constructor"]} == layout["constructor"]
    assert sum(v.numel() for v in found.state_dict.values()) == layout["num_parameters"]


def test_release_daclip_vit_b32_is_open_clips_vit_b32(tmp_path):
    path, _ = from_manifest("daclip_vit_b32.json", tmp_path)
    found = recognize(path)
    assert found.method == "DACLIP" and found.settings["clip_model"] == "ViT-B-32"
    assert found.hyper_parameters["vision_cfg"] == {"image_size": 224, "patch_size": 32, "width": 768,
                                                    "mlp_ratio": 4.0, "layers": 12}
    assert found.hyper_parameters["controller_layers"] == 12


def test_an_osir_runs_options_give_what_the_weights_cannot(tmp_path):
    """net_g_*.safetensors inside <run>/models/: lambda and T come from the run's options.yml."""
    hp = {"in_nc": 3, "out_nc": 3, "nf": 4, "depth": 2, "attn_levels": [2]}
    run = tmp_path / "experiments" / "denoise"
    (run / "models").mkdir(parents=True)
    path = saved(tiny("ConditionalUNet", **hp), run / "models", "net_g_ema_1000")
    (run / "options.yml").write_text(yaml.safe_dump({"name": "denoise", "method": {
        "type": "IRSDE", "max_sigma": 30, "T": 20, "sample_steps": 4, "network": {"type": "ConditionalUNet", **hp}}}))
    found = recognize(path)
    assert found.settings == {"max_sigma": 30, "T": 20, "sample_steps": 4}
    assert found.settings_source == f"the run's {run / 'options.yml'}"
    assert found.method_options()["method"]["max_sigma"] == 30
    out = tmp_path / "denoise.safetensors"
    assert main([str(path), "--convert", str(out)]) == 0
    card = yaml.safe_load((tmp_path / "denoise.card.yaml").read_text())
    assert card["training_options_sha256"] == options_sha256(yaml.safe_load((run / "options.yml").read_text()))
    assert card["method_settings"] == {"max_sigma": 30, "T": 20, "sample_steps": 4}


# ----------------------------------------------------------------------------- errors and the command line
def test_an_unknown_layout_lists_every_candidate_and_why(tmp_path):
    path = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        recognize(path)
    message = str(err.value)
    assert message.startswith(f"'{path}': no known layout matches its 2 tensors (weight, bias, ...); tried: ")
    for reason in ("RRDBNet (spandrel): spandrel recognises no architecture in these keys",
                   "ConditionalUNet (IR-SDE): no 'init_conv.weight', 'time_mlp.1.weight', 'final_conv.weight'",
                   "ConditionalNAFNet (Refusion): no 'intro.weight', 'ending.weight', 'time_mlp.1.weight'",
                   "CompressionUNet (latent Refusion): no 'init_conv.weight'",
                   "DACLIPUNet (DA-CLIP universal / wild IR): no 'init_conv.weight'",
                   "DA-CLIP ViT: no 'visual_control.conv1.weight'",
                   "OSEDiff (osediff.pkl): not a dict with 'state_dict_unet'"):
        assert reason in message


def test_an_architecture_spandrel_knows_but_osir_does_not_goes_to_the_spandrel_card(tmp_path):
    """Real-ESRGAN's compact network (SRVGGNetCompact, realesr-general-x4v3) is spandrel's 'Compact'; no osir
    method of its own runs it, so the spandrel card's detector (tried last) takes it."""
    from spandrel.architectures.Compact import Compact
    torch.save({"params": Compact(num_feat=8, num_conv=2, upscale=4).state_dict()}, tmp_path / "compact.pth")
    found = recognize(tmp_path / "compact.pth")
    assert (found.method, found.arch, found.detector) == ("SpandrelModel", None, "spandrel")
    assert (found.hyper_parameters["architecture"], found.hyper_parameters["scale"]) == ("RealESRGAN Compact", 4)


def test_a_near_miss_says_which_keys_differ(tmp_path):
    state = tiny("ConditionalUNet", nf=4, depth=2).state_dict()
    del state["mid_block2.block1.proj.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"ConditionalUNet \(IR-SDE\): keys read as .* but 1 missing keys: "
                                              r"mid_block2.block1.proj.weight"):
        recognize(tmp_path / "broken.pth")


@pytest.mark.parametrize("name", ["garbage.pth", "garbage.safetensors"])
def test_corrupt_and_missing_files_name_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=f"cannot read .*'{path}'"):
        recognize(path)
    with pytest.raises(CheckpointError, match=f"weights file not found: '{tmp_path / 'absent.pth'}'"):
        recognize(tmp_path / "absent.pth")


def test_cli_convert_writes_osir_layout_and_a_model_card_with_the_source_hash(tmp_path, capsys):
    hp = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 32}
    net = tiny("RRDBNet", **hp)
    source = saved(net, tmp_path, "RealESRGAN_tiny", "params_ema")
    out = tmp_path / "converted" / "realesrgan_tiny.safetensors"
    assert main([str(source), "--convert", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "method:   RealESRGAN" in printed and "num_block: 1" in printed and "detector: spandrel" in printed
    state = read_state_dict(out)
    assert state.keys() == net.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    card = yaml.safe_load((tmp_path / "converted" / "realesrgan_tiny.card.yaml").read_text())
    assert card["source"] == {"name": source.name, "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    assert card["file"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert card["method"] == "RealESRGAN" and card["hyper_parameters"] == hp and card["arch"] == "RRDBNet"
    assert recognize(out).hyper_parameters == hp


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    assert err.startswith("osir recognize: checkpoint error: cannot read")
    save_state_dict({"weight": torch.zeros(2)}, tmp_path / "w.safetensors")
    assert main([str(tmp_path / "w.safetensors"), "--convert", str(tmp_path / "out.bin")]) == 2
    assert "no known layout matches" in capsys.readouterr().err
