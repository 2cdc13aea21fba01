"""The plugin's own tests, with crispml's test kit."""

from __future__ import annotations

from pathlib import Path

import crispml_baseline
from crispml import Recipe, Step
from crispml.testing import Recorder, run_with


def test_baseline_predicts_the_majority_class(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("x,y\n" + "".join(f"{i},{int(i % 4 == 0)}\n" for i in range(40)))
    recorder = Recorder()
    recipe = Recipe(name="b", load=Step(use="files", path=str(data), target="y"), train=Step(use="baseline"))
    result = run_with(recipe, project=tmp_path, plugins={"baseline": crispml_baseline, "rec": recorder})
    assert result.status == "succeeded"
    assert set(result["model"].model.predict(result["dataset"].test_frame)) == {0}
    assert recorder.events()[-1] == "after_run:succeeded"
