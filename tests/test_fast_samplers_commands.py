"""The VP solvers of ``osir.diffusion.solvers`` through the three commands (issue 24 point 1): test.py
(``--set method.sampler=... method.sample_steps=N``), ``osir restore --sampler --steps`` and ``osir.bench
steps``, for IR-SDE, Refusion in pixels and on latents, DA-CLIP's universal IR and its wild-IR network (no
degradation context), each a tiny random model of the real architecture whose weights are written and read
back through the loaders; the network-call counts are checked against the sampler's NFE for N steps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from osir import bench
from osir import restore as restore_command
from osir import test as test_script
from osir.core.checkpoint import save_network
from osir.core.options import load_options
from osir.core.registry import ARCHS, OptionsError
from osir.inference.load import build_method
from tests.conftest import set_keys, write_images, write_yaml

ROOT = Path(__file__).resolve().parents[1]

TINY_UNET = {"type": "ConditionalUNet", "nf": 4, "depth": 2, "attn_levels": [2]}
TINY_NAF = {"type": "ConditionalNAFNet", "img_channel": 3, "width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1,
            "dec_blk_nums": [1, 1]}
TINY_L = {"type": "CompressionUNet", "in_ch": 3, "out_ch": 3, "ch": 2, "ch_mult": [1, 2, 2, 2], "embed_dim": 4}
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2,
                                             "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
TINY_DACLIP_UNET = {"type": "DACLIPUNet", "nf": 32, "ch_mult": [1, 2], "context_dim": 16}
METHODS = {
    "IR-SDE": {"type": "IRSDE", "network": TINY_UNET, "clip_denoised": True},
    "Refusion": {"type": "Refusion", "network": TINY_NAF, "sampler": "posterior"},
    "latent Refusion": {"type": "LatentRefusion", "network": {**TINY_NAF, "img_channel": 4}, "compression": TINY_L,
                        "sampler": "posterior"},
    "DA-CLIP universal IR": {"type": "DACLIPUIR", "network": TINY_DACLIP_UNET, "clip_config": TINY_CLIP},
    "DA-CLIP wild IR": {"type": "DACLIPUIR", "clip_config": TINY_CLIP,
                        "network": {**TINY_DACLIP_UNET, "use_degra_context": False}},
}


def _options(root, name: str) -> dict:
    """Test options of a tiny random ``name`` with its weights written as a training run writes them."""
    gt = write_images(root / "gt", 2, (32, 32))
    lq = write_images(root / "lq", 2, (32, 32), seed=1)
    method = {**METHODS[name], "T": 20, "sample_steps": 4, "max_sigma": 25}
    if method["type"] == "LatentRefusion":
        torch.manual_seed(1)
        save_network(ARCHS.build(TINY_L), root / "net_l.safetensors")
        method["compression_path"] = str(root / "net_l.safetensors")
    opt = {"name": "tiny", "seed": 0, "method": method,
           "datasets": {"pairs": {"type": "PairedImageDataset", "dataroot_gt": str(gt), "dataroot_lq": str(lq)}},
           "metrics": {"psnr": {"type": "psnr"}},
           "path": {"results_root": str(root / "results")}}
    torch.manual_seed(0)
    built = build_method(load_options(write_yaml(root / "build.yml", opt)))
    save_network(built.networks["g"], root / "net_g.safetensors")
    return set_keys(opt, {"path.pretrained": {"g": str(root / "net_g.safetensors")}})


#: every registered sampler name (issue 24 point 1): osir's own three and diffusers' seven
ALL_SAMPLERS = ("posterior", "sde", "ode", "ddim", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "deis", "heun")


def test_the_sampler_registry_holds_the_ten_names():
    from osir.core.registry import SAMPLERS
    assert sorted(SAMPLERS.names()) == sorted(ALL_SAMPLERS)


def _nfe(sampler: str, steps: int) -> int:
    return 2 * steps - 1 if sampler == "heun" else steps


@pytest.mark.parametrize("name", list(METHODS))
def test_every_command_runs_the_vp_solvers(tmp_path, name, capsys):
    options = write_yaml(tmp_path / "tiny.yml", _options(tmp_path, name))
    # test.py with --set
    assert test_script.main(["-opt", str(options), "--set", "method.sampler=dpmpp_2m", "method.sample_steps=3"]) == 0
    metrics = json.loads((tmp_path / "results" / "tiny" / "pairs" / "metrics.json").read_text())
    assert metrics["count"] == 2 and metrics["mean"]["psnr"] > 0
    # osir restore --sampler --steps
    out = tmp_path / "restored"
    assert restore_command.main([str(tmp_path / "lq"), "-o", str(out), "--options", str(options), "--sampler", "unipc",
                                 "--steps", "3", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png"]
    # osir.bench steps, every registered sampler: the counted network calls per image are each sampler's NFE
    assert bench.main(["steps", "-opt", str(options), "--steps", "3", "2", "--samplers", *ALL_SAMPLERS,
                       "--output", str(tmp_path / "bench"), "--device", "cpu", "--threads", "1"]) == 0
    points = json.loads((tmp_path / "bench" / "tiny_steps.json").read_text())["points"]
    assert [(p["sampler"], p["steps"], p["nfe"]) for p in points] == \
        [(s, n, _nfe(s, n)) for s in ALL_SAMPLERS for n in (3, 2)]
    assert all(p["metrics"]["psnr"] > 0 for p in points)
    capsys.readouterr()


def test_method_settings_reach_every_sampler_that_takes_them():
    """``clip_denoised`` (a method setting) reaches the solvers too, ``eta`` the samplers with an eta; a setting
    the configured sampler does not take is refused naming those that do; a sampler asked for per call gets
    the settings it takes."""
    from osir.methods.irsde.method import IRSDE
    net = TINY_UNET
    assert IRSDE(network=net, sampler="dpmpp_2m", clip_denoised=True).sampler_extras == {"clip_denoised": (0.0, 1.0)}
    assert IRSDE(network=net, sampler="ddim", eta=0.5).sampler_extras == {"eta": 0.5}
    assert IRSDE(network=net, sampler="ddim").sampler_extras == {}             # DDIM's own eta 0
    with pytest.raises(OptionsError, match=r"method.eta does not apply to the sampler 'unipc' \(samplers that take "
                                           r"it: ddim, posterior\); --set method.eta=null to sample with 'unipc'"):
        IRSDE(network=net, sampler="unipc", eta=0.0)
    with pytest.raises(OptionsError, match=r"method.clip_denoised does not apply to the sampler 'ode' "
                                           r"\(samplers that take it: ddim, deis, dpmpp_2m, dpmpp_2m_sde, dpmpp_3m, "
                                           r"heun, posterior, unipc\)"):
        IRSDE(network=net, sampler="ode", clip_denoised=True)
    method = IRSDE(network=net, sampler="posterior", eta=0.0, clip_denoised=True)
    assert method.sampling("ddim")[2] == {"eta": 0.0, "clip_denoised": (0.0, 1.0)}
    assert method.sampling("dpmpp_3m")[2] == {"clip_denoised": (0.0, 1.0)}
    assert method.sampling("ode")[2] == {}


def test_clip_denoised_changes_a_solvers_output_and_keeps_x0_estimates_in_range():
    """With clamping, every x_0 estimate the solver reports lies in [0, 1] (image units); without, the random
    network's estimates leave it."""
    from osir.methods.irsde.method import IRSDE
    torch.manual_seed(0)
    clamped = IRSDE(network=TINY_UNET, sampler="dpmpp_2m", clip_denoised=True, T=20, sample_steps=5, max_sigma=50)
    plain = IRSDE(network=TINY_UNET, sampler="dpmpp_2m", T=20, sample_steps=5, max_sigma=50)
    plain.networks["g"].load_state_dict(clamped.networks["g"].state_dict())
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    estimates = {}
    for label, method in (("clamped", clamped), ("plain", plain)):
        fn, timesteps, extras = method.sampling()
        seen = []
        with torch.no_grad():
            fn(method.net("g"), method.sde.prior_sample(lq, torch.Generator().manual_seed(2)), lq, method.sde,
               timesteps, None, callback=lambda d: seen.append(d["x0"]), **extras)
        estimates[label] = torch.stack(seen)
    assert estimates["clamped"].min() >= 0 and estimates["clamped"].max() <= 1
    assert estimates["plain"].min() < 0 or estimates["plain"].max() > 1


def test_release_presets_show_their_measured_few_step_alternative(capsys):
    """``osir restore --list-models`` prints each preset's measured few-step setting (issue 24 point 4); its
    sampler is registered and its steps within the release's T."""
    from osir.core.card import release_options, releases
    from osir.core.registry import SAMPLERS
    assert restore_command.main(["--list-models"]) == 0
    listing = capsys.readouterr().out
    stored = json.loads((ROOT / "benchmarks" / "reference" / "fast_samplers.json").read_text())["demos"]["Refusion"]
    psnr = {p["nfe_asked"]: p["psnr"] for p in stored["points"] if p["sampler"] == "posterior"}
    assert f"few steps: --sampler posterior --steps 5 ({psnr[5] - psnr[100]:+.2f} dB" in listing   # the stored run
    with_alternative = [(card, rel) for card, rel in releases().values() if rel.few_steps is not None]
    assert {rel.name for _, rel in with_alternative} == {"irsde-demo", "refusion-demo"}
    for card, rel in with_alternative:
        method = release_options(card, rel)["method"]
        assert rel.few_steps.sampler in SAMPLERS and 1 <= rel.few_steps.steps <= method["T"]
        assert rel.few_steps.flags() in listing
