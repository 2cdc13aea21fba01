"""A feast recipe's mistakes are found when it is checked: exit 2, one line, nothing written."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from crispml import RecipeError, check

from conftest import FeatureRepo, labels_frame


def _error(recipe: Path) -> str:
    with pytest.raises(RecipeError) as info:
        check(recipe)
    return str(info.value)


def test_a_repo_without_definitions(feature_repo: FeatureRepo) -> None:
    (feature_repo.folder / "defs.py").unlink()
    assert _error(feature_repo.recipe).endswith("load.repo: no Feast definitions (*.py) in features/")


def test_a_definition_file_that_fails_to_import_is_named_with_its_line(feature_repo: FeatureRepo) -> None:
    (feature_repo.folder / "broken.py").write_text("from feast import Entity\n\nx = 1\nvalue = undefined_name + 1\n")
    message = _error(feature_repo.recipe)
    assert "load.repo: definition file features/broken.py line 4 fails to import: NameError:" in message
    assert "undefined_name" in message


def test_the_failing_line_is_found_in_a_file_another_file_imports(feature_repo: FeatureRepo) -> None:
    (feature_repo.folder / "helpers.py").write_text("def ttl():\n    return 1 / 0\n")
    (feature_repo.folder / "uses.py").write_text("from helpers import ttl\n\nTTL = ttl()\n")
    message = _error(feature_repo.recipe)
    assert "definition file features/helpers.py line 2 fails to import: ZeroDivisionError: division by zero" in message


def test_a_syntax_error_in_a_definition_file(feature_repo: FeatureRepo) -> None:
    (feature_repo.folder / "typo.py").write_text("a = 1\nb = (2,\n")
    assert "definition file features/typo.py line 2 fails to import: SyntaxError" in _error(feature_repo.recipe)


def test_a_definition_file_that_would_shadow_an_imported_module(feature_repo: FeatureRepo) -> None:
    (feature_repo.folder / "json.py").write_text("X = 1\n")
    assert "features/json.py: its module name 'json' is already taken by" in _error(feature_repo.recipe)


def test_an_unknown_feature_service_lists_the_services(feature_repo: FeatureRepo) -> None:
    message = _error(feature_repo.write_recipe(feature_service="churn_v2"))
    assert message.endswith(
        "load.feature_service: no feature service 'churn_v2' in features/ (services: churn_v1, minutes_only)"
    )


def test_entities_lacking_the_entity_column(feature_repo: FeatureRepo) -> None:
    labels_frame().rename(columns={"customer_id": "cust"}).to_parquet(feature_repo.labels)
    assert _error(feature_repo.recipe).endswith(
        "load.entities: labels.parquet lacks entity column 'customer_id' that churn_v1 needs "
        "(columns: cust, event_timestamp, churned)"
    )


def test_entities_without_a_time_column(feature_repo: FeatureRepo) -> None:
    labels_frame().drop(columns=["event_timestamp"]).to_parquet(feature_repo.labels)
    message = _error(feature_repo.recipe)
    assert "load.timestamp_column: labels.parquet has no time column 'event_timestamp'" in message
    assert "(columns: customer_id, churned)" in message
    named = _error(feature_repo.write_recipe(timestamp_column="label_time"))
    assert "load.timestamp_column: labels.parquet has no time column 'label_time'" in named


def test_a_time_column_beside_an_event_timestamp_column(feature_repo: FeatureRepo) -> None:
    labels_frame().assign(label_time=pd.Timestamp("2026-01-06", tz="UTC")).to_parquet(feature_repo.labels)
    message = _error(feature_repo.write_recipe(timestamp_column="label_time"))
    assert "labels.parquet has both 'label_time' and 'event_timestamp'" in message


def test_a_target_not_in_the_entities_file(feature_repo: FeatureRepo) -> None:
    message = _error(feature_repo.write_recipe(target="churnd"))
    assert message.endswith(
        "load.target: column 'churnd' is not in labels.parquet (columns: customer_id, event_timestamp, churned)"
    )


def test_a_csv_entities_file_is_checked_from_its_header(feature_repo: FeatureRepo) -> None:
    (feature_repo.project / "labels.csv").write_text("customer,event_timestamp,churned\n1,2026-01-06,0\n")
    message = _error(feature_repo.write_recipe(entities="labels.csv"))
    assert "load.entities: labels.csv lacks entity column 'customer_id'" in message


def test_an_online_store_feast_does_not_know(feature_repo: FeatureRepo) -> None:
    message = _error(feature_repo.write_recipe(online_store={"type": "rediss"}))
    assert "load.online_store: not a valid Feast online store" in message
    assert "with a 'type'" in _error(feature_repo.write_recipe(online_store={"connection_string": "x"}))


def test_an_online_store_beside_a_feature_store_yaml(feature_repo: FeatureRepo) -> None:
    (feature_repo.folder / "feature_store.yaml").write_text("project: p\nprovider: local\nregistry: r.db\n")
    message = _error(feature_repo.write_recipe(online_store={"type": "sqlite"}))
    assert "load.online_store: features/feature_store.yaml configures the store" in message


def test_a_gate_on_a_metric_the_load_does_not_compute(feature_repo: FeatureRepo) -> None:
    import yaml

    data = yaml.safe_load(feature_repo.recipe.read_text())
    data["load"]["gate"] = {"accuracy": ">= 0.5"}
    feature_repo.recipe.write_text(yaml.safe_dump(data))
    assert "load.gate.accuracy: metric 'accuracy' is not computed by this step" in _error(feature_repo.recipe)


def test_the_cli_exits_2_with_one_line_and_writes_nothing(
    feature_repo: FeatureRepo, crispml_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    feature_repo.write_recipe(feature_service="churn_v2")
    for args in (["run", "recipe.yaml"], ["materialize", "recipe.yaml"]):
        proc = crispml_cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "recipe.yaml:6: load.feature_service: no feature service 'churn_v2'" in lines[0], lines[0]
    assert not (feature_repo.project / ".crispml").exists()


def test_a_validate_step_is_checked_against_the_joined_columns(feature_repo: FeatureRepo) -> None:
    from crispml import check

    good = feature_repo.write_recipe(
        steps={
            "validate": {
                "use": "great_expectations",
                "expectations": [
                    {"expect": "column_values_to_not_be_null", "column": "minutes"},
                    {"expect": "column_values_to_not_be_null", "column": "event_timestamp"},
                ],
            }
        }
    )
    options = check(good).step("load").options  # type: ignore[union-attr]
    assert options.provided_columns() == (
        ["customer_id", "event_timestamp", "churned", "minutes", "calls"],
        "churn_v1 × labels.parquet",
    )
    bad = feature_repo.write_recipe(
        steps={
            "validate": {
                "use": "great_expectations",
                "expectations": [
                    {"expect": "column_values_to_not_be_null", "column": "minutes_total"},
                ],
            }
        }
    )
    assert "minutes_total" in _error(bad)


def test_an_entities_column_named_like_a_served_feature(feature_repo: FeatureRepo) -> None:
    labels_frame().assign(minutes=1.0).to_parquet(feature_repo.labels)
    assert "load.entities: labels.parquet has column(s) minutes that churn_v1 provides" in _error(feature_repo.recipe)


CHILD = """
import sys, time
import psutil
while psutil.pid_exists(int(sys.argv[1])):  # import Feast only once the parent is gone
    time.sleep(0.2)
