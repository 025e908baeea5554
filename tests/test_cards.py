"""Method cards (issue 22): every card's detectors resolve; the recognise command and the shared core name
no method outside docstrings and comments (``names_outside_docstrings``, reusable for the other
commands); a card registered at run time, with its own detector and architecture, is used by
``recognize`` without any shared file knowing it."""
from __future__ import annotations

import ast
import inspect
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from osir.core.checkpoint import CheckpointError, save_network

ROOT = Path(__file__).resolve().parents[1]

#: the method and architecture names of issue 22 (the cards add theirs: ``card_names``)
METHOD_NAMES = ("IRSDE", "Refusion", "LatentRefusion", "RefusionCompression", "DACLIP", "DACLIPUIR", "OSEDiff",
                "RealESRGAN", "ConditionalUNet", "ConditionalNAFNet", "CompressionUNet", "DACLIPUNet", "RRDBNet")


def names_outside_docstrings(path, names) -> list[str]:
    """'file:line: name in text' for each of ``names`` (case-sensitive, also inside a longer word) found in
    ``path``'s code: identifiers, attributes, imports, keywords and string literals, f-strings included.
    Docstrings (a module's, class's or function's first statement) and comments are not code."""
    path = Path(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                docstrings.add(id(first.value))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            texts = [node.value]
        elif isinstance(node, ast.Name):
            texts = [node.id]
        elif isinstance(node, ast.Attribute):
            texts = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            texts = [node.name]
        elif isinstance(node, ast.arg):
            texts = [node.arg]
        elif isinstance(node, ast.alias):
            texts = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            texts = [node.module or ""]
        elif isinstance(node, ast.keyword):
            texts = [node.arg or ""]
        else:
            continue
        hits += [f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}: {name} in "
                 f"{text!r}" for text in texts for name in names if name in text]
    return hits


def card_names() -> set[str]:
    """The method names the registered cards declare and the architectures they export or refuse."""
    from osir.core.card import cards
    return {name for card in cards() for name in (*card.methods, *card.exports, *card.not_exportable)}


# ----------------------------------------------------------------------------- the cards' detectors
def test_every_cards_detectors_resolve_to_functions_of_the_file():
    from osir.core.card import cards, resolve
    from osir.recognize import detectors
    found = [(card.name, d) for card in cards() for d in card.detectors]
    assert {card for card, _ in found} == {c.name for c in cards()}, "a card without a detector"
    for card, detector in found:
        function = resolve(detector.function)
        assert callable(function), f"{card}: {detector.function}"
        assert len(inspect.signature(function).parameters) == 2, f"{card}: {detector.function} takes (state, path)"
    assert len({d.name for _, d in found}) == len(found), "detector names are listed in errors: unique"
    assert sorted(detectors(), key=lambda d: d.name) == sorted((d for _, d in found), key=lambda d: d.name)


# ----------------------------------------------------------------------------- no method named in shared code
def test_the_name_checker_finds_names_in_code_only(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text('"""Module docstring: IRSDE."""\n'
                      '# a comment: RRDBNet\n'
                      'def f(DACLIP_x):\n'
                      '    """IRSDE in a docstring."""\n'
                      '    a = "IRSDE"\n'
                      '    b = f"{a} RRDBNet"\n'
                      '    from osir.x import OSEDiff as Refusion\n'
                      '    return g(key=LatentRefusion.y, z=a.CompressionUNet)\n')
    hits = {h.split(":", 1)[1] for h in names_outside_docstrings(source, METHOD_NAMES)}
    assert hits == {"3: DACLIP in 'DACLIP_x'", "5: IRSDE in 'IRSDE'", "6: RRDBNet in ' RRDBNet'",
                    "7: OSEDiff in 'OSEDiff'", "7: Refusion in 'Refusion'", "8: LatentRefusion in 'LatentRefusion'",
                    "8: Refusion in 'LatentRefusion'", "8: CompressionUNet in 'CompressionUNet'"}
    for card in ("daclip", "irsde", "osediff", "realesrgan", "refusion"):   # the method folders do name them
        assert names_outside_docstrings(ROOT / "osir" / "methods" / card / "detect.py", METHOD_NAMES), card


#: every module outside osir/methods/: the contracts, engine, inference, metrics, data, commands
SHARED = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "osir").rglob("*.py")
                if "methods" not in p.relative_to(ROOT).parts)
#: names that contain a method's name but are not the method: the Real-ESRGAN paper's degradation pipeline is a
#: shared degradation (used by OSEDiff and wild IR too), registered under the paper's name
NOT_A_METHOD = ("RealESRGANDegradation",)


@pytest.mark.parametrize("path", SHARED)
def test_shared_code_names_no_method_outside_docstrings(path):
    hits = names_outside_docstrings(ROOT / path, set(METHOD_NAMES) | card_names())
    assert [h for h in hits if not any(f"'{n}'" in h for n in NOT_A_METHOD)] == []


def test_the_shared_modules_are_all_checked():
    assert {"osir/recognize.py", "osir/restore.py", "osir/export.py", "osir/bench.py", "osir/web.py", "osir/test.py",
            "osir/core/card.py", "osir/inference/load.py", "osir/engine/trainer.py"} <= set(SHARED)


