"""Stored results read back without unpickling their backend objects until a field is read."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd

from crispml import Dataset, Evaluation, TrainedModel


def _dataset() -> Dataset:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    return Dataset(frame=frame, target="y", name="t", source="memory", fingerprint="abc", metrics={"rows": 4.0})


def test_a_stored_dataset_answers_its_summary_without_pandas(tmp_path: Path) -> None:
    path = tmp_path / "load.pkl"
    path.write_bytes(pickle.dumps(_dataset()))
    code = (
        "import json, pickle, sys\n"
        f"result = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "before = {'summary': result.summary(), 'metrics': result.metrics, 'name': result.name,\n"
        "          'pandas': 'pandas' in sys.modules}\n"
        "rows = len(result.frame)\n"
        "print(json.dumps({**before, 'rows': rows, 'pandas_after': 'pandas' in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(proc.stdout)
    assert seen["pandas"] is False  # the summary, metrics and plain fields came without it
    assert seen["summary"] == _dataset().summary()
    assert seen["metrics"] == {"rows": 4.0} and seen["name"] == "t"
    assert seen["rows"] == 4 and seen["pandas_after"] is True  # read on first use of the frame


def test_a_stored_result_is_equal_to_the_original_and_pickles_again() -> None:
    original = _dataset()
    loaded = pickle.loads(pickle.dumps(original))
    assert loaded.frame.equals(original.frame) and loaded.summary() == original.summary()
    again = pickle.loads(pickle.dumps(loaded))  # re-pickled before its frame was read
    assert again.frame.equals(original.frame) and again.summary() == original.summary()
    model = TrainedModel(model=[1, 2], flavor="test", task="regression", target="y", feature_columns=["x"])
    assert pickle.loads(pickle.dumps(model)) == model
    evaluation = Evaluation(metrics={"score": 0.5}, rows=3)
    assert pickle.loads(pickle.dumps(evaluation)) == evaluation


def test_a_field_set_after_loading_wins_over_the_stored_one_and_its_summary() -> None:
    loaded = pickle.loads(pickle.dumps(_dataset()))
    loaded.frame = pd.DataFrame({"x": [1.0], "y": [1]})
    assert len(loaded.frame) == 1
    assert loaded.summary()["rows"] == 1  # not the summary stored with the pickle
