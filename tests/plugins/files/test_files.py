"""The files plugin: CSV and Parquet, fingerprints, header checks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from crispml import Recipe, RecipeError, Step, check, run


def test_csv_and_parquet_load_the_same_data_with_content_fingerprints(project: Path, churn_csv: Path) -> None:
    frame = pd.read_csv(churn_csv)
    frame.to_parquet(project / "churn.parquet")
    csv = run(Recipe(name="c", load=Step(use="files", path=str(churn_csv), target="churned")), project=project)
    pq = run(
        Recipe(name="p", load=Step(use="files", path="churn.parquet", target="churned")).with_source(
            project / "r.yaml"
        ),
        project=project,
    )
    assert csv.status == pq.status == "succeeded"
    pd.testing.assert_frame_equal(csv["dataset"].frame, pq["dataset"].frame)
    assert csv["dataset"].fingerprint != pq["dataset"].fingerprint  # a hash of the file's bytes
    assert len(csv["dataset"].fingerprint) == 64
    assert pq.manifest["data"]["source"].endswith("churn.parquet")


def test_target_is_checked_against_a_parquet_header(project: Path, churn_csv: Path) -> None:
    pd.read_csv(churn_csv).to_parquet(project / "churn.parquet")
    recipe = Recipe(name="p", load=Step(use="files", path=str(project / "churn.parquet"), target="nope"))
    with pytest.raises(RecipeError, match=r"load\.target: column 'nope' is not in churn\.parquet"):
        check(recipe)


def test_read_options_reach_pandas(project: Path) -> None:
    (project / "semi.csv").write_text("a;b\n1;2\n3;4\n")
    recipe = Recipe(
        name="s",
        split=None,
        load=Step(use="files", path=str(project / "semi.csv"), target="b", read_options={"sep": ";"}),
    )
    result = run(recipe, project=project)
    assert list(result["dataset"].frame.columns) == ["a", "b"]


def test_an_unreadable_file_fails_the_load_stage_with_its_reason(project: Path) -> None:
    # Starts like Parquet (so the recipe check lets it through), but is not readable as one.
    (project / "bad.parquet").write_bytes(b"PAR1 not parquet at all")
    recipe = Recipe(name="b", load=Step(use="files", path=str(project / "bad.parquet")))
    result = run(recipe, project=project)
    assert result.status == "failed"
    assert "stage 'load' (plugin 'files') failed" in result.manifest["error"]


def test_a_file_that_is_plainly_not_parquet_is_a_recipe_error(project: Path) -> None:
    (project / "bad.parquet").write_bytes(b"not parquet at all")
    recipe = Recipe(name="b", load=Step(use="files", path=str(project / "bad.parquet")))
    with pytest.raises(RecipeError, match=r"load\.path: expected a Parquet file, got something else"):
        run(recipe, project=project)
    assert not (project / ".crispml").exists()
