"""The ``ZeroShot`` method (issue 25 point 5): an ADM prior, a task's operator and a registered zero-shot sampler,
through test.py and train.py like every other method.  Tiny random ADM priors of the real architecture; the
measurement's rendering as an LQ image is checked against its definition, and the restorations against what the
samplers must satisfy (y returned for A = I and sigma_y = 0; DDNM's output consistent with y)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osir.core.checkpoint import save_network
from osir.core.registry import OptionsError
from osir.methods.zeroshot.adm import ADMUNet
from osir.methods.zeroshot.measurement import (TASKS, Measurement, Task, ZeroShotMeasurement, measurement_from_image,
                                               measurement_image)
from osir.methods.zeroshot.method import ZeroShot
from tests.conftest import write_images, write_yaml

#: a tiny ADM with the releases' features (scale-shift norm, residual up/down-sampling, attention)
TINY_PRIOR = {"type": "ADMUNet", "image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
              "attention_resolutions": 8, "num_heads": 2, "use_scale_shift_norm": True, "resblock_updown": True}


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("upsampled", [False, True])
def test_the_lq_image_gives_back_the_measurement_exactly(task, upsampled):
    """``measurement_image`` renders y (any task: low-resolution, masked, grey, noisy) as an LQ image in [0, 1]
    units without clipping; ``measurement_from_image`` reads the very y back (also from the upsampled rendering)."""
    m = Measurement(task, 0.2, 3, upsampled)
    operator = m.operator((16, 16))
    x = torch.rand(2, 3, 16, 16, generator=generator(0), dtype=torch.float64) * 2 - 1
    y = operator.measure(x, generator(1))
    repeat = m.factor if upsampled else 1
    lq = measurement_image(operator, y, repeat)
    assert lq.shape == (2, 3, 16 // m.scale, 16 // m.scale)
    assert torch.allclose(measurement_from_image(operator, lq, repeat), y, atol=1e-12, rtol=0)


def test_the_degradation_measures_with_the_methods_operator_and_the_items_seed():
    """``ZeroShotMeasurement``: y = A(2 gt - 1) + sigma_y n with the operator ``Measurement.operator`` builds and n
    from the item's random stream; the item carries the measurement for the method."""
    gt = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    lq, numbers = ZeroShotMeasurement("inpaint_box", 0.1, operator_seed=7)(gt, np.random.default_rng(5))
    m = Measurement("inpaint_box", 0.1, 7)
    operator = m.operator((16, 16))
    x = torch.from_numpy(gt.transpose(2, 0, 1).astype(np.float64))[None] * 2 - 1
    noise = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 3, 16, 16)))
    expected = measurement_image(operator, operator(x) + 0.1 * noise)[0].numpy().transpose(1, 2, 0)
    assert np.allclose(lq, expected, atol=1e-6)
    batch = {"degradation": {k: torch.tensor([v, v]) for k, v in numbers.items()}}
    carried = Measurement.of_batch(batch)                 # data loaders stack the numbers as float32 tensors
    assert (carried.task, carried.operator_seed, carried.upsampled) == (m.task, m.operator_seed, m.upsampled)
    assert carried.sigma_y == pytest.approx(m.sigma_y, rel=1e-7)


def _tiny(**kw) -> ZeroShot:
    torch.manual_seed(0)
    return ZeroShot(prior=TINY_PRIOR, T=100, **kw)


@pytest.mark.parametrize("sampler", ["ddrm", "ddnm"])
def test_denoising_without_noise_returns_the_input(sampler):
    """A = I and sigma_y = 0: the posterior is the measurement itself, whatever the prior (a random one here)."""
    method = _tiny(task="denoise", sigma_y=0.0, sampler=sampler, sample_steps=5)
    lq = torch.rand(1, 3, 16, 16, generator=generator(1)) * 0.8 + 0.1
    with torch.no_grad():
        out = method.restore({"lq": lq}, generator(2))
    assert out.shape == lq.shape and torch.allclose(out, lq, atol=1e-5)