import feast
print("imported feast", flush=True)
"""

PARENT = """
import os, subprocess, sys
import crispml
crispml.check(sys.argv[1])
with open(sys.argv[2], "w") as out:
    subprocess.Popen(
        [sys.executable, "-c", sys.argv[3], str(os.getpid())], env=dict(os.environ), stdout=out, stderr=out,
        start_new_session=True,
    )
"""


def test_a_process_started_after_feast_was_imported_can_import_it_once_the_starter_exits(
    feature_repo: FeatureRepo, tmp_path: Path
) -> None:
    """Regression (the flagship's schedule): importing Feast names a temporary metrics folder in
    the environment and deletes it at exit; a process started from that environment (the Prefect
    serve process `crispml schedule` starts after checking the recipe) failed its own Feast import
    with FileNotFoundError .../gauge_liveall_<pid>.db once the starter had exited."""
    import sys
    import time

    out = tmp_path / "child.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    subprocess.run(
        [sys.executable, "-c", PARENT, str(feature_repo.recipe), str(out), CHILD],
        cwd=feature_repo.project,
        env=env,
        check=True,
        timeout=300,
    )
    deadline = time.monotonic() + 300
    while "imported feast" not in out.read_text() and "Error" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert out.read_text().strip().endswith("imported feast"), out.read_text()[-2000:]
