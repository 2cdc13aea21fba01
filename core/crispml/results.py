"""The typed results that stages hand to each other.

Each stage hook returns one of these. They are plain dataclasses so that they pickle (the run
store keeps every stage's result) and so that the core needs no backend to handle them: a
``Dataset`` carries a pandas DataFrame, a ``TrainedModel`` a fitted estimator, typed ``Any`` here.

Two things every result offers the core:

* ``metrics``: numbers a ``gate:`` can test (``accuracy: ">= 0.9"``).
* ``rejection``: set by a plugin whose own quality check said no (failed validation, a
  challenger that does not beat the champion). The runner ends the run ``rejected``.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

_DEFERRED = "_crispml_deferred"
_SUMMARY = "_crispml_summary"
_PLAIN = (type(None), bool, int, float, str)


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether unpickling ``value`` imports nothing but the standard library and crispml."""
    kind = type(value)
    if kind in _PLAIN or isinstance(value, PurePath):
        return True
    if depth > 8:
        return False
    if kind in (list, tuple, set, frozenset):
        return all(_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    if dataclasses.is_dataclass(value) and kind.__module__.startswith("crispml."):
        return all(_plain(v, depth + 1) for v in vars(value).values())
    return False


def _remembered(summary: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """``summary`` answered from the copy stored with the pickle while its fields are unread."""

    def remembered(self: Any) -> dict[str, Any]:
        state = object.__getattribute__(self, "__dict__")
        if state.get(_DEFERRED) and _SUMMARY in state:
            return dict(state[_SUMMARY])
        return summary(self)

    remembered.__doc__, remembered.__name__ = summary.__doc__, summary.__name__
    remembered.__qualname__ = summary.__qualname__
    return remembered


@dataclass
class Result:
    """Base of every stage result.

    A result read back from the run store or the cache does not unpickle its backend objects (a
    DataFrame, a fitted estimator) until a field holding one is read: a re-run whose stages are
    all ``cached`` shows their summaries and tests their gates without importing pandas or
    scikit-learn. Fields whose values are plain (numbers, strings, paths, lists and dicts of
    those) are read at once; ``summary()`` is stored with the pickle.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("summary")
        if own is not None:
            cls.summary = _remembered(own)  # type: ignore[method-assign,assignment]

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in (_DEFERRED, _SUMMARY)}
        deferred = dict(self.__dict__.get(_DEFERRED) or {})
        for name in list(state):
            if not _plain(state[name]):
                deferred[name] = pickle.dumps(state.pop(name), protocol=pickle.HIGHEST_PROTOCOL)
        if deferred:
            state[_DEFERRED] = deferred
            state[_SUMMARY] = self.summary()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __getattribute__(self, name: str) -> Any:
        if name[0] != "_":
            state = object.__getattribute__(self, "__dict__")
            deferred = state.get(_DEFERRED)
            if deferred and name in deferred:
                state[name] = pickle.loads(deferred.pop(name))
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        state = self.__dict__
        if state.get(_DEFERRED):
            state[_DEFERRED].pop(name, None)
            state.pop(_SUMMARY, None)
        object.__setattr__(self, name, value)

    metrics: dict[str, float] = field(default_factory=dict, kw_only=True)
    """Numbers a gate can test and trackers record."""
    artifacts: list[str] = field(default_factory=list, kw_only=True)
    """File names written under the stage's artifact directory (``context.artifact_dir``)."""
    rejection: str | None = field(default=None, kw_only=True)
    """Why this result must not go further; ``None`` when it may."""

    def summary(self) -> dict[str, Any]:
        """A small JSON-able description for the manifest and the terminal."""
        out: dict[str, Any] = {}
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        if self.artifacts:
            out["artifacts"] = list(self.artifacts)
        if self.rejection:
            out["rejection"] = self.rejection
        return out


@dataclass
class Dataset(Result):
    """Tabular data and, once the runner has split it, its train and test rows."""

    frame: Any
    """The data, a ``pandas.DataFrame``."""
    target: str | None
    """The column to predict, if any."""
    name: str
    source: str
    """Where it came from (a path or URI), for lineage."""
    fingerprint: str
    """A content hash of the data: equal fingerprints mean equal data."""
    train_index: Any = None
    """Row positions of the training split (set by the runner from the recipe's ``split``)."""
    test_index: Any = None
    key_columns: tuple[str, ...] = ()
    """Columns that identify a row rather than describe it: entity keys and the event time of a
    feature store's point-in-time join. They stay in ``frame`` (lineage, monitoring, serving by
    key) but are not features: :attr:`feature_columns` leaves them out, so no model trains on
    an id. (A tuple with a class-level default, so results pickled before it existed load.)"""
    serving: dict[str, Any] | None = None
    """How to get the feature columns from the keys at serving time, when a feature store
    built the data: JSON naming the plugin that knows (``{"plugin": "feast", ...}``; the rest is
    that plugin's). A registry records it with the model; a serving plugin hands it to
    :func:`crispml.serving_features`. ``None``: the features come with the request."""

    @property
    def train_frame(self) -> Any:
        """The training rows (all rows when there is no split)."""
        return self.frame if self.train_index is None else self.frame.iloc[self.train_index]

    @property
    def test_frame(self) -> Any:
        """The held-out rows (empty when there is no split)."""
        return self.frame.iloc[0:0] if self.test_index is None else self.frame.iloc[self.test_index]

    @property
    def feature_columns(self) -> list[str]:
        """The columns a model learns from: all but the target and the :attr:`key_columns`."""
        skip = {self.target, *self.key_columns}
        return [str(c) for c in self.frame.columns if c not in skip]

    def summary(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "rows": len(self.frame),
            "columns": len(self.frame.columns),
            "target": self.target,
        }
        if self.key_columns:
            out["key_columns"] = list(self.key_columns)
        if self.serving is not None:
            out["serving"] = self.serving.get("plugin")
        if self.train_index is not None:
            out["train_rows"] = len(self.train_index)
            out["test_rows"] = len(self.test_index)
        return out | super().summary()


@dataclass
class ExpectationResult:
    """One expectation's outcome within a :class:`ValidationReport`."""

    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    unexpected_values: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ValidationReport(Result):
    """The outcome of validating a dataset."""

    success: bool
    results: list[ExpectationResult] = field(default_factory=list)

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "expectations": len(self.results),
            "failed": len(self.failures),
        } | super().summary()


@dataclass
class TrainedModel(Result):
    """A fitted model and what is needed to use it again."""

    model: Any
    """The fitted object (for ``flavor='sklearn'``, a ``sklearn.pipeline.Pipeline``)."""
    flavor: str
    task: str
    """``classification`` or ``regression``."""
    target: str | None
    feature_columns: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    input_example: Any = None
    """A few rows of input (a DataFrame), for signatures and smoke tests."""

    def summary(self) -> dict[str, Any]:
        return {
            "flavor": self.flavor,
            "task": self.task,
            "estimator": type(self.model).__name__,
            "features": len(self.feature_columns),
        } | super().summary()


@dataclass
class Evaluation(Result):
    """Metrics of a model on held-out data. ``metrics`` is what gates test."""

    split: str = "test"
    rows: int = 0

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows} | super().summary()


