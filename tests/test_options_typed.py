"""Issue 22 point 4 (typed options): ``load_options`` returns the validated typed object (``Options`` and its
sections), the code reads attributes of it, and it stays the mapping the plain-dict options were (dumps, compares
and indexes as before)."""
import copy
import pickle
from pathlib import Path

import pytest
import yaml

from osir.core.options import (EMAOptions, LoggerOptions, Options, OptionsError, PathOptions, TileOptions,
                               TrainOptions, ValOptions, as_options, dump_options, load_options, load_yaml, read_yaml)

ROOT = Path(__file__).resolve().parents[1]


def test_load_options_returns_typed_sections_with_the_files_values_and_the_defaults():
    opt = load_options(ROOT / "options" / "demo.yml", ["val.max_images=1", "train.ema.g.decay=0.5"])
    raw = read_yaml(ROOT / "options" / "demo.yml")
    assert isinstance(opt, Options)
    assert isinstance(opt.train, TrainOptions) and isinstance(opt.val, ValOptions)
    assert isinstance(opt.logger, LoggerOptions) and isinstance(opt.path, PathOptions)
    assert isinstance(opt.tile, TileOptions)
    assert opt.train.total_iter == raw["train"]["total_iter"] == 1000
    assert opt.val.freq == raw["val"]["freq"] and opt.val.max_images == 1
    assert opt.train.grad_accum_steps == 1 and opt.tile.overlap == 32 and opt.path.strict_load is True   # defaults
    assert isinstance(opt.train.ema["g"], EMAOptions) and opt.train.ema["g"].decay == 0.5
    assert opt.train.ema["g"].update_every == 1
    # registered specs stay mappings: their keys are the registered class's own arguments
    assert type(opt.method) is dict and all(opt.method[k] == v for k, v in raw["method"].items() if k != "network")
    assert opt.method["type"] == "IRSDE" and opt.method["network"]["type"] == raw["method"]["network"]["type"]


def test_the_typed_options_are_still_the_mapping_of_the_plain_dict_options(tmp_path):
    opt = load_options(ROOT / "options" / "demo.yml")
    plain = opt.to_dict()
    assert type(plain) is dict and type(plain["train"]) is dict and type(plain["train"]["ema"]["g"]) is dict
    assert opt == plain and plain == opt                 # equal both ways, nested sections included
    assert opt["train"]["total_iter"] == opt.train.total_iter and opt.get("nothing") is None
    assert list(opt) == list(plain) and dict(opt)["val"] is opt.val
    other = copy.deepcopy(opt)
    other.val.freq = 7
    assert other != opt and other["val"]["freq"] == 7 and opt.val.freq != 7
    assert pickle.loads(pickle.dumps(opt)) == opt        # as accelerate broadcasts objects between processes
    # YAML: dump_options and yaml.safe_dump write the plain options; they load back into equal options
    dump_options(opt, tmp_path / "options.yml")
    assert load_yaml(tmp_path / "options.yml") == plain
    assert yaml.safe_load(yaml.safe_dump(opt, sort_keys=False)) == plain
    assert load_options(tmp_path / "options.yml") == opt


def test_setting_a_key_a_section_does_not_have_is_refused_with_the_nearest_key():
    opt = load_options(ROOT / "options" / "demo.yml")
    opt["val"]["freq"] = 3
    assert opt.val.freq == 3
    with pytest.raises(KeyError, match="ValOptions has no option 'frq'.*freq"):
        opt["val"]["frq"] = 3
    with pytest.raises(KeyError):
        opt["nope"]


def test_a_plain_mapping_given_to_the_code_is_validated_into_the_typed_options():
    raw = read_yaml(ROOT / "options" / "demo.yml")
    opt = as_options(raw)
    assert isinstance(opt, Options) and opt == load_options(ROOT / "options" / "demo.yml")
    assert as_options(opt) is opt
    raw["val"]["frq"] = 1
    with pytest.raises(OptionsError, match=r"val.frq: unknown key.*freq"):
        as_options(raw)


def test_build_method_and_the_trainer_take_a_plain_mapping_as_before(tmp_path):
    """Code of earlier versions passes dicts: the loader and the engine validate them into typed options
    (a bad value is the same one-line options error)."""
    from osir.engine.trainer import Trainer
    from osir.inference.load import build_method
    from tests.conftest import tiny_options
    raw = tiny_options(tmp_path, **{"train.total_iter": 1})
    assert sorted(build_method(raw).networks) == ["g"]
    raw["train"]["total_iter"] = 0
    with pytest.raises(OptionsError, match="train.total_iter: must be greater than 0"):
        Trainer(raw)
    assert not (tmp_path / "experiments").exists()


def test_a_typo_is_never_kept_and_keys_cannot_be_removed():
    """Attribute style is the one the code uses: a misspelt attribute is refused like a misspelt key (it would
    otherwise be dropped silently from the dumped options); the dict methods of earlier code work."""
    opt = load_options(ROOT / "options" / "demo.yml")
    with pytest.raises(AttributeError, match=r"ValOptions has no option 'frq' \(did you mean 'freq'\?\)"):
        opt.val.frq = 3
    opt["val"].update(freq=4, use_ema=False)
    assert (opt.val.freq, opt.val.use_ema) == (4, False) and opt.to_dict()["val"]["freq"] == 4
    with pytest.raises(TypeError, match="option 'freq' cannot be removed"):
        del opt["val"]["freq"]


def test_a_plain_mapping_is_resolved_as_a_file_is(tmp_path):
    """as_options imports the ``imports`` modules first (they register what the options name) and drops null
    data sets, as load_options does for a file."""
    from tests.conftest import tiny_options
    raw = tiny_options(tmp_path)
    raw.update(imports=["tests.plugins.l1_method"], method={"type": "PlainL1", "network": {"type": "TinyConvNet"}})
    raw["datasets"]["val"] = None
    opt = as_options(raw)
    assert opt.method["type"] == "PlainL1" and "val" not in opt.datasets
    with pytest.raises(OptionsError, match="imports: cannot import 'no_such_module'"):
        as_options({**raw, "imports": ["no_such_module"]})


def test_the_code_reads_the_options_sections_by_attribute():
    """No module of osir or benchmarks indexes an options section by its name (``opt["train"]["x"]``): the
    typed object is what the code reads (registered specs such as ``opt.method["type"]`` stay mappings)."""
    import re
    pattern = re.compile(r"""\b(opt|test_opt|base)\s*\[\s*["'](train|val|logger|path|tile|inference|name|seed)["']""")
    found = [f"{p.relative_to(ROOT)}:{i}" for folder in ("osir", "benchmarks") for p in (ROOT / folder).rglob("*.py")
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line) and "``" not in line]          # (docstrings show the mapping view)
    assert found == []
