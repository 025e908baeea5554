"""Issue 22 point 4: layers that show in the tree.  The contracts (``osir/core``: registry, options, errors,
the Method contract, method cards, checkpoint and weights I/O) import nothing else of osir; the training
engine, inference, metrics, data, diffusion and the methods sit on them and never import a command; the
commands (argument parsing, files, printing) sit on top.  Every import counts, also those inside functions."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OSIR = ROOT / "osir"
#: the command layer: entry points and sub-commands (``osir <command>``, ``python -m osir.<command>``)
COMMANDS = {"osir.__main__", "osir.train", "osir.test", "osir.restore", "osir.web", "osir.export", "osir.recognize",
            "osir.compare", "osir.degrade", "osir.bench", "osir.core.cli", "osir.model_card", "osir.metrics.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every osir import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names] + [(node.lineno, base)]
    return [(line, m) for line, m in found if m == "osir" or m.startswith("osir.")]


def layer(module: str) -> str:
    if module.startswith("osir.core"):
        return "contracts"
    if any(module == c or module.startswith(c + ".") for c in COMMANDS):
        return "commands"
    return "middle"


MODULES = sorted(OSIR.rglob("*.py"))


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of osir (``from osir.x import y`` also yields ``osir.x.y``)."""
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_points_up(path):
    own = layer(module_name(path))
    allowed = {"contracts": {"contracts"}, "middle": {"contracts", "middle"},
               "commands": {"contracts", "middle", "commands"}}[own]
    upward = [f"{path.relative_to(ROOT)}:{line}: {own} imports {m} ({layer(m)})"
              for line, m in imports_of(path) if _is_module(m) and m != "osir" and layer(m) not in allowed]
    assert upward == []


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    bad = OSIR / "core" / "_layer_probe.py"
    source = "def f():\n    from osir.engine.trainer import Trainer\n    from osir import restore\n"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source if self == bad else
                        Path.read_bytes(self).decode(encoding or "utf-8"))
    found = [m for _, m in imports_of(bad) if _is_module(m)]
    assert "osir.engine.trainer" in found and "osir.restore" in found
    assert {layer(m) for m in found} == {"middle", "commands"}
