"""The layering import-linter cannot check: no import cycle between single modules of converter/ and
targets/ (lazy imports count), no private name imported from another module, and the device-side
commands loading no converter module when they run. The contracts between packages are in
pyproject.toml ([tool.importlinter]) and checked by `lint-imports` in `make lint`."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "mnist_cnn.onnx"


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "edgesmith" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_no_import_cycles_in_converter_and_targets():
    graph = _import_graph()
    assert graph.cycles(graph.graph()) == []


def test_every_relative_import_stays_inside_the_package():
    """A module moved up a level that kept `from ...errors import x` fails only when imported."""
    assert _import_graph().unresolved() == []


def test_no_private_names_imported_across_modules():
    assert _import_graph().private_imports() == []


@pytest.mark.slow  # each of ~100 modules imported afresh with the whole package behind it: ~1 min on 2 cores
def test_every_lazy_import_of_the_package_could_be_at_the_top(tmp_path):
    """The runtime side of "no cycles": in a copy of the package with every relative import made inside
    a function moved to the top of its module, each module still imports in a fresh interpreter.
    (Lazy imports stay for heavy frameworks and start-up time, never to break a cycle.)"""
    shutil.copytree(ROOT / "edgesmith", tmp_path / "edgesmith", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (tmp_path / "edgesmith").rglob("*.py"):
        tree = ast.parse(path.read_text())
        lazy = [
            ast.unparse(node)
            for function in ast.walk(tree)
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function)
            if isinstance(node, ast.ImportFrom) and node.level
        ]
        if lazy:
            lines = path.read_text().splitlines()
            at = next((i + 1 for i, line in enumerate(lines) if line.startswith("from __future__")), 0)
            path.write_text("\n".join(lines[:at] + lazy + lines[at:]) + "\n")
    code = """
        import importlib, pathlib, sys
        names = sorted(".".join(p.with_suffix("").parts).removesuffix(".__init__")
                       for p in pathlib.Path("edgesmith").rglob("*.py") if p.name != "__main__.py")
        for name in names:
            for loaded in [m for m in sys.modules if m.startswith("edgesmith")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except ImportError as exc:
                print(name, exc)
        print(len(names), "modules")
    """
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr
    *failed, count = out.stdout.splitlines()
    assert failed == [] and int(count.split()[0]) > 90


def test_a_lazy_relative_import_cycle_is_found(tmp_path):
    """The check itself: a cycle closed by an import inside a function, through a package's
    `__init__`, is reported, and so is a private name taken from a sibling module."""
    graph = _import_graph()
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "converter/__init__.py": "from .a import run\n",
            "converter/a.py": "from .sub.b import helper\n\ndef run():\n    return helper()\n",
            "converter/sub/__init__.py": "",
            "converter/sub/b.py": "def helper():\n    from ... import converter\n    from ..a import _x\n",
            "converter/moved.py": "from ...errors import InputError\n",  # was converter/sub/moved.py
            "targets/__init__.py": "",
            "targets/c.py": "from ..converter import a\n",  # into the cycle, not part of it
        },
    )
    edges = graph.graph(root)
    assert edges["edgesmith.converter.sub.b"] == {"edgesmith.converter", "edgesmith.converter.a"}
    assert graph.cycles(edges) == [
        ["edgesmith.converter", "edgesmith.converter.a", "edgesmith.converter.sub.b"]
    ]
    assert graph.unresolved(root) == ["edgesmith.converter.moved:1 from ...errors"]
    assert graph.private_imports(root) == [
        "edgesmith.converter.sub.b:3 imports _x from edgesmith.converter.a"
    ]


def test_help_lists_each_command_with_its_own_summary():
    """`edgesmith --help` lists commands from cli.COMMANDS without importing them: the summaries there
    must be the ones the command modules give."""
    from edgesmith import cli

    parser = cli.build_parser()  # every command module imported
    listed = {a.dest: a.help for a in parser._subparsers._group_actions[0]._choices_actions}
    assert listed == cli.COMMANDS


def test_device_commands_load_no_converter_module(tmp_path):
    """`edgesmith run` and `edgesmith profile` on a real model, and `verify --help`, in a fresh
    interpreter: no edgesmith.converter module is loaded."""
    np.savez(tmp_path / "in.npz", np.zeros((1, 1, 28, 28), np.float32))
    code = f"""
        import contextlib, io, sys
        from edgesmith.cli import main
        runs = [
            ["run", {str(MODEL)!r}, "--input", {str(tmp_path / "in.npz")!r}, "--output", {str(tmp_path / "o.npz")!r}],
            ["profile", {str(MODEL)!r}, "--runs", "2", "--warmup", "0"],
            ["verify", "--help"],
        ]
        for argv in runs:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                assert main(argv) == 0, argv
            loaded = sorted(m for m in sys.modules if m.startswith("edgesmith.converter"))
            print(argv[0], loaded)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["run []", "profile []", "verify []"]
    assert (tmp_path / "o.npz").is_file()  # the run did run
