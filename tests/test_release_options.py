"""Release options as package data (issue 22): each method card's releases are YAML files in
``osir/methods/<name>/releases/``, the one copy of a release's method settings; the options files that train
or test a release include it through ``_base_: pkg://osir.methods.<name>/releases/<file>`` and keep only what
training adds or changes."""
import ast
import fnmatch
from pathlib import Path

import pytest

from osir.core.card import cards, release_options
from osir.core.options import Options, OptionsError, load_options, parse_yaml, read_yaml, validate

REPO = Path(__file__).resolve().parents[1]
OPTIONS = REPO / "options"

#: release -> the options file whose run or configuration it is (its ``_base_`` chain includes the release)
SOURCES = {
    "realesrgan-x4": "options/realesrgan.yml", "realesrnet-x4": "options/realesrnet.yml",
    "irsde-denoise": "options/irsde/denoising.yml", "irsde-deraining": "options/irsde/deraining.yml",
    "irsde-deblurring": "options/irsde/deblurring.yml", "irsde-sr-x4": "options/irsde/super_resolution.yml",
    "irsde-inpainting": "options/irsde/inpainting.yml", "irsde-demo": "options/demo.yml",
    "refusion-shadow": "options/refusion/shadow_removal.yml", "refusion-lowlight": "options/refusion/lowlight.yml",
    "refusion-deraining": "options/refusion/deraining.yml", "refusion-dehazing": "options/refusion/latent_stage2.yml",
    "refusion-demo": "options/refusion_demo.yml", "daclip-uir": "options/daclip_uir.yml",
    "wild-ir": "options/wild_ir.yml", "osediff": "options/osediff.yml",
}
#: releases no options file trains (restore reads the release file alone)
STANDALONE = {"realesrgan-x2", "zeroshot-ffhq256", "zeroshot-imagenet256"}

_WHOLE_IMAGES = "training validates whole images; the release's tile is osir restore's"
#: option key -> (why an including file sets it otherwise, the files that do)
OVERRIDES = {
    "tile.size": (_WHOLE_IMAGES, {"options/irsde/_base.yml", "options/irsde/deblurring.yml",
                                  "options/irsde/denoising.yml", "options/irsde/inpainting.yml",
                                  "options/irsde/super_resolution.yml", "options/demo.yml"}),
    "tile.overlap": (_WHOLE_IMAGES, {"options/irsde/_base.yml", "options/irsde/deblurring.yml",
                                     "options/irsde/denoising.yml", "options/irsde/inpainting.yml",
                                     "options/irsde/super_resolution.yml", "options/demo.yml"}),
    "method.merge_lora": ("training keeps the generator's LoRA apart (test.py / restore merge it)",
                          {"options/osediff.yml"}),
    "method.prompt.type": ("the test file prompts with DAPE's tags, as the published outputs",
                           {"options/test/osediff.yml"}),
}


def _releases():
    return [(card, rel) for card in cards() for rel in card.releases]


def _pkg(card, rel) -> str:
    return f"pkg://{card.package}/releases/{rel.options}"


def _own(path: Path) -> dict:
    """The file's own YAML (its ``_base_`` not resolved)."""
    with open(path, encoding="utf-8") as f:
        return parse_yaml(f, str(path)) or {}


def _bases(path: Path) -> list[str]:
    bases = _own(path).get("_base_") or []
    return [bases] if isinstance(bases, str) else list(bases)


def _chain(path: Path) -> list[str]:
    """Every ``pkg://`` entry that ``path`` includes, directly or through its relative bases."""
    out = []
    for base in _bases(path):
        out += [base] if base.startswith("pkg://") else _chain(path.parent / base)
    return out


