"""``osir export onnx`` knows the networks only through the method cards: every card's ``exports`` resolve to
graph builders of registered architectures, ``--model`` names are the cards' release names (their options
give the network) and export names, ``osir/export.py`` names no method, and a card registered at run time,
with its own tiny network and release, is exported and checked without touching a shared file."""
import importlib.resources
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import osir.export
import osir.inference.onnx_graphs
from osir.core.card import MethodCard, Release, ReleaseFile, cards, resolve
from osir.core.checkpoint import CheckpointError, save_network
from osir.export import MODELS, export_onnx, graphs_for, main, network_from_weights, session
from osir.inference.onnx_graphs import GraphSpec, dynamic_dims, image_input
from osir.methods.realesrgan import RRDBNet
from osir.model_card import read_model_card
from osir.core.registry import ARCHS, CARDS, OptionsError
from tests.test_cards import names_outside_docstrings

METHOD_NAMES = ("IRSDE", "Refusion", "LatentRefusion", "RefusionCompression", "DACLIP", "DACLIPUIR", "OSEDiff",
                "RealESRGAN", "RealESRNet", "ConditionalUNet", "ConditionalNAFNet", "CompressionUNet", "DACLIPUNet",
                "RRDBNet")


def test_every_card_export_resolves_to_a_graph_builder_of_a_registered_arch():
    exported = {}
    for card in cards():
        for arch, reference in card.exports.items():
            assert callable(resolve(reference)), reference
            assert arch in ARCHS, f"card '{card.name}' exports the unregistered arch {arch}"
            assert arch not in exported, f"{arch} exported by '{exported.get(arch)}' and '{card.name}'"
            exported[arch] = card.name
        assert not set(card.exports) & set(card.not_exportable), card.name
    # the four architectures exported before the cards, each by its method's folder
    assert {arch: resolve(ref).__module__ for card in cards() for arch, ref in card.exports.items()} == {
        "RRDBNet": "osir.methods.realesrgan.onnx", "ConditionalUNet": "osir.methods.irsde.onnx",
        "ConditionalNAFNet": "osir.methods.refusion.onnx", "CompressionUNet": "osir.methods.refusion.onnx"}


RRDB = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23, "num_grow_ch": 32, "scale": 4}
NAFNET = {"img_channel": 3, "width": 64, "enc_blk_nums": [1, 1, 1, 28], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1, 1]}


def test_model_names_are_the_cards_release_names_and_the_short_names_of_before():
    # the short names keep the (method, arch, hyper-parameters) of the table they replace
    assert {name: tuple(MODELS[name]) for name in ("realesrgan", "realesrnet", "irsde", "refusion", "refusion-latent",
                                                   "refusion-compression")} == {
        "realesrgan": ("RealESRGAN", "RRDBNet", RRDB), "realesrnet": ("RealESRGAN", "RRDBNet", RRDB),
        "irsde": ("IRSDE", "ConditionalUNet", {"in_nc": 3, "out_nc": 3, "nf": 64, "depth": 4}),
        "refusion": ("Refusion", "ConditionalNAFNet", NAFNET),
        "refusion-latent": ("LatentRefusion", "ConditionalNAFNet", {**NAFNET, "img_channel": 8, "global_skip": True}),
        "refusion-compression": ("RefusionCompression", "CompressionUNet",
                                 {"in_ch": 3, "out_ch": 3, "ch": 8, "ch_mult": [4, 8, 8, 16], "embed_dim": 8})}
    # every release whose network a card exports is a --model name giving that release's network
    releases = 0
    for card in cards():
        for release in card.releases:
            text = importlib.resources.files(card.package).joinpath("releases", release.options).read_text()
            method = yaml.safe_load(text)["method"]
            network = method.get("network")
            if method["type"] in card.not_exportable or network is None:
                assert release.name not in MODELS
                continue
            arch = network.pop("type")
            assert tuple(MODELS[release.name]) == (method["type"], arch, network), release.name
            releases += 1
    assert releases == 14 and list(MODELS)[:2] == ["realesrgan", "realesrnet"]


def test_a_release_name_gives_that_releases_network(tmp_path):
    weights = tmp_path / "net_g.safetensors"            # growth 4: not recognised, --model names the network
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=4, scale=2).eval()
    save_network(net, weights)
    loaded = network_from_weights(weights, "realesrgan-x2", {"num_feat": 8, "num_block": 1, "num_grow_ch": 4})
    assert (loaded.method, loaded.arch, loaded.hyper_parameters["scale"]) == ("RealESRGAN", "RRDBNet", 2)
    x = torch.rand(1, 3, 10, 14, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.network(x), net(x)) and net(x).shape == (1, 3, 20, 28)
    with pytest.raises(CheckpointError, match="does not fit RRDBNet"):      # the x4 release: another network
        network_from_weights(weights, "realesrgan-x4", {"num_feat": 8, "num_block": 1, "num_grow_ch": 4})


