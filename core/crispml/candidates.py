"""Training candidates: one train step tried with several option sets, the best one kept.

```yaml
train:
  use: sklearn
  estimator: sklearn.ensemble.RandomForestClassifier
  grid: {params.max_depth: [4, 8, 16], params.n_estimators: [100, 300]}   # or candidates: [...]
  select: roc_auc
```

Each candidate is the step's options with its overrides applied (an override sets one option
path: ``params.max_depth: 8`` sets ``params["max_depth"]``; ``params: {...}`` replaces the whole
option), validated when the recipe is checked. A candidate is trained and evaluated as a
:class:`CandidateJob`: a small picklable value (the run, the candidate's number, its options as
the recipe writes them, the path of the dataset in the run store) that any process on the
machine can run with :func:`crispml.run_candidate` and answer with a :class:`CandidateOutcome`.
So a runner decides where candidates run (``local``: one after the other, in-process; a pool of
processes or a Dask cluster elsewhere) and the plan decides everything else: caching, the
choice of the best, the manifest, the event hooks.

This module knows no backend and no runner.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crispml.errors import CrispmlError, clip

if TYPE_CHECKING:
    from crispml.declarations import Options
    from crispml.recipe import Select

MAX_CANDIDATES = 64
"""A step tries at most this many candidates: a grid is a product, and a typo in it (one more
list) multiplies a run's time; a larger search belongs to a tuning library, run as a plugin."""


class CandidateError(CrispmlError):
    """A candidate failed: the stage fails naming it (the others are cached, so a resume
    trains only what failed)."""


@dataclass(frozen=True)
class Candidate:
    """One checked candidate of a step (``index`` counts from 1, as users read it)."""

    index: int
    overrides: dict[str, Any]
    """What this candidate sets over the step's options, by option path."""
    raw: dict[str, Any]
    """The step's options with the overrides applied, as the recipe writes them."""
    options: Options
    """``raw`` validated against the plugin's options model."""

    @property
    def label(self) -> str:
        return f"candidate {self.index} ({describe(self.overrides)})"


@dataclass(frozen=True)
class CandidateJob:
    """What a runner hands to :func:`crispml.run_candidate`, in this process or another.

    Plain values only (it crosses processes and machines): the dataset travels as the path of
    the load stage's result in the run store, never as a frame. ``options`` (secrets masked) is
    for display — a worker takes the candidate's validated options from the stored recipe.
    """

    project_dir: str
    run_id: str
    stage: str
    index: int
    overrides: dict[str, Any]
    options: dict[str, Any]
    dataset: str
    dataset_fingerprint: str

    @property
    def name(self) -> str:
        """``train-3``: how runners name the job (a task run, a log line)."""
        return f"{self.stage}-{self.index}"


@dataclass
class CandidateOutcome:
    """What one candidate's job produced: its metrics, or the one-line error it failed with."""

    index: int
    status: str
    """``succeeded`` (trained and evaluated now), ``cached`` (both reused) or ``failed``."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The evaluation's metrics (what ``select`` compares)."""
    train_metrics: dict[str, float] = field(default_factory=dict)
    duration: float = 0.0
    error: str | None = None
    key: str | None = None
    """The candidate's train cache key (with ``code``, its model's fingerprint)."""
    code: dict[str, str] | None = None
    fingerprint: str | None = None

    @classmethod
    def failed(cls, job: CandidateJob, error: str, duration: float = 0.0) -> CandidateOutcome:
        return cls(index=job.index, status="failed", error=error, duration=duration)


def set_path(options: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested ``options`` (in place); a ``ValueError`` names what is in the way."""
    parts = path.split(".")
    node = options
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ValueError(f"'{'.'.join(parts[: i + 1])}' is {type(nxt).__name__}, not a mapping")
        node[part] = nxt = dict(nxt)  # copies: candidates never share a nested mapping
        node = nxt
    node[parts[-1]] = value


def apply(options: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The step's options with one candidate's overrides applied (a new dict)."""
    out = dict(options)
    for path, value in overrides.items():
        set_path(out, path, value)
    return out


def grid_size(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(values) for values in grid.values())


def expand(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid's values, first key slowest (as ``itertools.product``)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def describe(overrides: dict[str, Any]) -> str:
    """``params.max_depth=8, params.n_estimators=100``: a candidate as messages name it."""
    if not overrides:
        return "the step's options"
    return clip(", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in overrides.items()), 200)


def best(outcomes: list[CandidateOutcome], select: Select) -> CandidateOutcome:
    """The best succeeded outcome by ``select``; the first one on a tie; a NaN never wins.

    :raises ValueError: no outcome has the metric.
    """
    scored = [o for o in outcomes if o.status != "failed" and select.metric in o.metrics]
    if not scored:
        raise ValueError(f"no candidate's evaluation has metric '{select.metric}'")
    sign = 1.0 if select.greater_is_better else -1.0

    def score(outcome: CandidateOutcome) -> float:
        value = float(outcome.metrics[select.metric])
        return -math.inf if math.isnan(value) else sign * value

    top = max(score(o) for o in scored)
    return next(o for o in scored if score(o) == top)
