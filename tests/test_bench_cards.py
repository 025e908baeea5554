"""osir.bench knows no method (issue 22): the stand-ins for missing weight files come from each method's card
(``MethodCard.standin``, ``osir/methods/<name>/standin.py``), the NFE's network from ``MethodCard.noise_network``,
and restorations are counted and timed through a wrapper handed to the inference layer, not by replacing a
module's function or a method's ``restore``.

The expected notes and options below are literally what ``osir.bench.efficiency_options`` produced before the
stand-ins moved into the method folders (commit f4ddddc, run on the same sections)."""
import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import osir.engine.trainer
import osir.engine.validation
import osir.inference
import osir.inference.load
from osir import bench
from osir.core.card import cards, resolve
from osir.core.options import load_options
from osir.core.registry import ARCHS
from tests.conftest import tiny_options, write_images, write_yaml
from tests.test_cards import names_outside_docstrings

MISSING = "/nonexistent/osir-bench"
METHOD_NAMES = ["IRSDE", "Refusion", "LatentRefusion", "RefusionCompression", "DACLIP", "DACLIPUIR", "OSEDiff",
                "RealESRGAN", "ConditionalUNet", "ConditionalNAFNet", "CompressionUNet", "DACLIPUNet", "RRDBNet",
                "release_path", "daclip_path", "compression_path", "vgg_path"]
# open_clip's ViT-B-32 config, as the old code put it into method.clip_config
VIT_B_32 = {"embed_dim": 512,
            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}
TINY_COMPRESSION = {"type": "CompressionUNet", "ch": 2, "ch_mult": [1, 2], "embed_dim": 2}


def test_bench_names_no_method_or_method_option_outside_docstrings_and_comments():
    """Beyond the method names every shared module is checked for (tests/test_cards.py), bench names none of
    the options only some methods have (their stand-ins live in the method folders)."""
    assert names_outside_docstrings(Path(bench.__file__), set(METHOD_NAMES)) == []


def test_every_card_standin_resolves_to_a_function():
    with_standin = {c.name: c.standin for c in cards() if c.standin}
    assert set(with_standin) == {"daclip", "osediff", "realesrgan", "refusion"}
    for name, reference in with_standin.items():
        assert reference == f"osir.methods.{name}.standin:standins"
        assert callable(resolve(reference))
    assert next(c for c in cards() if c.name == "irsde").standin is None      # random initial weights suffice


def _standins(card_name: str):
    return resolve(next(c for c in cards() if c.name == card_name).standin)


