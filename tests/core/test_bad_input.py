"""Each user mistake: a one-line error naming file, field (and YAML line) and what was expected;
exit 2; nothing has run and nothing is written."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from crispml.errors import EXIT_USAGE

BASE = "name: t\nload: {use: files, path: churn.csv, target: churned}\n"

CASES = {
    "unknown plugin": (
        BASE + "train: {use: skleran}\n",
        "r.yaml:3: train.use: no plugin named 'skleran' is installed; did you mean 'sklearn'? installed: ",
    ),
    "plugin lacks the stage": (
        BASE + "train: {use: files}\n",
        "r.yaml:3: train.use: plugin 'files' does not provide stage 'train'",
    ),
    "unknown option": (
        BASE + "train:\n  use: sklearn\n  estimater: x\n",
        "r.yaml:5: train.estimater: unknown option (did you mean 'estimator'?",
    ),
    "option of the wrong type": (
        BASE + "train:\n  use: sklearn\n  preprocess: maybe\n",
        "r.yaml:5: train.preprocess: expected a valid boolean",
    ),
    "estimator parameter of the wrong type": (
        BASE + "train:\n  use: sklearn\n  params: {C: abc}\n",
        "r.yaml:5: train.params: The 'C' parameter of LogisticRegression must be a float",
    ),
    "malformed YAML": (
        BASE + "train:\n  use: sklearn\n   params: {C: 1}\n",
        "r.yaml:5: malformed YAML: mapping values are not allowed",
    ),
    "missing data file": (
        "name: t\nload: {use: files, path: nope.csv, target: churned}\n",
        "r.yaml:2: load.path: file not found:",
    ),
    "target column absent": (
        "name: t\nload: {use: files, path: churn.csv, target: churn}\n",
        "r.yaml:2: load.target: column 'churn' is not in churn.csv (columns: tenure_months,",
    ),
    "malformed gate": (
        BASE + "train: {use: sklearn}\nevaluate:\n  use: sklearn\n  gate: {accuracy: '~0.9'}\n",
        """r.yaml:6: evaluate.gate.accuracy: expected a comparison like ">= 0.9", got '~0.9'""",
    ),
    "unknown metric name": (
        BASE + "train: {use: sklearn}\nevaluate:\n  use: sklearn\n  metrics: [acuracy]\n",
        "r.yaml:6: evaluate.metrics: unknown metric 'acuracy' (did you mean accuracy",
    ),
    "gate on a metric the step does not compute": (
        BASE + "train: {use: sklearn}\nevaluate:\n  use: sklearn\n  gate: {f1: '>= 0.5'}\n",
        "r.yaml:6: evaluate.gate.f1: metric 'f1' is not computed by this step (it computes: accuracy)",
    ),
    "unknown recipe field": (
        BASE + "trian: {use: sklearn}\n",
        "r.yaml:3: trian: unknown field",
    ),
    "data path is a folder": (
        "name: t\nload: {use: files, path: ., target: churned}\n",
        "r.yaml:2: load.path: expected a CSV or Parquet file, got a folder",
    ),
    "train without a target": (
        "name: t\nload: {use: files, path: churn.csv}\ntrain: {use: sklearn}\n",
        "r.yaml:3: train: the load step names no target column to train on (set load.target)",
    ),
    "stage without the stage it needs": (
        BASE + "evaluate: {use: sklearn}\n",
        "r.yaml:3: evaluate: stage 'evaluate' needs a 'train' step in the recipe",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_recipe(case: str, project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    text, expected = CASES[case]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(text)
    for command in ("run", "check"):
        proc = crispml_cli(command, "r.yaml")
        assert proc.returncode == EXIT_USAGE, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("crispml: error: ") and expected in lines[0], lines[0]
        assert "Traceback" not in proc.stderr
        assert not (project / ".crispml").exists()  # nothing ran, nothing written


def test_bad_override(project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(BASE)
    proc = crispml_cli("run", "r.yaml", "--set", "lod.path=x.csv")
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip() == "crispml: error: --set: lod: unknown field"
    proc = crispml_cli("run", "r.yaml", "--set", "no-equals-sign")
    assert proc.returncode == EXIT_USAGE and "expected KEY=VALUE" in proc.stderr
    assert not (project / ".crispml").exists()


def test_missing_recipe_file(project: Path, crispml_cli) -> None:  # type: ignore[no-untyped-def]
    proc = crispml_cli("run", "nope.yaml")
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip() == "crispml: error: nope.yaml: cannot read recipe: No such file or directory"


@pytest.mark.parametrize("command", ["resume", "show"])
def test_unknown_run_id(command: str, project: Path, crispml_cli) -> None:  # type: ignore[no-untyped-def]
    proc = crispml_cli(command, "20990101-000000-abcdef")
    assert proc.returncode == EXIT_USAGE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "run '20990101-000000-abcdef' not found" in lines[0]


def test_an_unknown_plugin_error_lists_the_installed_ones(project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(BASE + "train: {use: nothing_like_it}\n")
    line = crispml_cli("check", "r.yaml").stderr.strip()
    installed = line.split("installed: ")[1].split(", ")
    assert {"files", "sklearn", "local"} <= set(installed)


def test_an_override_of_a_plugin_option_is_blamed_on_set(project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(BASE)
    proc = crispml_cli("check", "r.yaml", "--set", "load.path=missing.csv")
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip().startswith("crispml: error: --set: load.path: file not found:")


# -- hostile or broken recipe files: refused fast, in one line, nothing written -------------------


def _bomb(levels: int = 9) -> str:
    lines = ["  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return BASE + "train:\n  use: sklearn\n  params:\n" + "\n".join("  " + line for line in lines) + "\n"


HUGE = 900_000

HOSTILE: dict[str, tuple[bytes, str]] = {
    "duplicate top-level key": (
        (BASE + "name: other\n").encode(),
        "r.yaml:3: duplicate key 'name' (first given at line 1)",
    ),
    "duplicate nested key": (
        (BASE + "train:\n  use: sklearn\n  params: {C: 1.0}\n  params: {C: 2.0}\n").encode(),
        "r.yaml:6: duplicate key 'params' (first given at line 5)",
    ),
    "duplicate key in flow style": (
        b"name: t\nload: {use: files, path: churn.csv, path: other.csv, target: churned}\n",
        "r.yaml:2: duplicate key 'path' (first given at line 2)",
    ),
    "binary file": (bytes(range(256)) * 40, "r.yaml:1: a binary file, not YAML text"),
    "not UTF-8": ("name: café\n".encode("latin-1") + BASE.encode()[7:], "r.yaml:1: not UTF-8 text (byte 0xe9"),
    "a megabyte value echoed": (
        ("name: '" + "x y" * (HUGE // 3) + "'\nload: {use: files, path: churn.csv}\n").encode(),
        "r.yaml:1: name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]*$', got 'x yx y",
    ),
    "a megabyte column name": (
        ("name: t\nload: {use: files, path: churn.csv, target: '" + "c" * HUGE + "'}\n").encode(),
        "r.yaml:2: load.target: column 'cccc",
    ),
    "a megabyte path": (
        ("name: t\nload: {use: files, path: '" + "p" * HUGE + ".csv'}\n").encode(),
        "r.yaml:2: load.path: not a usable path (File name too long)",
    ),
    "a file over the size limit": (
        ("name: t\n# " + "x" * 1_100_000 + "\n").encode(),
        "r.yaml: the file is over 1,000,000 bytes; a recipe is at most that",
    ),
    "billion laughs": (_bomb().encode(), "aliases expand this document to more than 100,000 values"),
    "recursive alias": (
        (BASE + "train: &t\n  use: sklearn\n  params: {inner: *t}\n").encode(),
        "r.yaml:3: an alias refers to the collection that holds it",
    ),
    "nesting a thousand levels deep": (
        (BASE + "x: " + "[" * 100_000 + "]" * 100_000 + "\n").encode(),
        "r.yaml:3: nested more than 64 levels deep",
    ),
    "split.stratify not a column": (
        (BASE + "split: {stratify: churn}\n").encode(),
        "r.yaml:3: split.stratify: column 'churn' is not in the data the load step reads (did you mean 'churned'?",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_recipe_file(case: str, project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    content, expected = HOSTILE[case]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_bytes(content)
    for command in ("check", "run"):
        proc = crispml_cli(command, "r.yaml", timeout=60)
        assert proc.returncode == EXIT_USAGE, proc.stderr[:500]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr[:2000]
        assert lines[0].startswith("crispml: error: ") and expected in lines[0], lines[0][:500]
        assert len(lines[0]) < 700, len(lines[0])
        assert "Traceback" not in proc.stderr
        assert not (project / ".crispml").exists()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_recipe_is_refused_in_well_under_a_second(case: str, project: Path, churn_csv: Path) -> None:
    """In-process (a subprocess's start-up is not the recipe's cost): reading and checking."""
    from crispml import RecipeError, check

    content, _ = HOSTILE[case]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_bytes(content)
    started = time.perf_counter()
    with pytest.raises(RecipeError):
        check(project / "r.yaml")
    assert time.perf_counter() - started < 0.5


def test_the_same_anchor_used_twice_is_fine(project: Path, churn_csv: Path) -> None:
    """Aliases are YAML, not an attack: a recipe may share one mapping between steps."""
    from crispml import Recipe

    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(
        "name: t\nload: {use: files, path: churn.csv, target: churned}\n"
        "split: &s {test_size: 0.3, stratify: churned}\n"
        "train: {use: sklearn, params: &p {C: 0.5}}\n"
        "description: &d shared\n"
        "plugins: []\n"
    )
    recipe = Recipe.from_yaml(project / "r.yaml")
    assert recipe.split is not None and recipe.split.stratify == "churned"


def test_a_set_override_cannot_bomb(project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(BASE)
    value = "[" * 5000 + "]" * 5000
    proc = crispml_cli("check", "r.yaml", "--set", f"load.read_options.x={value}", timeout=60)
    assert proc.returncode == EXIT_USAGE
    assert "nested more than 64 levels deep" in proc.stderr and len(proc.stderr) < 700


# -- a data path that is not a data file: refused, its content never printed ----------------------

SECRET_LINE = "s3cr3t-first-line,with,commas"


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        ("{use: files, path: /etc/passwd, target: churned}", "load.path: expected a CSV or Parquet file"),
        ("{use: files, path: /etc/passwd, format: csv, target: churned}", "its header has 1 column"),
        ("{use: files, path: OUTSIDE/notes.csv, target: churned}", "its header has 3 columns"),
        ("{use: files, path: OUTSIDE/notes.csv, format: parquet}", "expected a Parquet file"),
        ("{use: files, path: OUTSIDE/blob.csv, target: churned}", "expected a CSV file, got a binary file"),
        ("{use: files, path: OUTSIDE/latin.csv}", "expected a CSV file of UTF-8 text"),
        ("{use: files, path: OUTSIDE/notes.csv}\nsplit: {stratify: churned}", "it has 3 columns"),
        ("{use: files, path: OUTSIDE/fifo.csv}", "expected a CSV or Parquet file, got a special file"),
        ("{use: files, path: /dev/zero, format: csv}", "expected a CSV or Parquet file, got a special file"),
    ],
)
def test_a_file_that_is_not_data_is_refused_without_its_content(  # type: ignore[no-untyped-def]
    load: str, expected: str, project: Path, crispml_cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "notes.csv").write_text(SECRET_LINE + "\nrest\n")
    (outside / "blob.csv").write_bytes(b"\x89PNG\r\n\x1a\n\0\0" + SECRET_LINE.encode())
    if not (outside / "fifo.csv").exists():
        os.mkfifo(outside / "fifo.csv")  # opening it to read would wait for a writer forever
    (outside / "latin.csv").write_bytes(SECRET_LINE.encode() + " caf\xe9 ".encode("latin-1") * 10)
    (project / "r.yaml").write_text(f"name: t\nload: {load.replace('OUTSIDE', str(outside))}\n")
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    for command in ("check", "run"):
        proc = crispml_cli(command, "r.yaml")
        assert proc.returncode == EXIT_USAGE, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], proc.stderr
        for secret in (SECRET_LINE, "s3cr3t", passwd, passwd.split(":")[0] + ":"):
            assert secret not in proc.stderr + proc.stdout
        assert not (project / ".crispml").exists()


LOUD_STEPS = """
import crispml