@pytest.mark.parametrize("module", [osir.export, osir.inference.onnx_graphs], ids=lambda m: m.__name__)
def test_shared_export_code_names_no_method(module):
    """Lower-case too (a 'rrdbnet' or 'realesrnet' key would also be a method's name)."""
    names = set(METHOD_NAMES) | {n.lower() for n in METHOD_NAMES}
    assert names_outside_docstrings(Path(module.__file__), names) == []


# ----------------------------------------------------------------------------- a card added at run time
PACKAGE = "osir_test_tiny_export_card"


class TinyExportNet(nn.Module):
    """conv - ReLU - conv, 3 channels in and out."""

    def __init__(self, features: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, features, 3, padding=1), nn.ReLU(), nn.Conv2d(features, 3, 3, padding=1))

    def forward(self, x):
        return self.body(x)


class TinyFrozenNet(TinyExportNet):
    pass


def tiny_graphs(net: nn.Module) -> list[GraphSpec]:
    def shapes():
        b, h, w = dynamic_dims()
        return ({0: b, 2: h, 3: w},)
    return [GraphSpec("", net, lambda b, h, w, g: (image_input(b, 3, h, w, g),), ["image"], ["out"], shapes,
                      role="tiny test network", io={"image": "batch x 3 x H x W", "out": "batch x 3 x H x W"})]


CARD = MethodCard(name="tinyexport", package=PACKAGE, methods=("TinyExport",),
                  releases=(Release("tinyexport-conv", "a tiny conv net", "tiny-conv.yml",
                                    ReleaseFile("g", "tiny.safetensors", "this test", "the tiny network")),),
                  exports={"TinyExportNet": f"{__name__}:tiny_graphs"},
                  not_exportable={"TinyFrozenNet": "the frozen tiny network is a test's refusal"})


@pytest.fixture
def tiny_card(tmp_path, monkeypatch):
    releases = tmp_path / "pkgs" / PACKAGE / "releases"
    releases.mkdir(parents=True)
    (releases.parent / "__init__.py").write_text("")
    (releases / "tiny-conv.yml").write_text(yaml.safe_dump(
        {"method": {"type": "TinyExport", "network": {"type": "TinyExportNet", "features": 6}}}))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setitem(ARCHS._entries, "TinyExportNet", TinyExportNet)     # registered for this test only
    monkeypatch.setitem(CARDS._entries, CARD.name, CARD)
    yield CARD
    sys.modules.pop(PACKAGE, None)


def test_a_card_registered_at_run_time_is_exported_and_checked(tiny_card, tmp_path, capsys):
    net = ARCHS.build({"type": "TinyExportNet", "features": 5}).eval()
    logged = []
    records = export_onnx(net, tmp_path / "t.onnx", method="TinyExport", hyper_parameters={"features": 5},
                          check_size=16, log=logged.append)
    assert [r["path"].name for r in records] == ["t.onnx"] and records[0]["max_abs_difference"] < 1e-4
    x = torch.rand(2, 3, 19, 23, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x).numpy()
    got = session(tmp_path / "t.onnx").run(None, {"image": x.numpy()})[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
    card = read_model_card(tmp_path / "t.onnx")
    assert card["arch"] == "TinyExportNet" and card["role"] == "tiny test network"

    # refusals: the card's reason, the generic one (listing the card's export), no int8 without calibration
    with pytest.raises(OptionsError, match="^TinyFrozenNet cannot be exported to ONNX: the frozen tiny network is a "
                                           "test's refusal; exportable: .*TinyExportNet \\(tinyexport\\)"):
        graphs_for(TinyFrozenNet())
    with pytest.raises(OptionsError, match="^Conv2d cannot be exported to ONNX: Conv2d is not one of osir's "
                                           "feed-forward networks; exportable: .*TinyExportNet"):
        graphs_for(nn.Conv2d(3, 3, 1))
    with pytest.raises(OptionsError, match="^--int8 is for the super-resolution graphs"):
        export_onnx(net, tmp_path / "q.onnx", method="TinyExport", hyper_parameters={}, int8=True)
    assert not (tmp_path / "q.onnx").exists()

    # the card's release is a --model name: its options give the network of unrecognised weights
    assert tuple(MODELS["tinyexport-conv"]) == ("TinyExport", "TinyExportNet", {"features": 6})
    weights, out = tmp_path / "tiny.safetensors", tmp_path / "cli.onnx"
    save_network(TinyExportNet(6), weights)
    # the card's name stands for its first release
    assert main(["onnx", "--weights", str(weights), "--model", "tinyexport", "-o", str(out), "--check-size", "16"]) == 0
    printed = capsys.readouterr().out
    assert "TinyExport / TinyExportNet {'features': 6}" in printed and read_model_card(out)["method"] == "TinyExport"
    assert main(["onnx", "--weights", str(weights), "--model", "tinyexport-conv", "--set", "features=4",
                 "-o", str(out)]) == 2
    assert "does not fit TinyExportNet({'features': 4})" in capsys.readouterr().err