# (card, method section, expected notes, expected section afterwards) as the old bench produced them
CASES = [
    ("osediff",
     {"type": "OSEDiff", "release_path": f"{MISSING}/osediff.pkl",
      "prompt": {"type": "dape", "dape_path": f"{MISSING}/DAPE.pth", "extra": "", "ram_path": f"{MISSING}/ram.pth"}},
     [f"method.release_path: '{MISSING}/osediff.pkl' not found: random initial weights",
      f"method.prompt (dape): dape_path '{MISSING}/DAPE.pth', ram_path '{MISSING}/ram.pth' not found: an empty "
      "prompt instead (the prompt extractor is not measured)"],
     {"type": "OSEDiff", "release_path": None, "prompt": {"type": "EmptyPrompt"}}),
    ("osediff",
     {"type": "OSEDiff", "release_path": None, "prompt": {"type": "FixedPrompt", "prompt": "a cat"}},
     [], None),
    ("daclip",
     {"type": "DACLIP", "clip_model": "ViT-B-32", "release_path": f"{MISSING}/daclip_ViT-B-32.pt"},
     [f"method.release_path: '{MISSING}/daclip_ViT-B-32.pt' not found: random initial weights"],
     {"type": "DACLIP", "clip_model": "ViT-B-32", "release_path": None}),
    ("daclip",
     {"type": "DACLIPUIR", "clip_model": "ViT-B-32", "daclip_path": f"{MISSING}/daclip_ViT-B-32.pt"},
     [f"method.daclip_path: '{MISSING}/daclip_ViT-B-32.pt' not found: random DA-CLIP weights (open_clip's "
      "ViT-B-32 architecture)"],
     {"type": "DACLIPUIR", "clip_model": "ViT-B-32", "daclip_path": None, "clip_config": VIT_B_32}),
    ("daclip",
     {"type": "DACLIPUIR", "use_daclip": False, "daclip_path": f"{MISSING}/daclip_ViT-B-32.pt"},
     [f"method.daclip_path: '{MISSING}/daclip_ViT-B-32.pt' not found: random DA-CLIP weights"],
     {"type": "DACLIPUIR", "use_daclip": False, "daclip_path": None}),
    ("realesrgan",
     {"type": "RealESRGAN", "perceptual_weight": 1.0, "vgg_path": f"{MISSING}/vgg19-dcbb9e9d.pth"},
     [f"method.vgg_path: '{MISSING}/vgg19-dcbb9e9d.pth' not found: perceptual loss off (training only)"],
     {"type": "RealESRGAN", "perceptual_weight": 0.0, "vgg_path": f"{MISSING}/vgg19-dcbb9e9d.pth"}),
    ("realesrgan",                              # no perceptual loss: nothing to turn off
     {"type": "RealESRGAN", "perceptual_weight": 0.0, "vgg_path": f"{MISSING}/vgg19-dcbb9e9d.pth"}, [], None),
]


@pytest.mark.parametrize("card_name, section, notes, after", CASES,
                         ids=[f"{c[0]}-{c[1]['type']}-{i}" for i, c in enumerate(CASES)])
def test_card_standins_give_the_old_notes_and_options(tmp_path, card_name, section, notes, after):
    section = copy.deepcopy(section)
    before = copy.deepcopy(section)
    assert _standins(card_name)(section, tmp_path / "scratch", 3) == notes
    assert section == (before if after is None else after)


def test_standins_keep_files_that_exist(tmp_path):
    release = tmp_path / "osediff.pkl"
    release.write_bytes(b"")
    section = {"type": "OSEDiff", "release_path": str(release),
               "prompt": {"type": "dape", "ram_path": str(release), "dape_path": None}}
    before = copy.deepcopy(section)
    assert _standins("osediff")(section, tmp_path, 0) == [] and section == before


def test_latent_refusion_standin_writes_a_seeded_random_compression_model(tmp_path):
    section = {"type": "LatentRefusion", "compression_path": f"{MISSING}/latent_dehaze.pth",
               "compression": dict(TINY_COMPRESSION)}
    scratch = tmp_path / "scratch"
    notes = _standins("refusion")(section, scratch, 3)
    assert notes == [f"method.compression_path: '{MISSING}/latent_dehaze.pth' not found: random compression model"]
    file = scratch / "random_compression.safetensors"
    assert section["compression_path"] == str(file)
    torch.manual_seed(3)                         # the old code: the options' seed, then the architecture built
    expected = ARCHS.build(dict(TINY_COMPRESSION)).state_dict()
    written = load_file(str(file))
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[k], expected[k]) for k in expected)
    assert _standins("refusion")({"type": "Refusion"}, scratch, 3) == []       # pixel-space: nothing to replace


