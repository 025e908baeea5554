"""Issue 23, points 5, 13 and 16: YAML aliases and duplicate keys, checkpoint permissions, torch's
refusals in osir's words, and `osir test` into a folder that holds an earlier run."""
import os
import pickle
import re
import stat

import pytest
import torch
import yaml

from osir.core.checkpoint import CheckpointError, read_weights_file, save_state_dict, save_training_state
from osir.core.options import MAX_ALIAS_NODES, apply_overrides, load_options, parse_yaml
from osir.core.registry import OptionsError
from osir.test import main as run_test_script
from tests.conftest import tiny_options, write_yaml


# ----------------------------------------------------------------------------- YAML (23.13, 23.16)
def test_alias_expansion_is_counted_across_the_whole_text():
    """Each alias alone is small; together they repeat more than MAX_ALIAS_NODES values (a list of N
    numbers is N + 1 nodes)."""
    text = f"a: &a {list(range(MAX_ALIAS_NODES // 100))}\n" + "".join(f"k{i}: *a\n" for i in range(100))
    with pytest.raises(yaml.YAMLError, match=rf"aliases expand to more than {MAX_ALIAS_NODES} values"):
        parse_yaml(text, "x.yml")
    data = parse_yaml(text.rsplit("k99", 1)[0], "x.yml")                   # one alias fewer: accepted
    assert len(data) == 100 and data["k98"] == list(range(MAX_ALIAS_NODES // 100))


def test_an_alias_bomb_in_set_is_one_options_error():
    bomb = "[&a [x, x, x, x, x, x, x, x, x]" + "".join(
        f", &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefg", "bcdefgh")) + "]"
    with pytest.raises(OptionsError, match=r"--set seed: cannot parse value .*an alias bomb") as err:
        apply_overrides({}, [f"seed={bomb}"])
    assert len(str(err.value)) < 1000


def test_duplicate_keys_warn_once_naming_key_and_file_and_the_last_wins(tmp_path, capsys):
    """A repeated key warns; a key after a merge (``<<: *base``) overrides the merged one silently."""
    path = write_yaml(tmp_path / "o.yml", tiny_options(tmp_path))
    path.write_text(path.read_text().replace("seed: 3\n", "seed: 3\nseed: 7\n").replace(
        "  ema:\n", "  ema:\n    <<: {g: {decay: 0.5, update_every: 2}}\n", 1).replace("decay: 0.9", "decay: 0.8"))
    opt = load_options(path)
    assert opt["seed"] == 7 and opt["train"]["ema"]["g"] == {"decay": 0.8, "update_every": 1}
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert warnings == [f"warning: {path}: key 'seed' appears twice in one mapping (lines 2 and 3); "
                        "the last one (line 3) is used"]


# ----------------------------------------------------------------------------- checkpoint files (23.16)
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_checkpoints_get_the_permissions_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        save_state_dict({"w": torch.ones(2)}, tmp_path / "net.safetensors")
        save_training_state({"iter": 1}, tmp_path / "1.state")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "net.safetensors").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "1.state").st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.state", "net.safetensors"]     # no temporary left


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _refusal(path) -> str:
    with pytest.raises(CheckpointError) as err:
        read_weights_file(path)
    message = str(err.value)
    assert "\x1b" not in message and "\n" not in message           # no terminal colour codes, one line
    assert "weights_only" not in message and "Re-running" not in message and "file an issue" not in message
    assert f"'{path}'" in message
    return message


def test_torch_refusals_are_osir_lines_without_torch_advice(tmp_path):
    torch.save({"w": torch.zeros(1), "x": _Marker(tmp_path / "ran")}, tmp_path / "code.pth")
    assert re.search(r"not a weights-only file \(it would call [\w.]*open\); osir runs no pickled code: convert",
                     _refusal(tmp_path / "code.pth"))
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"x": _Marker(tmp_path / "ran")}, f, protocol=4)
    assert "refused its pickle (Unsupported operand 149); osir does not load pickled code" in \
        _refusal(tmp_path / "plain.pkl")
    torch.save({"w": torch.zeros(100)}, tmp_path / "cut.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:100])
    assert _refusal(tmp_path / "cut.pth").endswith(
        "as a weights-only torch file: PytorchStreamReader failed reading zip archive: failed finding central "
        "directory.")
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------- osir test (23.5)
def test_osir_test_archives_an_earlier_results_folder(tmp_path, capsys):
    opt = tiny_options(tmp_path)
    opt.update(name="t", datasets={"real": {"type": "SingleImageDataset", "dataroot_lq": str(tmp_path / "gt")}})
    opt.pop("train")
    argv = ["-opt", str(write_yaml(tmp_path / "t.yml", opt))]
    assert run_test_script(argv) == 0
    first = sorted(p.name for p in (tmp_path / "results" / "t" / "real").iterdir())
    (tmp_path / "results" / "t" / "real" / "stale.png").write_bytes(b"an earlier run's image")
    capsys.readouterr()

    assert run_test_script(argv) == 0
    archived = list((tmp_path / "results").glob("t_archived_*"))
    assert len(archived) == 1
    assert sorted(p.name for p in (archived[0] / "real").iterdir()) == sorted(first + ["stale.png"])
    assert sorted(p.name for p in (tmp_path / "results" / "t" / "real").iterdir()) == first
    lines = [line for line in capsys.readouterr().err.splitlines() if "earlier run" in line]
    assert lines == [f"results folder '{tmp_path / 'results' / 't'}' held an earlier run: moved it to '{archived[0]}'"]
