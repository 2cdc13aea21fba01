"""The lifecycle: which stages exist, in which order, and what each hands to the next.

This table is the only place that knows the shape of CRISP-ML(Q)'s pipeline. The runner walks
it; recipes have one optional key per stage; the hookspecs mirror it one hook per stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crispml.results import (
    Dataset,
    Deployment,
    Evaluation,
    ModelVersion,
    MonitorReport,
    Result,
    TrainedModel,
    ValidationReport,
)


@dataclass(frozen=True)
class Stage:
    name: str
    """The recipe key and the hook suffix (``crispml_<name>``)."""
    output: str
    """The keyword under which downstream hooks receive this stage's result."""
    result_type: type[Result]
    inputs: tuple[str, ...]
    """Outputs of earlier stages this stage's hook receives (``None`` where that stage is absent)."""
    requires: tuple[str, ...] = ()
    """Earlier stages that must be in the recipe for this one to make sense."""
    cacheable: bool = True
    """False for stages whose result depends on state outside the run (a registry, a server)."""

    @property
    def hook(self) -> str:
        return f"crispml_{self.name}"


STAGES: tuple[Stage, ...] = (
    Stage("load", "dataset", Dataset, ()),
    Stage("validate", "validation", ValidationReport, ("dataset",), ("load",)),
    Stage("train", "model", TrainedModel, ("dataset",), ("load",)),
    Stage("evaluate", "evaluation", Evaluation, ("model", "dataset"), ("train",)),
    Stage(
        "register",
        "model_version",
        ModelVersion,
        ("model", "evaluation", "dataset"),
        ("train",),
        cacheable=False,
    ),
    Stage("deploy", "deployment", Deployment, ("model_version", "model"), (), cacheable=False),
    Stage(
        "monitor",
        "monitor_report",
        MonitorReport,
        ("dataset", "model_version", "deployment"),
        (),
        cacheable=False,
    ),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}

PRODUCER: dict[str, str] = {s.output: s.name for s in STAGES}
"""The stage that produces each output (``"model"`` → ``"train"``)."""


def needs(stage: str, present: Iterable[str] | None = None) -> list[str]:
    """The stages ``stage`` must wait for: the graph a runner may use to run stages side by side.

    A stage needs the stages whose results it receives (``needs("evaluate") == ["train",
    "load"]``). A stage that acts on the world outside the run — registering, deploying,
    monitoring (the not ``cacheable`` ones) — also waits for every stage before it, so that no
    gate (a validation, an evaluation threshold) can still say no after it acted.

    :param stage: a stage name.
    :param present: the stages a recipe has (default: every stage); absent ones are not needed.
    """
    if stage not in BY_NAME:
        raise KeyError(f"unknown stage {stage!r} (stages: {', '.join(STAGE_NAMES)})")
    names = STAGE_NAMES if present is None else tuple(s for s in STAGE_NAMES if s in set(present))
    spec = BY_NAME[stage]
    out = [PRODUCER[o] for o in spec.inputs if PRODUCER[o] in names]
    if not spec.cacheable:
        before = STAGE_NAMES[: STAGE_NAMES.index(stage)]
        out += [s for s in names if s in before and s not in out]
    return out
