"""Loading a model's files by flavor, and the frame a model predicts on.

Shared by the deploying process (the smoke gate's reference predictions) and the served
service: crispml copies this file, unchanged, as ``flavors.py`` into every release, beside
``service.py``. Like the service it never imports crispml, so a built bento runs without it.

Flavors (``ResolvedModel.flavor``, whichever registry plugin resolved the version):

* ``mlflow.sklearn``: an MLflow model folder with the sklearn flavor (the native estimator:
  ``predict`` and, for a classifier, ``predict_proba``).
* ``mlflow.pyfunc``: any other MLflow model folder (``predict`` only).
* ``pickle``: a folder with ``model.pkl``, a pickled object with ``predict`` (and, for a
  classifier, ``predict_proba`` and ``classes_``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

NATIVE = ("mlflow.sklearn", "pickle")
"""Flavors whose loaded object is the estimator itself (probabilities come from it)."""
SUPPORTED = (*NATIVE, "mlflow.pyfunc")

DTYPES = {"long": "int64", "integer": "int32", "double": "float64", "float": "float32", "boolean": "bool"}
"""Signature column types → the pandas dtype a column is cast to before predicting."""


def load(folder: Path, flavor: str, *, direct: bool = False) -> Any:
    """The model in ``folder``, loaded as ``flavor`` says.

    ``direct`` (the server): an ``mlflow.sklearn`` model saved as a (cloud)pickle is unpickled
    as ``mlflow.sklearn.load_model`` does, without importing MLflow — which is most of a server's
    start-up. The deploying process loads the smoke gate's reference with MLflow itself, so the
    gate compares the two ways.
    """
    if flavor == "mlflow.sklearn":
        if direct:
            pickled = _plain_sklearn_pickle(Path(folder))
            if pickled is not None:
                with pickled.open("rb") as fh:
                    return pickle.load(fh)  # what cloudpickle.load is (its loads is pickle's)
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(folder))
    if flavor == "mlflow.pyfunc":
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(str(folder))
    if flavor == "pickle":
        with (Path(folder) / "model.pkl").open("rb") as fh:
            # The registry's own model, trusted as MLflow's sklearn flavor (also a pickle) is.
            return pickle.load(fh)
    raise ValueError(f"cannot serve a model of flavor {flavor!r} (served flavors: {', '.join(SUPPORTED)})")


def _plain_sklearn_pickle(folder: Path) -> Path | None:
    """The pickled estimator of an MLflow sklearn model folder, when loading it is a bare unpickle
    (format ``pickle``/``cloudpickle``, no code paths to add, MLflow's own pickle switch not
    turned off); else ``None`` (MLflow loads it)."""
    import os

    import yaml

    if os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").strip().lower() not in ("true", "1"):
        return None
    try:
        conf = (yaml.safe_load((folder / "MLmodel").read_text()) or {}).get("flavors", {}).get("sklearn") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if conf.get("serialization_format", "pickle") not in ("pickle", "cloudpickle") or conf.get("code"):
        return None
    name = conf.get("pickled_model")
    if not isinstance(name, str) or Path(name).name != name or not (folder / name).is_file():
        return None
    return folder / name


def is_classifier(model: Any, flavor: str) -> bool:
    """Whether the served answer carries probabilities (a native model with ``predict_proba``)."""
    return flavor in NATIVE and hasattr(model, "predict_proba") and hasattr(model, "classes_")


def frame(rows: list[dict[str, Any]], columns: list[dict[str, Any]]) -> Any:
    """Records as the DataFrame the model predicts on: the signature's columns, in order, cast
    to their dtypes where no value is missing."""
    import numpy as np
    import pandas as pd

    # The common case, every value present: one array per column, built at its dtype (a third of
    # the time of records → frame → astype, for the hundreds of rows of a batch).
    data: dict[str, Any] = {}
    for column in columns:
        values = [row.get(column["name"]) for row in rows]
        if any(v is None or v != v for v in values):  # missing (None, NaN): pandas decides, below
            break
        dtype = DTYPES.get(column["type"])
        data[column["name"]] = np.asarray(values, dtype=dtype) if dtype is not None else values
    else:
        return pd.DataFrame(data, index=pd.RangeIndex(len(rows)), columns=[c["name"] for c in columns])
    out = pd.DataFrame.from_records(rows, columns=[c["name"] for c in columns])
    for column in columns:
        dtype = DTYPES.get(column["type"])
        if dtype is not None and out[column["name"]].notna().all():
            out[column["name"]] = out[column["name"]].astype(dtype)
    return out


def jsonable(values: Any) -> list[Any]:
    out = values.tolist() if hasattr(values, "tolist") else list(values)
    return [v.item() if hasattr(v, "item") else v for v in out]
