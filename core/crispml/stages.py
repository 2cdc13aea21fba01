"""The lifecycle: which stages exist, in which order, and what each hands to the next.

This table is the only place that knows the shape of CRISP-ML(Q)'s pipeline. The runner walks
it; recipes have one optional key per stage; the hookspecs mirror it one hook per stage.
"""

from __future__ import annotations

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
