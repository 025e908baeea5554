"""Options: validation errors name the key path and the nearest key; _base_ and --set."""
import pytest

from osir.core.options import apply_overrides, load_options, read_yaml
from osir.core.registry import OptionsError
from tests.conftest import tiny_options, write_yaml


def load(tmp_path, opt, overrides=()):
    return load_options(write_yaml(tmp_path / "o.yml", opt), list(overrides))


def test_defaults_are_filled_and_types_kept(tmp_path):
    opt = load(tmp_path, tiny_options(tmp_path))
    assert opt["train"]["grad_accum_steps"] == 1 and opt["train"]["mixed_precision"] == "no"
    assert opt["datasets"]["train"]["num_workers"] == 0          # loader default next to dataset args
    assert opt["method"]["schedule"] == "cosine"                  # method constructor default
    assert opt["tile"] == {"size": None, "overlap": 32}


@pytest.mark.parametrize("key, value, message", [
    ("train.totl_iter", 5, r"train\.totl_iter: unknown key \(did you mean 'total_iter'\?\)"),
    ("method.max_sigam", 5, r"method\.max_sigam: unknown key \(did you mean 'max_sigma'\?\)"),
    ("datasets.train.batch_sise", 2, r"datasets\.train\.batch_sise: unknown key \(did you mean 'batch_size'\?\)"),
    ("method.network.type", "ConditionalUnet", r"method\.network\.type: unknown arch 'ConditionalUnet' \(did you mean 'ConditionalUNet'\?\); registered: ADMUNet, CompressionUNet, ConditionalNAFNet, ConditionalUNet"),
    ("train.optimizers.g.type", "Adma", r"unknown optimizer 'Adma' \(did you mean 'Adam'\?\)"),
    ("train.total_iter", "ten", r"train\.total_iter: 'ten' is not a valid int"),
    ("train.mixed_precision", "fp8", r"train\.mixed_precision: 'fp8' is not a valid value; allowed: 'no', 'fp16', 'bf16'"),
    ("method.schedule", "cosin", r"method\.schedule: 'cosin' is not a valid value; allowed: 'cosine'"),
])
def test_bad_option_names_key_path(tmp_path, key, value, message):
    opt = tiny_options(tmp_path, **{key: value})
    with pytest.raises(OptionsError, match=message):
        load(tmp_path, opt)


def test_missing_required_value(tmp_path):
    opt = tiny_options(tmp_path)
    del opt["datasets"]["train"]["dataroot_gt"]
    with pytest.raises(OptionsError, match=r"datasets\.train\.dataroot_gt: missing required value"):
        load(tmp_path, opt)


def test_set_overrides_are_typed(tmp_path):
    opt = load(tmp_path, tiny_options(tmp_path), ["train.total_iter=1000", "datasets.train.batch_size=2",
                                                   "train.optimizers.g.betas=[0.9, 0.99]", "tile.size=64"])
    assert opt["train"]["total_iter"] == 1000 and opt["datasets"]["train"]["batch_size"] == 2
    assert opt["train"]["optimizers"]["g"]["betas"] == [0.9, 0.99] and opt["tile"]["size"] == 64


@pytest.mark.parametrize("override, message", [
    ("train.total_iter", "--set expects key.path=value"),
    ("train..x=1", "bad key path"),
    ("name.sub=1", "'name' is a value, not a section"),
    ("train.total_iter=abc", r"train\.total_iter: 'abc' is not a valid int"),
    ("train.bogus=1", r"train\.bogus: unknown key"),
])
def test_bad_set(tmp_path, override, message):
    with pytest.raises(OptionsError, match=message):
        load(tmp_path, tiny_options(tmp_path), [override])


def test_base_include_merges_and_overrides(tmp_path):
    base = tiny_options(tmp_path)
    write_yaml(tmp_path / "train.yml", base)
    child = {"_base_": "train.yml", "name": "child", "method": {"sample_steps": 2},
             "datasets": {"val": {"gt_size": 16}}}
    (tmp_path / "test").mkdir()
    write_yaml(tmp_path / "test" / "child.yml", {**child, "_base_": "../train.yml"})
    raw = read_yaml(tmp_path / "test" / "child.yml")
    assert raw["name"] == "child" and raw["method"]["sample_steps"] == 2 and raw["method"]["T"] == 20
    assert raw["datasets"]["val"]["gt_size"] == 16 and raw["datasets"]["val"]["dataroot_gt"] == base["datasets"]["val"]["dataroot_gt"]
    assert load_options(tmp_path / "test" / "child.yml")["method"]["network"]["nf"] == 4


def test_base_cycle_and_missing_file(tmp_path):
    write_yaml(tmp_path / "a.yml", {"_base_": "b.yml"})
    write_yaml(tmp_path / "b.yml", {"_base_": "a.yml"})
    with pytest.raises(OptionsError, match="includes itself"):
        read_yaml(tmp_path / "a.yml")
    with pytest.raises(OptionsError, match="options file not found"):
        read_yaml(tmp_path / "nope.yml")


def test_apply_overrides_creates_sections():
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_shipped_option_files_validate():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "options"
    files = sorted(root.rglob("*.yml"))
    assert files
    for path in files:
        if "degradations" in path.parts:   # fragments: a `degradation:` section to include
            from osir.core.options import component, validate
            from osir.core.registry import BATCH_DEGRADATIONS
            raw = read_yaml(path)
            validate(raw["degradation"], component(BATCH_DEGRADATIONS), "degradation")
            BATCH_DEGRADATIONS.build(raw["degradation"], "degradation")
        else:
            load_options(path)


def test_yaml_exponent_strings_become_floats(tmp_path):
    """YAML 1.1 reads 2e-3 (no dot) as a string; a float option still gets a float."""
    opt = load(tmp_path, tiny_options(tmp_path), ["train.optimizers.g.lr=2e-3", "method.max_sigma=25"])
    assert opt["train"]["optimizers"]["g"]["lr"] == 2e-3 and isinstance(opt["train"]["optimizers"]["g"]["lr"], float)
    assert isinstance(opt["method"]["max_sigma"], float)