def test_efficiency_options_adds_the_card_notes_after_path_pretrained(tmp_path):
    opt = {"name": "latent", "seed": 3,
           "method": {"type": "LatentRefusion", "T": 20, "compression_path": f"{MISSING}/latent_dehaze.pth",
                      "network": {"type": "ConditionalNAFNet", "img_channel": 2, "width": 4},
                      "compression": dict(TINY_COMPRESSION)},
           "path": {"pretrained": {"g": f"{MISSING}/net_g.pth"}}}
    path = write_yaml(tmp_path / "latent.yml", opt)
    loaded, notes = bench.efficiency_options(path, [], tmp_path / "scratch")
    assert notes == [f"path.pretrained.g: '{MISSING}/net_g.pth' not found: random initial weights",
                     f"method.compression_path: '{MISSING}/latent_dehaze.pth' not found: random compression model"]
    assert loaded["path"]["pretrained"] == {}
    method = osir.engine.trainer.build_method(loaded)            # the stand-in file loads like the real one
    assert method.pretrained["l"] == str(tmp_path / "scratch" / "random_compression.safetensors")
    # the NFE's network is the card's (refusion: "g"), even where another network is called more
    with bench.CallCounter(method) as counter:
        counter.samples.update(l=5, g=1)
        assert bench.noise_network(method, counter, bench.card_of(loaded)) == "g"
        assert bench.noise_network(method, counter) == "l"                    # without a card: the most called


class Watch:
    """Records, at every forward call of a built method's networks, whether the method's ``restore`` is
    shadowed by an instance attribute and whether ``restore_image`` is still the inference layer's own
    function in ``osir.engine.validation`` and ``osir.inference`` (wraps ``build_method`` to see the method)."""

    def __init__(self, monkeypatch):
        self.methods, self.seen = [], []
        self.validation_fn = osir.engine.validation.restore_image
        self.inference_fn = osir.inference.restore_image
        build = osir.inference.load.build_method

        def watched(opt):
            method = build(opt)
            self.methods.append(method)
            for net in method.networks.values():
                net.register_forward_pre_hook(lambda *_: self.seen.append(self.state(method)))
            return method
        monkeypatch.setattr(osir.inference.load, "build_method", watched)

    def state(self, method) -> tuple:
        return ("restore" in vars(method), osir.engine.validation.restore_image is self.validation_fn,
                osir.inference.restore_image is self.inference_fn)


def test_steps_counts_and_times_without_replacing_restore_or_restore_image(tmp_path, monkeypatch):
    watch = Watch(monkeypatch)
    opt = tiny_options(tmp_path, **{"datasets.val.dataroot_gt": str(write_images(tmp_path / "two", 2, (32, 32)))})
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["steps", "-opt", str(write_yaml(tmp_path / "tiny.yml", opt)), "--steps", "2",
                           "--output", str(out), "--device", "cpu", "--threads", "1", "--warmup", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    (point,) = json.loads((out / "tiny_steps.json").read_text())["points"]
    # counted through the wrapper: 2 noise-network calls and one restore per image, timed
    assert point["nfe"] == 2 and point["restores_per_image"] == 1 and point["seconds_per_image"] > 0
    assert watch.seen and set(watch.seen) == {(False, True, True)}
    assert all("restore" not in vars(m) for m in watch.methods)
    assert osir.engine.validation.restore_image is watch.validation_fn


def test_efficiency_measurement_counts_one_step_macs_through_the_per_call_steps(tmp_path, monkeypatch):
    watch = Watch(monkeypatch)
    opt = load_options(write_yaml(tmp_path / "tiny.yml", tiny_options(tmp_path)))       # IR-SDE, T 20, 4 steps
    row = bench.measure({"opt": opt, "device": "cpu", "size": 32, "mode": "whole", "tile": None, "overlap": 32,
                         "precision": "fp32", "warmup": 0, "repeats": 1, "count_macs": True})
    assert row["status"] == "ok" and row["nfe"] == 4 and row["tiles"] == 1
    assert row["macs_counted_on"] == "a one-step restoration, scaled to the NFE"
    assert row["macs"] == row["macs_other"] + 4 * row["macs_per_nfe"]
    # 4 calls of the timed restoration, then 1 of the one-step restoration the MACs are counted on
    assert len(watch.seen) == 5 and set(watch.seen) == {(False, True, True)}
    (method,) = watch.methods
    assert method.timesteps == method.sde.timesteps(4)               # the method's own steps were not touched
    assert method.sampling(steps=1)[1] == [method.timesteps[0], 0] == [20, 0]   # what the old code set