def test_ddnm_super_resolution_is_consistent_with_the_low_resolution_input():
    """x2 average-pooling SR, sigma_y = 0: DDNM's sample pooled is the measurement (range-null-space
    decomposition, in the prior's units before ``restore`` clips to [0, 1]); the restored image is that sample
    mapped to [0, 1] and clipped."""
    method = _tiny(task="sr2_pool", sigma_y=0.0, sampler="ddnm", sample_steps=5)
    assert method.scale == 2
    lq = torch.rand(1, 3, 8, 8, generator=generator(1)) * 0.5 + 0.25
    with torch.no_grad():
        x = method.sample({"lq": lq}, generator(2))
        out = method.restore({"lq": lq}, generator(2))
    assert x.shape == out.shape == (1, 3, 16, 16)
    assert torch.allclose(F.avg_pool2d(x, 2), 2 * lq - 1, atol=1e-5)
    assert torch.equal(out, ((x + 1) / 2).clamp(0, 1))


def test_a_batch_restores_with_the_operator_its_items_carry_and_a_scale_mismatch_is_refused():
    """The items' measurement wins over the configured task (a test set per task, one method), as long as the
    output scale agrees."""
    method = _tiny(task="denoise", sigma_y=0.0, sampler="ddnm", sample_steps=3, lq_upsampled=True)
    gt = torch.rand(1, 3, 16, 16, generator=generator(3))
    inpaint = Measurement("inpaint_box", 0.0, 1, True)
    operator = inpaint.operator((16, 16))
    lq = measurement_image(operator, operator(gt * 2 - 1))
    batch = {"lq": lq, "degradation": {k: torch.tensor([v]) for k, v in inpaint.as_numbers().items()}}
    with torch.no_grad():
        x = method.sample(batch, generator(4))
    kept = operator(torch.ones(1, 3, 16, 16, dtype=torch.float64)) != 0     # the observed pixels
    assert 0 < kept.float().mean() < 1
    assert torch.allclose(x[kept], (gt * 2 - 1)[kept], atol=1e-5)            # are kept
    low = Measurement("sr2_pool", 0.0, 0, False)
    with pytest.raises(OptionsError, match="measured for sr2_pool at scale 2, the method restores at scale 1"):
        method.restore({"lq": lq[..., :8, :8], "degradation": {k: torch.tensor([v]) for k, v in
                                                               low.as_numbers().items()}}, generator(4))


def test_settings_a_sampler_does_not_take_are_refused():
    with pytest.raises(OptionsError, match=r"method.sampler_settings: zeta not taken by the sampler 'ddnm' "
                                           r"\(it takes: "):
        _tiny(sampler="ddnm", sampler_settings={"zeta": 0.4})
    with pytest.raises(OptionsError, match="method.sampler: unknown zero-shot sampler 'dpss'"):
        _tiny(sampler="dpss")


def test_a_released_prior_file_loads_strictly(tmp_path):
    """``prior_path``: a plain state dict (the releases' format) loaded into the configured architecture."""
    spec = {k: v for k, v in TINY_PRIOR.items() if k != "type"}
    torch.manual_seed(4)
    saved = ADMUNet(**spec).state_dict()
    torch.save(saved, tmp_path / "prior.pt")
    method = ZeroShot(prior=TINY_PRIOR, prior_path=str(tmp_path / "prior.pt"))
    loaded = method.networks["prior"].state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert method.pretrained["prior"] == str(tmp_path / "prior.pt")


def _options(root, **method) -> dict:
    gt = write_images(root / "gt", 2, (16, 16))
    sets = {task: {"type": "SyntheticPairDataset", "dataroot_gt": str(gt),
                   "degradation": {"type": "ZeroShotMeasurement", "task": task, "sigma_y": 0.05, "operator_seed": 1,
                                   "upsampled": True}}
            for task in ("inpaint_box", "sr2_pool", "denoise")}
    return {"name": "tiny_zeroshot", "seed": 0,
            "method": {"type": "ZeroShot", "prior": TINY_PRIOR, "T": 100, "sampler": "ddnm", "sample_steps": 3,
                       "lq_upsampled": True, **method},
            "datasets": sets, "metrics": {"psnr": {"type": "psnr"}}, "path": {"results_root": str(root / "results")}}


def test_test_py_restores_each_test_set_with_its_own_operator(tmp_path):
    """test.py with one ZeroShot method and three test sets made by ``ZeroShotMeasurement`` (inpainting, x2 SR,
    denoising): each set is restored and scored with the common metric suite."""
    from osir import test as test_script
    from osir.inference.load import build_method
    from osir.core.options import load_options
    opt = _options(tmp_path)
    torch.manual_seed(0)
    built = build_method(load_options(write_yaml(tmp_path / "build.yml", opt)))
    save_network(built.networks["prior"], tmp_path / "net_prior.safetensors")
    opt["path"]["pretrained"] = {"prior": str(tmp_path / "net_prior.safetensors")}
    assert test_script.main(["-opt", str(write_yaml(tmp_path / "tiny.yml", opt))]) == 0
    for task in ("inpaint_box", "sr2_pool", "denoise"):
        metrics = json.loads((tmp_path / "results" / "tiny_zeroshot" / task / "metrics.json").read_text())
        assert metrics["count"] == 2 and np.isfinite(metrics["mean"]["psnr"])


