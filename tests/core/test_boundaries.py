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


# Production rows come back from a deployment's prediction log as JSON records; the one core
# module that turns them into the Dataset a validate step reads imports pandas inside the function
# that does it (reached only by `crispml validate-data --deployment` and the monitor's
# `validate: true`, whose plugins need pandas anyway). Nowhere else, and never at module level.
LAZY_PANDAS = {"production_data.py"}


def _module_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_core_imports_no_backend_and_no_plugin() -> None:
    for path in CORE.rglob("*.py"):
        top = {name.split(".")[0] for name in _imports(path)}
        allowed = {"pandas"} if path.name in LAZY_PANDAS else set()
        assert top & BACKENDS <= allowed, path
        assert {n.split(".")[0] for n in _module_level_imports(path)} & BACKENDS == set(), path
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


def _plugin_packages() -> dict[str, str]:
    """Each built-in plugin's package → the name it is registered under (its entry point)."""
    from importlib import metadata

    out = {}
    for ep in metadata.entry_points(group="crispml"):
        package = ep.value.split(":")[0].split(".")[0]
        if (PLUGINS / package).is_dir():
            out[package] = ep.name
    return out


def test_no_plugin_imports_another_plugin() -> None:
    """Plugins cooperate through hooks and the public ``crispml`` API only (DESIGN.md)."""
    packages = _plugin_packages()
    assert {"crispml_files", "crispml_mlflow", "crispml_bentoml", "crispml_great_expectations"} <= set(packages)
    for package in packages:
        for path in (PLUGINS / package).rglob("*.py"):
            for name in _imports(path):
                top = name.split(".")[0]
                if top.startswith("crispml_"):
                    assert top == package, f"{path} imports another plugin: {name}"


def _named_reads(path: Path) -> list[tuple[str, int]]:
    """String constants naming whose options a module reads: ``trackers["x"]``,
    ``trackers.get("x")``, ``tracker_options("x")``, ``step_options(stage, "x")``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "trackers"
            and isinstance(node.slice, ast.Constant)
        ):
            out.append((str(node.slice.value), node.lineno))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func, args = node.func, node.args
            reads_trackers = (
                func.attr == "get" and isinstance(func.value, ast.Attribute) and func.value.attr == "trackers"
            )
            if reads_trackers or func.attr == "tracker_options":
                named = args[:1]
            elif func.attr == "step_options":
                named = args[1:2]
            else:
                continue
            for arg in named:
                assert isinstance(arg, ast.Constant), f"{path}:{node.lineno}: name the plugin literally"
                out.append((str(arg.value), node.lineno))
    return out


def test_no_plugin_reads_another_plugins_options() -> None:
    """A plugin reads its own tracker and step options only; another's store it asks for
    through a hook (``crispml_resolve_model``)."""
    reads = 0
    for package, name in _plugin_packages().items():
        for path in (PLUGINS / package).rglob("*.py"):
            for owner, line in _named_reads(path):
                reads += 1
                assert owner == name, f"{path}:{line} reads plugin '{owner}''s options"
    assert reads > 0, "the check found nothing to check: it no longer sees how options are read"


def test_the_option_reader_check_catches_a_foreign_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(context):\n"
        "    a = context.trackers['mlflow']\n"
        "    b = context.trackers.get('mlflow')\n"
        "    c = context.tracker_options('mlflow')\n"
        "    d = context.step_options('register', 'mlflow')\n"
    )
    assert [owner for owner, _ in _named_reads(bad)] == ["mlflow"] * 4