@crispml.hookimpl
def crispml_declare():
    return crispml.Declaration(stages={"train": crispml.Options})


@crispml.hookimpl
def crispml_train(options, dataset):
    raise ValueError("[bold red]not markup[/] " + "y" * 2_000_000 + "\\nsecond line")
"""


def test_a_stage_error_of_megabytes_is_printed_cut_and_recorded(  # type: ignore[no-untyped-def]
    project: Path, crispml_cli, churn_csv: Path
) -> None:
    """A backend failure: exit 1, one readable line per report, the run recorded as failed."""
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "steps.py").write_text(LOUD_STEPS)
    (project / "r.yaml").write_text(BASE + "plugins: [steps]\ntrain: {use: steps}\n")
    proc = crispml_cli("run", "r.yaml", timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr) < 3000, len(proc.stderr)
    assert "[bold red]not markup[/]" in proc.stderr and "characters)" in proc.stderr
    assert "stage 'train' (plugin 'steps') failed" in proc.stderr
    manifests = list((project / ".crispml" / "runs").glob("*/manifest.json"))
    manifest = json.loads(manifests[0].read_text()) if len(manifests) == 1 else {}
    assert manifest["status"] == "failed" and "yyyy" in manifest["error"]
    assert len(manifest["error"]) < 2_500