def test_train_py_trains_the_prior_alone_on_clean_images(tmp_path, capsys):
    """train.py fits the prior by DDPM's loss on the GT images (no pairs), saves it, and validation restores the
    inpainting set zero-shot, with the input's PSNR beside the restored one (LQ and GT share their size)."""
    from osir.train import main
    opt = _options(tmp_path)
    opt["datasets"] = {"train": {"type": "SyntheticPairDataset", "dataroot_gt": str(tmp_path / "gt"), "gt_size": 16},
                       "val": opt["datasets"]["inpaint_box"]}
    opt.update(train={"total_iter": 3, "optimizers": {"prior": {"type": "Adam", "lr": 1e-3}}},
               val={"freq": 3}, logger={"print_freq": 1, "checkpoint_freq": 3},
               path={**opt["path"], "experiments_root": str(tmp_path / "experiments"),
                     "tb_logger_root": str(tmp_path / "tb")})
    assert main(["-opt", str(write_yaml(tmp_path / "train.yml", opt))]) == 0
    saved = sorted((tmp_path / "experiments" / "tiny_zeroshot" / "models").glob("net_prior_*.safetensors"))
    assert saved
    assert re.search(r"\[val\] psnr: input \d+\.\d+ -> restored \d+\.\d+", capsys.readouterr().out)


@pytest.mark.parametrize("release, layout", [("ffhq_10m", "adm_ffhq256.json"),
                                             ("256x256_diffusion_uncond", "adm_imagenet256_uncond.json")])
def test_a_released_prior_is_recognised_from_its_keys_and_shapes(release, layout):
    """The card's detector: a state dict with a release's keys and shapes (built from the release's published
    layout, copied into tests/fixtures) is that release's prior for ZeroShot; one tensor of another shape is
    not."""
    from pathlib import Path
    from osir.core.recognition import NoMatch
    from osir.methods.zeroshot.adm import ADM_RELEASES
    from osir.methods.zeroshot.detect import adm_prior
    keys = json.loads((Path(__file__).parent / "fixtures" / "checkpoints" / layout).read_text())["keys"]
    state = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    found = adm_prior(state, Path(ADM_RELEASES[release]["file"]))
    assert (found.method, found.arch, found.network, found.network_option) == ("ZeroShot", "ADMUNet", "prior", "prior")
    assert found.hyper_parameters == ADM_RELEASES[release]["constructor"]
    state["out.2.weight"] = torch.empty(3, *keys["out.2.weight"][1:], device="meta")   # no learned variance
    with pytest.raises(NoMatch, match="not of a released configuration"):
        adm_prior(state, Path("other.pt"))