# ----------------------------------------------------------------------------- a card added at run time
class TinyConv(torch.nn.Module):
    """A one-convolution network: the architecture of the run-time card."""

    def __init__(self, channels: int = 3, features: int = 4):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, features, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def tiny_conv(state: dict, path: Path):
    """The run-time card's detector: a 2-key state dict of ``TinyConv``."""
    from osir.core.recognition import NoMatch, Recognized, need, verify
    need(state, "conv.weight", "conv.bias")
    if len(state) != 2:
        raise NoMatch(f"{len(state)} tensors, not 2")
    weight = state["conv.weight"]
    hp = {"channels": weight.shape[1], "features": weight.shape[0]}
    verify("TestTinyConv", hp, state)
    return Recognized("TestTinyMethod", "TestTinyConv", hp, "g", state, "osir", str(path))


def tiny_conv_bundle(payload, path: Path):
    """The run-time card's whole-file detector: {'tiny': state dict, 'version': int} (not a dict of tensors)."""
    from osir.core.recognition import NoMatch
    if not isinstance(payload, dict) or "tiny" not in payload:
        raise NoMatch("no 'tiny' entry")
    found = tiny_conv(payload["tiny"], path)
    found.notes.append(f"bundle version {payload['version']}")
    return found


@contextmanager
def runtime_card():
    """A card and an architecture registered for the test only, removed after."""
    from osir.core.card import CARDS, Detector, MethodCard
    from osir.core.registry import ARCHS
    card = MethodCard(name="testtiny", methods=("TestTinyMethod",), package=__name__,
                      detectors=(Detector("TestTinyConv (run-time card)", f"{__name__}:tiny_conv"),
                                 Detector("TestTinyConv bundle", f"{__name__}:tiny_conv_bundle", payload=True)))
    CARDS.register(card, name="testtiny")
    ARCHS.register(TinyConv, name="TestTinyConv")
    try:
        yield card
    finally:
        CARDS._entries.pop("testtiny")
        ARCHS._entries.pop("TestTinyConv")


def test_a_card_registered_at_run_time_is_used_by_recognize(tmp_path):
    from osir.recognize import recognize
    torch.manual_seed(0)
    net = TinyConv(channels=2, features=5).eval()
    path = tmp_path / "tiny.safetensors"
    save_network(net, path)
    bundle = tmp_path / "bundle.pth"
    torch.save({"tiny": net.state_dict(), "version": 3}, bundle)
    with runtime_card():
        found = recognize(path)
        assert (found.method, found.arch, found.network) == ("TestTinyMethod", "TestTinyConv", "g")
        assert found.hyper_parameters == {"channels": 2, "features": 5}
        x = torch.rand(1, 2, 6, 7)
        with torch.no_grad():
            assert torch.equal(found.build_network()(x), net(x))
        from_bundle = recognize(bundle)            # not a dict of tensors: offered to the payload detectors only
        assert from_bundle.hyper_parameters == found.hyper_parameters and "bundle version 3" in from_bundle.notes
        three = tmp_path / "three.pth"
        torch.save({**net.state_dict(), "extra": torch.zeros(1)}, three)
        with pytest.raises(CheckpointError, match=r"TestTinyConv \(run-time card\): 3 tensors, not 2"):
            recognize(three)
    with pytest.raises(CheckpointError) as err:    # the card is gone: no shared file knew it
        recognize(path)
    assert "no known layout matches its 2 tensors" in str(err.value) and "TestTiny" not in str(err.value)
    with pytest.raises(CheckpointError, match="holds no state dict of tensors, and no detector of whole files "
                                              r"matches it \(OSEDiff \(osediff.pkl\): not a dict"):
        recognize(bundle)


# ----------------------------------------------------------------------------- the size contract as a value
def _release_methods():
    """(card, release) whose method builds from its options alone (no files the user brings)."""
    from osir.core.card import releases
    return [(c, r) for c, r in releases().values() if not r.needs and "." not in r.weights.option]


@pytest.mark.parametrize("card, release", _release_methods(), ids=lambda x: getattr(x, "name", ""))
def test_each_release_declares_the_size_contract_its_method_pads_to(card, release, monkeypatch):
    """The card's value (or the release's own) is what the built method gives the inference layer (its
    networks built on the meta device: the release networks allocate nothing)."""
    from osir.core.card import SizeRequirements, release_options
    from osir.core.registry import ARCHS, METHODS
    build = ARCHS.build

    def on_meta(*args, **kwargs):
        with torch.device("meta"):
            return build(*args, **kwargs)
    monkeypatch.setattr(ARCHS, "build", on_meta)
    method = METHODS.build(release_options(card, release)["method"], "method")
    declared = release.size or card.size
    assert isinstance(method.size_requirements, SizeRequirements)
    assert method.size_requirements == declared, (release.name, method.size_requirements, declared)


def test_the_inference_layer_pads_to_the_declared_multiple_and_crops_back():
    from osir.core.card import SizeRequirements
    from osir.inference import restore_image
    from osir.methods.realesrgan import RealESRGAN
    torch.manual_seed(0)
    method = RealESRGAN(scale=2, network={"type": "RRDBNet", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 4,
                                          "num_block": 1, "num_grow_ch": 4, "scale": 2})
    assert method.size_requirements == SizeRequirements(multiple_of=2)
    lq = torch.rand(1, 3, 33, 35)
    seen = []
    net = method.networks["g"].eval()
    net.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        out = restore_image(method, {"lq": lq})
    assert seen == [SizeRequirements(multiple_of=2).padded(33, 35)] == [(34, 36)]
    assert out.shape[-2:] == (66, 70)
