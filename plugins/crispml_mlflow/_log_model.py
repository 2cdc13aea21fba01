"""Logging a trained model into an MLflow run: signature, input example, pinned requirements."""

from __future__ import annotations

import json
import logging
import warnings
from importlib import metadata
from typing import TYPE_CHECKING, Any

from crispml import Dataset, TrainedModel
from crispml_mlflow import _backend

if TYPE_CHECKING:
    from crispml_mlflow import RegisterOptions


def requirements(model: TrainedModel, options: RegisterOptions) -> list[str]:
    """Pinned from what is installed: crispml already knows the environment, so MLflow need
    not infer it (its inference loads the model in a subprocess)."""
    if options.pip_requirements is not None:
        return list(options.pip_requirements)
    names = ["mlflow", "pandas", "numpy"]
    if model.flavor == "sklearn":
        names.append("scikit-learn")
    names.append("skops" if options.serialization_format == "skops" else "cloudpickle")
    estimator = model.model
    steps = getattr(estimator, "steps", None)
    if steps:
        estimator = steps[-1][1]
    top = type(estimator).__module__.split(".")[0]
    if top not in ("sklearn", "builtins", "__main__"):
        names.append(top)
    out = []
    for name in dict.fromkeys(names):
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def serving_metadata(model: TrainedModel, dataset: Dataset) -> dict[str, Any] | None:
    """When a feature store built the data: its serving spec (``Dataset.serving``) and the keys
    of the input example's rows (``key_example``), kept with the model so that a serving plugin
    can fetch features by key and smoke-test with the same rows."""
    if dataset.serving is None:
        return None
    keys = [k for k in (dataset.serving.get("keys") or {}) if k in dataset.frame.columns]
    provided = {str(ref).split(":", 1)[-1] for ref in dataset.serving.get("feature_refs") or []}
    sent = [c for c in model.feature_columns if c not in provided]  # features the request carries
    example = model.input_example if model.input_example is not None else dataset.train_frame.head(5)
    if not keys:
        return {"serving": dataset.serving, "key_example": None}
    rows = (
        dataset.frame.loc[example.index, keys].join(example[sent]) if sent else dataset.frame.loc[example.index, keys]
    )
    return {"serving": dataset.serving, "key_example": json.loads(rows.to_json(orient="records"))}


def log_model(options: RegisterOptions, model: TrainedModel, dataset: Dataset, uri: str, run_id: str) -> Any:
    from mlflow.models import infer_signature

    example = model.input_example
    if example is None:
        example = dataset.train_frame[model.feature_columns].head(5)
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: true, and not actionable.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        # Emitted while MLflow imports its own PythonModel subclasses: about MLflow, not the user.
        warnings.filterwarnings("ignore", message=".*Any type hint is inferred", category=UserWarning)
        signature = infer_signature(example, model.model.predict(example))
        with _backend.fluent(uri):
            common: dict[str, Any] = {
                "name": "model",
                "run_id": run_id,
                "signature": signature,
                "input_example": example,
                "pip_requirements": requirements(model, options),
            }
            serving = serving_metadata(model, dataset)
            if serving is not None:
                common["metadata"] = {"crispml": serving}
            if model.flavor == "sklearn":
                import mlflow.sklearn

                _quiet_pickle_warning(options)

                return mlflow.sklearn.log_model(
                    model.model, serialization_format=options.serialization_format, **common
                )
            import mlflow.pyfunc

            return mlflow.pyfunc.log_model(python_model=_Predictor(model.model), **common)


class _DropPickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pickle or cloudpickle format" not in record.getMessage()


def _quiet_pickle_warning(options: RegisterOptions) -> None:
    """cloudpickle is the default on purpose (skops refuses crispml's preprocessing pipeline:
    ``numpy.dtype`` is not a trusted type), and documented: MLflow's warning about it on every
    registration is noise. Shown when a user sets ``serialization_format: pickle``."""
    logger = logging.getLogger("mlflow.sklearn")
    quiet = options.serialization_format == "cloudpickle"
    if quiet and not any(isinstance(f, _DropPickleWarning) for f in logger.filters):
        logger.addFilter(_DropPickleWarning())


def _pyfunc_base() -> type:
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel  # type: ignore[no-any-return]


class _Predictor:
    """Any fitted object with ``predict`` as an MLflow pyfunc model (non-sklearn flavors)."""

    def __new__(cls, fitted: Any) -> Any:
        base = _pyfunc_base()

        class Predictor(base):  # type: ignore[misc,valid-type]
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
                return self.inner.predict(model_input)

        return Predictor(fitted)