def test_a_released_prior_restores_under_its_model_name(tmp_path, monkeypatch, capsys):
    """``--model zeroshot-ffhq256`` with a file of the release's published layout (random values, see
    test_zeroshot_adm.release_like_state): the release's architecture takes the file under ``method.prior`` and a
    64x64 LQ comes back at 256x256 (the preset's x4 task); ``--list-models`` names both released priors with
    their published files; the ImageNet preset's architecture is the release's constructor."""
    import yaml
    from PIL import Image
    from osir.__main__ import main as osir_main
    from osir.core.card import release_options, releases
    from osir.methods.zeroshot.adm import ADM_RELEASES
    from tests.test_zeroshot_adm import release_like_state
    monkeypatch.chdir(tmp_path)
    torch.save(release_like_state("ffhq_10m", torch.Generator().manual_seed(0)), "ffhq_10m.pt")
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save("lq.png")
    assert osir_main(["restore", "lq.png", "-o", "out", "--model", "zeroshot-ffhq256", "--weights", "ffhq_10m.pt",
                      "--steps", "1"]) == 0
    assert Image.open("out/lq.png").size == (256, 256)
    assert osir_main(["restore", "lq.png", "-o", "out_dps", "--prior", "ffhq_10m.pt", "--task", "sr4",
                      "--sampler", "dps", "--steps", "1"]) == 0       # the command; autograd through the prior
    assert Image.open("out_dps/lq.png").size == (256, 256)              # recognised from its keys, x4 by --task
    assert osir_main(["restore", "lq.png", "-o", "out2", "--prior", "ffhq_10m.pt", "--weights", "other.pt"]) == 2
    assert "--prior and --weights: give one weights file" in capsys.readouterr().err
    assert osir_main(["restore", "lq.png", "-o", "out2", "--prior", "ffhq_10m.pt", "--task", "sr4",
                      "--set", "method.task=denoise"]) == 2
    assert "--task and --set method.task=...: give one of them" in capsys.readouterr().err
    assert osir_main(["restore", "--list-models"]) == 0
    listing = capsys.readouterr().out
    assert "zeroshot-ffhq256" in listing and "zeroshot-imagenet256" in listing
    for name, release in (("zeroshot-ffhq256", "ffhq_10m"), ("zeroshot-imagenet256", "256x256_diffusion_uncond")):
        card, rel = releases()[name]
        assert rel.weights.file == ADM_RELEASES[release]["file"]
        prior = dict(release_options(card, rel)["method"]["prior"])
        assert prior.pop("type") == "ADMUNet"
        constructor = ADM_RELEASES[release]["constructor"]
        assert all(constructor[k] == v for k, v in prior.items()), yaml.safe_dump(prior)
        assert not {k for k, v in constructor.items() if k not in prior and v not in (False, -1, 0.0)}, name


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_a_diffusers_ddpm_pipeline_folder_is_a_prior(tmp_path, prediction):
    """Point 1b: a UNet2DModel and its scheduler saved by diffusers' DDPMPipeline (the google/ddpm-* layout)
    restore through ``method.prior_folder``: abar_t is the scheduler's (diffusers' own float32 values, here in
    float64), eps is the network's output turned into noise for the scheduler's prediction type (checked through
    x0 written from the other side), and a denoising run keeps the image size."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    scheduler = DDPMScheduler(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2", prediction_type=prediction)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "ddpm")
    method = ZeroShot(prior_folder=str(tmp_path / "ddpm"), task="denoise", sigma_y=0.1, sampler="ddnm",
                      sample_steps=3)
    assert method.T == 200 and method.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(method.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=1e-6, atol=1e-7)
    x, t = torch.randn(2, 3, 16, 16), 150
    abar = float(method.alphas_cumprod[t])
    with torch.no_grad():
        out = unet(x, torch.full((2,), t)).sample
        eps = method.prior().eps(x, t)
    x0 = {"epsilon": (x - math.sqrt(1 - abar) * out) / math.sqrt(abar),
          "v_prediction": math.sqrt(abar) * x - math.sqrt(1 - abar) * out, "sample": out}[prediction]
    torch.testing.assert_close(eps, (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        restored = method.restore({"lq": torch.rand(1, 3, 16, 16)}, generator(1))
    assert restored.shape == (1, 3, 16, 16) and torch.isfinite(restored).all()


def test_a_folder_that_is_not_a_ddpm_pipeline_is_named(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(OptionsError, match="no model_index.json"):
        ZeroShot(prior_folder=str(tmp_path))
    (tmp_path / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DModel"]}')
    with pytest.raises(OptionsError, match="has no scheduler/ component"):
        ZeroShot(prior_folder=str(tmp_path))


def test_dps_and_diffpir_take_their_release_configs_value_for_the_task(monkeypatch):
    """DPS's zeta per task is its release's config value (0.3 for SR x4 and deblurring, 0.5 for inpainting),
    DiffPIR's its release's (0.25 SR, 1.0 inpainting); a value in sampler_settings wins; a task without a
    config value leaves the sampler's default."""
    from osir.core.registry import ZERO_SHOT_SAMPLERS
    seen = []

    def spy(prior, operator, y, *, steps=1, generator=None, zeta=1.0, **rest):
        seen.append(zeta)
        return torch.zeros(y.shape[0], 3, *operator.input_shape[-2:])
    for name in ("dps", "diffpir"):
        monkeypatch.setitem(ZERO_SHOT_SAMPLERS._entries, name, spy)
    for task, sampler, settings, expected in (("sr4_bicubic", "dps", {}, 0.3), ("inpaint_box", "dps", {}, 0.5),
                                              ("motion_blur", "dps", {}, 0.3), ("denoise", "dps", {}, 1.0),
                                              ("sr4_pool", "dps", {"zeta": 0.7}, 0.7),
                                              ("sr2_pool", "diffpir", {}, 0.25), ("inpaint_random", "diffpir", {}, 1.0)):
        method = _tiny(task=task, sigma_y=0.05, sampler=sampler, sampler_settings=settings)
        size = 4 if task.startswith("sr4") else 8 if task.startswith("sr2") else 16
        method.restore({"lq": torch.rand(1, 3, size, size)}, generator(0))
        assert seen[-1] == expected, (task, sampler)