@dataclass
class ModelVersion(Result):
    """A model version in a registry."""

    name: str
    version: str
    uri: str
    aliases: list[str] = field(default_factory=list)
    run_id: str | None = None
    promoted: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "aliases": list(self.aliases),
            "promoted": self.promoted,
        } | super().summary()


@dataclass
class Deployment(Result):
    """A model version being served: what ``crispml_deploy`` returns and ``crispml_deployment``
    answers (``crispml.deployment("churn")``), so that a monitor needs nothing else to find
    what is served and what it answered."""

    name: str
    url: str
    model_uri: str
    """The registry's URI of the served version (``models:/churn/3``), for lineage."""
    pid: int | None = None
    model: str | None = None
    """The served version as ``name/version`` (``churn/3``)."""
    training_run: str | None = None
    """The crispml run that trained the served version, when the registry recorded it."""
    prediction_log: Path | None = None
    """The prediction log (read it with :func:`crispml.prediction_records`), or ``None``."""
    status: str | None = None
    """``up``, ``down`` or ``unhealthy`` when asked through ``crispml_deployment``; ``None``
    on a stage result (it was up when the stage ended, or the stage was rejected)."""

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "url": self.url, "model_uri": self.model_uri, "pid": self.pid}
        if self.model is not None:
            out["model"] = self.model
        if self.training_run is not None:
            out["training_run"] = self.training_run
        return out | super().summary()


