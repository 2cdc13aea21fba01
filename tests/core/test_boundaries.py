"""The core/plugin boundary and start-up cost (DESIGN.md, rules of the core)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "core" / "crispml"
PLUGINS = REPO / "plugins"
BACKENDS = {
    "mlflow",
    "great_expectations",
    "feast",
    "bentoml",
    "prefect",
    "evidently",
    "sklearn",
    "pandas",
    "pyarrow",
    "dask",
    "matplotlib",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_importing_crispml_and_loading_every_plugin_imports_no_backend() -> None:
    code = (
        "import sys, json, crispml\n"
        "from crispml.plugins import get_plugins\n"
        "p = get_plugins(); p.describe()\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(proc.stdout))
    assert loaded & BACKENDS == set()
    assert {"crispml_files", "crispml_sklearn"} <= loaded  # the plugins really were imported


def test_the_cli_listing_commands_import_no_backend() -> None:
    for args in (["--help"], ["plugins"], ["plugins", "--json"], ["runs"]):
        code = (
            "import sys, json\nfrom crispml.cli import cli\n"
            f"try:\n    cli.main(args={args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
        assert loaded & BACKENDS == set(), args


def test_the_core_imports_no_backend_and_no_plugin() -> None:
    for path in CORE.rglob("*.py"):
        top = {name.split(".")[0] for name in _imports(path)}
        assert top & BACKENDS == set(), path
        assert not any(n.startswith("crispml_") for n in top), path


def test_the_core_names_no_backend() -> None:
    """No ``if use == "mlflow"``: the core's code (docstrings aside) never names a backend."""
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {  # bare strings: module, class, function and attribute docstrings
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                words = set(node.value.lower().replace(".", " ").replace("'", " ").split())
                assert not words & (BACKENDS - {"pandas"}), f"{path}: {node.value!r}"


def test_plugins_use_only_the_public_api() -> None:
    for path in PLUGINS.rglob("*.py"):
        for name in _imports(path):
            if name == "crispml" or not name.startswith("crispml"):
                continue
            assert name.startswith("crispml_"), f"{path} imports private core module {name}"
