"""The ``osir`` console command: help, unknown commands, lazy dispatch to every module's ``main(argv)``, a
real restore through the installed entry point, and the ``python osir/train.py`` forms."""
import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from osir.__main__ import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
OSIR = shutil.which("osir", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def _run(*args, **kw):
    return subprocess.run(list(args), check=False, capture_output=True, text=True, cwd=kw.pop("cwd", REPO), timeout=120, **kw)


def test_help_lists_every_command_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert list(COMMANDS) == ["train", "test", "restore", "score", "compare", "degrade", "bench", "web", "export",
                              "recognize"]
    for name, (_, text) in COMMANDS.items():
        assert f"  {name:<9}  {text}\n" in out
    assert main([]) == 2 and "usage: osir <command>" in capsys.readouterr().err


def test_unknown_command_lists_the_allowed_ones(capsys):
    assert main(["restroe", "x.png"]) == 2
    assert capsys.readouterr().err.strip() == (
        "osir: unknown command 'restroe' (did you mean 'restore'?); commands: train, test, restore, score, compare, "
        "degrade, bench, web, export, recognize (osir --help)")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_module_has_main_taking_argv(command):
    """Read from the source (nothing imported): ``def main(argv=None)`` in the module the command runs."""
    module = COMMANDS[command][0]
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"osir {command}: module {module} does not exist"
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains, f"{module} has no main()"
    args = mains[0].args
    assert [a.arg for a in args.args][:1] == ["argv"] and len(args.defaults) == len(args.args), \
        f"{module}.main must take argv=None"


def test_dispatch_is_lazy_and_passes_the_remaining_arguments():
    probe = ("import sys\nfrom osir.__main__ import COMMANDS, main\n"
             "try:\n    main(['score', '--help'])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
             "print(sorted(m for _, (m, _) in COMMANDS.items() if m in sys.modules))\n")
    done = _run(sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert "--restored" in done.stdout and "exit 0" in done.stdout                   # osir.metrics' own parser
    assert done.stdout.strip().splitlines()[-1] == "['osir.metrics.__main__']"      # nothing else imported


@pytest.mark.skipif(OSIR is None, reason="the osir console script is not installed (pip install -e .)")
def test_restore_through_the_console_entry_point(tmp_path):
    from osir.core.checkpoint import save_network
    from osir.methods.realesrgan import RRDBNet
    torch.manual_seed(0)
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=4)
    save_network(net, tmp_path / "net_g.safetensors")
    (tmp_path / "in" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "in" / "sub" / "x.jpg"), np.full((7, 9, 3), 90, np.uint8))
    done = _run(OSIR, "restore", "--model", "realesrgan-x4", "--weights", str(tmp_path / "net_g.safetensors"),
                str(tmp_path / "in"), "-o", str(tmp_path / "out"), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "osir restore: 1 images restored, 0 failed, 0 skipped (not images)" in done.stdout
    assert cv2.imread(str(tmp_path / "out" / "sub" / "x.png")).shape == (28, 36, 3)
    assert _run(OSIR, "--help").stdout.startswith("usage: osir <command>")


def test_script_forms_keep_working():
    train = _run(sys.executable, "osir/train.py", "--help")
    assert train.returncode == 0 and "-opt OPT" in train.stdout and "--auto_resume" in train.stdout
    module = _run(sys.executable, "-m", "osir", "--help")
    assert module.returncode == 0 and "recognize" in module.stdout