@dataclass
class ResolvedModel:
    """A registered model version, as a registry plugin describes it to the rest of crispml.

    Returned by ``crispml_resolve_model`` (``crispml.resolve_model("churn@champion")``): a
    serving plugin deploys from it without knowing which registry it came from.
    """

    reference: str
    """The reference as asked (``churn@champion``)."""
    name: str
    version: str
    path: Path
    """A local folder holding the model's files (for an MLflow model, the folder with ``MLmodel``)."""
    flavor: str
    """What loads the files: ``mlflow.sklearn``, ``mlflow.pyfunc``, ``pickle`` (a ``model.pkl``)…
    A serving plugin refuses, in one line, a flavor it cannot load."""
    signature: list[dict[str, Any]] | None = None
    """The input columns, ``[{"name": ..., "type": ...}]`` in order (types as MLflow names them:
    ``long``, ``integer``, ``double``, ``float``, ``string``, ``boolean``, ``datetime``; an
    optional ``"required": false``), or ``None`` when the registry does not know them."""
    lineage: dict[str, Any] = field(default_factory=dict)
    """``training_run`` (the crispml run id), ``data_fingerprint``, ``registry`` (which plugin),
    ``uri`` (the registry's URI of the version, never with credentials); ``run_id`` (the
    registry's own run id) when it has one."""
    input_example: list[dict[str, Any]] | None = None
    """A few input records (JSON values), for smoke tests; ``None`` when none was logged."""
    serving: dict[str, Any] | None = None
    """A feature store's serving spec recorded at training (``Dataset.serving``), passed through."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Anything else the registry wants a consumer to see (JSON values)."""

    @property
    def label(self) -> str:
        """``name/version``."""
        return f"{self.name}/{self.version}"


@dataclass
class MonitorReport(Result):
    """What monitoring saw: drift, data quality, model quality on production data."""

    drift_detected: bool = False
    retrain: bool = False
    """Set with ``drift_detected`` when the step asks for a retrain; the core decides whether
    one runs (the step's :class:`crispml.RetrainPolicy`: ``after``, ``cooldown``, a lock)."""
    headline: str = ""
    """One line for the terminal: what was compared and what it showed
    (``churn/3 · 1,840 requests · 3 of 7 columns drifted (0.43 < 0.5)``)."""

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"drift_detected": self.drift_detected, "retrain": self.retrain}
        if self.headline:
            out["headline"] = self.headline
        return out | super().summary()


@dataclass
class ServingFeatures:
    """How a served model gets its features from entity keys: what ``crispml_serving_features``
    returns for a :attr:`Dataset.serving` spec (``crispml.serving_features(spec)``).

    A serving plugin builds its request schema from ``keys`` (plus the model's columns no one
    ``provides``: features sent with the request), writes ``files`` into its release, imports
    ``module`` from there and calls ``module.Resolver(folder).fetch(rows)``. It never imports
    the feature store: the files do, and never crispml, so a built release runs without crispml.
    """

    keys: dict[str, str]
    """Entity key name → type (``int64``, ``string``, ``double``…): the request's fields."""
    provides: list[str]
    """The feature columns the resolver returns, in the model's order."""
    files: dict[str, bytes]
    """File name → content to copy into the release (the resolver module, its configuration)."""
    module: str
    """The module among ``files`` defining ``Resolver(folder)`` whose ``fetch(rows)`` returns
    ``(frame, missing)``: a DataFrame of ``provides`` with one row per input row, and the
    positions of rows whose keys the store does not know."""
    requirements: list[str] = field(default_factory=list)
    """Pinned distributions the module needs (``feast==0.67.0``), for a built release."""
    description: str = ""
    """One line for logs: where the features come from (``feast churn_v1, online store sqlite``)."""