def _leaves(tree: dict, prefix: str = "") -> dict:
    """Dotted key -> value of every non-mapping value (lists are values)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _inference_tree(card, rel) -> dict:
    """The release's options as ``osir restore`` starts from them: a name, and dummy paths for the files
    only a user can give."""
    raw = release_options(card, rel)
    raw.setdefault("name", rel.name)
    for needed in (*rel.needs, rel.weights):
        if needed.option.startswith("method."):
            raw["method"][needed.option.split(".", 1)[1]] = "x"
    return raw


def _release_by_pkg() -> dict:
    return {_pkg(card, rel): (card, rel) for card, rel in _releases()}


def _including_files() -> list[Path]:
    return [p for p in sorted(OPTIONS.rglob("*.yml")) if any(b.startswith("pkg://") for b in _bases(p))]


@pytest.mark.parametrize("card,rel", _releases(), ids=lambda x: getattr(x, "name", ""))
def test_every_release_validates_as_inference_options(card, rel):
    tree = _inference_tree(card, rel)
    assert set(tree) <= {"name", "method", "tile"}, f"{rel.options}: a release sets the method and tiles only"
    assert tree["method"]["type"] in card.methods
    opt = validate(tree, Options)
    assert opt["method"]["type"] == tree["method"]["type"]
    for key, value in _leaves(tree).items():         # nothing dropped or renamed by validation
        assert _get(opt, key) == value, f"{rel.options}: {key}"


def test_release_files_ship_as_package_data():
    """setup.py's package_data glob covers every card's release file (a wheel then holds them)."""
    setup = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(setup) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    package_data = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))
    patterns = package_data.get("osir.methods", [])
    for card, rel in _releases():
        assert card.package.startswith("osir.methods."), card.package
        inner = f"{card.package.split('.')[2]}/releases/{rel.options}"
        assert any(fnmatch.fnmatch(inner, p) for p in patterns), f"{inner} is not in setup.py's package_data"


def test_every_release_has_its_source_or_stands_alone():
    names = {rel.name for _, rel in _releases()}
    assert names == set(SOURCES) | STANDALONE, names ^ (set(SOURCES) | STANDALONE)
    pkgs = {rel.name: _pkg(card, rel) for card, rel in _releases()}
    for name, source in SOURCES.items():
        assert pkgs[name] in _chain(REPO / source), f"{source} does not include {pkgs[name]}"
    included = {b for path in OPTIONS.rglob("*.yml") for b in _chain(path)}
    assert not included & {pkgs[n] for n in STANDALONE}


@pytest.mark.parametrize("path", _including_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_included_release_keys_reach_the_resolved_options(path):
    """What a file includes through ``pkg://`` arrives unchanged, except the keys listed in OVERRIDES."""
    name = str(path.relative_to(REPO))
    ours = load_options(path)
    by_pkg = _release_by_pkg()
    overridden = {key for key, (_, files) in OVERRIDES.items() if name in files}
    for base in _bases(path):
        if not base.startswith("pkg://"):
            continue
        assert base in by_pkg, f"{name}: {base} is no card's release"
        card, rel = by_pkg[base]
        theirs = validate(_inference_tree(card, rel), Options)
        for key in _leaves(release_options(card, rel)):
            if key in overridden:
                assert _get(ours, key) != _get(theirs, key), f"{name}: OVERRIDES lists {key}, which it no longer changes"
            else:
                assert _get(ours, key) == _get(theirs, key), f"{name}: {key} differs from {base}"


def test_no_second_copy_of_a_release_key():
    """A file that includes a release (or is its source) does not restate one of its keys with the same value."""
    by_pkg = _release_by_pkg()
    pairs = [(REPO / source, _pkg(*next((c, r) for c, r in _releases() if r.name == release)))
             for release, source in SOURCES.items()]
    pairs += [(p, b) for p in _including_files() for b in _bases(p) if b.startswith("pkg://")]
    assert len(pairs) > len(SOURCES)
    for path, base in pairs:
        own = _leaves({k: v for k, v in _own(path).items() if k != "_base_"})
        release = _leaves(release_options(*by_pkg[base]))
        same = sorted(k for k, v in release.items() if k in own and own[k] == v)
        assert not same, f"{path.relative_to(REPO)} restates {same} of {base}"


def test_pkg_base_merges_in_order_including_file_on_top(tmp_path):
    (tmp_path / "a.yml").write_text("_base_: [pkg://osir.methods.irsde/releases/irsde-deraining.yml,\n"
                                    "         pkg://osir.methods.irsde/releases/irsde-sr-x4.yml]\n"
                                    "method: {max_sigma: 20}\n")
    raw = read_yaml(tmp_path / "a.yml")
    assert raw["method"]["sampler"] == "sde" and raw["method"]["upscale"] == 4     # the later base on top
    assert raw["method"]["max_sigma"] == 20 and raw["method"]["eps"] == 0.005 and raw["tile"]["size"] == 1024


def test_pkg_base_unknown_package_is_one_line(tmp_path):
    (tmp_path / "a.yml").write_text("_base_: pkg://osir_no_such_pkg/releases/x.yml\nname: a\n")
    with pytest.raises(OptionsError) as err:
        read_yaml(tmp_path / "a.yml")
    message = str(err.value)
    assert "package 'osir_no_such_pkg'" in message and "\n" not in message and "a.yml" in message


def test_pkg_base_missing_file_names_the_package_folder(tmp_path):
    import osir.methods.irsde
    (tmp_path / "a.yml").write_text("_base_: pkg://osir.methods.irsde/releases/nope.yml\nname: a\n")
    with pytest.raises(OptionsError, match="options file not found") as err:
        read_yaml(tmp_path / "a.yml")
    wanted = Path(osir.methods.irsde.__file__).resolve().parent / "releases" / "nope.yml"
    assert str(wanted) in str(err.value) and "\n" not in str(err.value)
