"""Issue 22 point 4 (schema text): every option has a description in its field (``osir.core.options.option``),
and the ``--help`` of the commands that read options files lists every key path with it, its type and default."""
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from osir.core import options as opts

ROOT = Path(__file__).resolve().parents[1]


def _sections(cls=opts.Options, seen=None):
    seen = seen if seen is not None else []
    seen.append(cls)
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls, include_extras=True)[f.name]
        for candidate in (hint, *typing.get_args(hint)):
            if (isinstance(candidate, type) and dataclasses.is_dataclass(candidate)
                    and getattr(candidate, "__module__", "") == opts.__name__
                    and candidate is not opts.Component and candidate not in seen):
                _sections(candidate, seen)
    return seen


def test_every_option_of_every_section_has_a_description():
    sections = _sections() + [opts.LoaderOptions, opts.OptimizerExtra, opts.EMAOptions]
    missing = [f"{cls.__name__}.{f.name}" for cls in sections for f in dataclasses.fields(cls)
               if not f.metadata.get("help", "").strip()]
    assert missing == []
    assert {c.__name__ for c in _sections()} >= {"TrainOptions", "DDPOptions", "ValOptions", "LoggerOptions",
                                                  "PathOptions", "TileOptions", "InferenceOptions"}


def test_the_schema_rows_give_type_default_and_requirement_from_the_fields():
    rows = {key: (typ, default, desc) for key, typ, default, desc in opts.schema_rows()}
    assert rows["train.total_iter"][:2] == ("int > 0", "(required)")
    assert rows["logger.checkpoint_freq"][:2] == ("int > 0", "5000")
    assert rows["tile.overlap"][:2] == ("int >= 0", "32")
    assert rows["train.mixed_precision"][:2] == ("one of no, fp16, bf16", "no")
    assert rows["val.max_images"][:2] == ("int > 0 | null", "null")
    assert rows["method"][:2] == ("registered spec", "(required)")
    assert rows["train.ddp.static_graph"][2] == "DDP's static_graph"
    # every nested section's keys are listed under their path
    assert {k.split(".")[0] for k in rows} == {f.name for f in dataclasses.fields(opts.Options)}


@pytest.mark.parametrize("script", ["train.py", "test.py"])
def test_help_lists_every_option_with_its_description(script):
    done = subprocess.run([sys.executable, str(ROOT / "osir" / script), "--help"], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for key, _, _, desc in opts.schema_rows():
        assert any(line.split()[:1] == [key] and desc in line for line in lines), key