def test_the_cards_restore_shortcuts_name_options_the_method_takes():
    """``--task``'s short values are tasks ZeroShot takes; ``--prior`` is ``--weights``."""
    import typing
    from osir.core.card import card_of_method
    flags = {f.flag: f for f in card_of_method("ZeroShot").flags}
    assert flags["--prior"].option == "weights" and flags["--task"].option == "method.task"
    assert set(flags["--task"].aliases.values()) <= set(typing.get_args(Task)) == set(TASKS)
    assert flags["--task"].value("sr4") == "sr4_bicubic" and flags["--task"].value("sr4_pool") == "sr4_pool"


def test_zero_shot_defaults_are_the_authors_config_values():
    """The defaults that the docstrings attribute to the authors' configs, against those values
    (tests/fixtures/release_configs/zeroshot_samplers.json, read from the repositories at the commits it names):
    DPS's zeta per task and its x0 clamp, DiffPIR's zeta / steps per task and its lambda (1 in the release's
    [0, 1] units = 0.25 for [-1, 1] priors), TDS's particles, steps and clip_twisted, PiGDM's eta."""
    import inspect
    from pathlib import Path
    from osir.methods.zeroshot.guidance_samplers import diffpir, dps, pigdm
    from osir.methods.zeroshot.method import TASK_SETTINGS, TASK_STEPS
    from osir.methods.zeroshot.smc import tds
    facts = json.loads((Path(__file__).parent / "fixtures" / "release_configs" / "zeroshot_samplers.json").read_text())

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default
    scale = facts["dps"]["scale"]
    for task in ("sr2_bicubic", "sr2_pool", "sr4_bicubic", "sr4_pool"):
        assert TASK_SETTINGS["dps"][task]["zeta"] == scale["configs/super_resolution_config.yaml"]
        assert TASK_SETTINGS["diffpir"][task]["zeta"] == facts["diffpir"]["configs/sisr.yaml"]["zeta"]
    assert TASK_SETTINGS["dps"]["gaussian_blur"]["zeta"] == scale["configs/gaussian_deblur_config.yaml"]
    assert TASK_SETTINGS["dps"]["motion_blur"]["zeta"] == scale["configs/motion_deblur_config.yaml"]
    assert default(dps, "zeta") == scale["configs/phase_retrieval_config.yaml"]
    assert default(dps, "clip_denoised") is facts["dps"]["clip_denoised"]["configs/diffusion_config.yaml"]
    inpaint = facts["diffpir"]["configs/inpaint.yaml"]
    for task in ("inpaint_box", "inpaint_random"):
        assert TASK_SETTINGS["dps"][task]["zeta"] == scale["configs/inpainting_config.yaml"]
        assert TASK_SETTINGS["diffpir"][task]["zeta"] == inpaint["zeta"]
        assert TASK_STEPS["diffpir"][task] == inpaint["iter_num"]
    deblur = facts["diffpir"]["configs/deblur.yaml"]
    assert (default(diffpir, "zeta"), default(diffpir, "steps")) == (deblur["zeta"], deblur["iter_num"])
    assert all(s["lam"] == deblur["lambda_"] / 4 for s in TASK_SETTINGS["diffpir"].values())
    tds_facts = facts["tds"]
    assert default(tds, "particles") == tds_facts["image_exp/image_confs/base_sampler_conf.yml"]["num_particles"]
    model_conf = tds_facts["image_exp/image_confs/mnist_model_and_diffusion_conf.yml"]
    assert (default(tds, "clip_twisted"), default(tds, "steps")) == (model_conf["clip_twisted"],
                                                                   model_conf["timestep_respacing"])
    pgdm = facts["pigdm"]["_configs/algo/pgdm.yaml"]
    assert (default(pigdm, "eta"), default(pigdm, "guidance")) == (pgdm["eta"], "algorithm") and pgdm["awd"]
