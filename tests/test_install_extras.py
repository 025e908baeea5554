"""Install sized to the job (issue 27.2): the core install trains, tests and restores with every method;
``osir[web]`` adds gradio, ``osir[export]`` onnx / onnxscript / onnxruntime, ``osir[all]`` both, ``osir[test]``
everything (CI).  A command whose extra is missing says so in one line with the pip command, exit 2, and
``osir --help`` still works.  The packages are hidden in a subprocess (``sys.modules[name] = None`` makes
``import name`` raise ModuleNotFoundError, as for a package that is not installed)."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from osir.core.checkpoint import save_network
from osir.core import registry
from osir.core.registry import missing_package
from osir.methods.realesrgan import RRDBNet

REPO = Path(__file__).resolve().parents[1]
WEB, EXPORT = {"gradio"}, {"onnx", "onnxscript", "onnxruntime"}
#: packages the methods need to train and test: they stay in the core install
METHOD_PACKAGES = {"torch", "torchvision", "diffusers", "peft", "transformers", "open-clip-torch", "timm", "pyiqa",
                   "basicsr", "spandrel"}


def _names(requirements) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


@pytest.fixture(scope="module")
def setup_kwargs():
    """The arguments setup.py passes to ``setuptools.setup`` (setup.py run with ``setup`` recording them)."""
    if not (REPO / "setup.py").is_file():
        pytest.skip("no setup.py beside the tests (an installed copy)")
    seen = {}
    saved, cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kw: seen.update(kw)
    try:
        os.chdir(REPO)          # setup.py reads README.md and osir/__init__.py from its folder
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = saved
        os.chdir(cwd)
    return seen


def test_core_install_has_the_methods_and_extras_have_the_tools(setup_kwargs):
    core = _names(setup_kwargs["install_requires"])
    extras = {name: _names(reqs) for name, reqs in setup_kwargs["extras_require"].items()}
    assert METHOD_PACKAGES <= core
    assert not core & (WEB | EXPORT), "gradio / onnx* belong to the extras, not the core install"
    assert extras["web"] == WEB
    assert extras["export"] == EXPORT
    assert extras["all"] == WEB | EXPORT
    assert extras["test"] == WEB | EXPORT | {"pytest", "pytest-timeout", "selenium"}   # CI: .[test] is everything
    ci = REPO / ".ci" / "run"
    if ci.is_file():
        assert 'pip install -q -e ".[test]"' in ci.read_text()
    # the gradio pin (gr.ImageSlider, 6.x launch) moved with it
    assert [str(Requirement(r).specifier) for r in setup_kwargs["extras_require"]["web"]] == [">=6"]
    # each package of an extra is named with that extra when it is missing (osir.core.registry.EXTRAS)
    assert registry.EXTRAS == {name: extra for extra in ("web", "export") for name in extras[extra]}


def test_a_missing_extra_package_names_its_extra():
    assert missing_package(ModuleNotFoundError("No module named 'gradio'", name="gradio")) == (
        "needs the package 'gradio', which is not installed (pip install \"osir[web]\")")
    for name in ("onnx", "onnxscript", "onnxruntime"):
        assert missing_package(ModuleNotFoundError(f"No module named '{name}'", name=name)) == (
            f"needs the package '{name}', which is not installed (pip install \"osir[export]\")")
    # a submodule missing from an installed gradio: another version of gradio itself, not the extra
    assert missing_package(ModuleNotFoundError("No module named 'gradio.no_such_module'",
                                               name="gradio.no_such_module")) == (
        "needs the module 'gradio.no_such_module', which the installed 'gradio' does not have "
        "(another version: pip install --upgrade gradio)")
    # packages of the core install keep their pip names
    assert missing_package(ModuleNotFoundError("No module named 'open_clip'", name="open_clip")).endswith(
        "(pip install open-clip-torch)")


def _osir(hidden: set[str], *argv: str) -> subprocess.CompletedProcess:
    """``osir *argv`` (``python -m osir``) in a fresh interpreter where the packages ``hidden`` are not importable."""
    wrapper = ("import runpy, sys\n"
               "for name in sys.argv[1].split(','):\n"
               "    sys.modules[name] = None\n"
               "sys.argv = ['osir', *sys.argv[2:]]\n"
               "runpy.run_module('osir', run_name='__main__', alter_sys=True)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", wrapper, ",".join(sorted(hidden)), *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_osir_web_without_gradio_is_one_line_with_the_extra(tmp_path):
    done = _osir({"gradio"}, "--help")
    assert done.returncode == 0, done.stderr
    assert "web " in done.stdout and "export " in done.stdout
    done = _osir({"gradio"}, "web", "--weights", str(tmp_path / "w.pth"))
    assert done.returncode == 2
    assert done.stderr == ("osir web: error: osir web needs the package 'gradio', which is not installed "
                           "(pip install \"osir[web]\")\n")


@pytest.mark.parametrize("package", ["onnx", "onnxruntime"])
def test_osir_export_without_onnx_is_one_line_with_the_extra(package, tmp_path):
    """The help works without the package (it lists what the cards export); an export names the extra
    before it writes anything (onnxscript: the same check, and the message in the test above)."""
    net = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=32, scale=4)
    save_network(net, tmp_path / "w.safetensors")
    if package == "onnx":
        done = _osir({package}, "export", "onnx", "--help")
        assert done.returncode == 0, done.stderr
        assert "RRDBNet" in done.stdout
    done = _osir({package}, "export", "onnx", "--weights", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "x.onnx"))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"osir export: error: osir.export needs the package '{package}', which is not installed "
                           "(pip install \"osir[export]\")\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
