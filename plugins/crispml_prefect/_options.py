"""The ``runner: {use: prefect, ...}`` options, checked with the recipe before anything runs.

No Prefect here: a recipe is validated by every ``crispml check``, which must stay cheap.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from crispml import Options


class StageOptions(Options):
    """Per-stage overrides of the runner's defaults: ``stages: {train: {timeout_seconds: 7200}}``."""

    retries: int | None = Field(None, ge=0, le=100)
    retry_delay_seconds: float | None = Field(None, ge=0, le=86_400)
    timeout_seconds: float | None = Field(None, gt=0, le=7 * 86_400)


class PrefectOptions(Options):
    """``runner: {use: prefect, retries: 2, retry_delay_seconds: 10, timeout_seconds: 3600}``.

    Retries apply to a stage that raised; never to a user's mistake (``crispml.UsageError``) nor
    to a gate that said no (a rejection is an outcome, not an error).
    """

    retries: int = Field(0, ge=0, le=100)
    """How many times a failed stage is tried again (so ``retries + 1`` attempts at most)."""
    retry_delay_seconds: float = Field(10.0, ge=0, le=86_400)
    """Seconds between a failed attempt and the next."""
    timeout_seconds: float | None = Field(None, gt=0, le=7 * 86_400)
    """A stage running longer fails (Prefect interrupts it; the run can be resumed)."""
    stages: dict[str, StageOptions] = Field(default_factory=dict)
    """Overrides by stage name; every name must be a stage of the recipe."""
    heartbeat: bool | None = None
    """Prefect's flow-run heartbeat (crash detection). Default: on with a server, off on the
    ephemeral API, where nothing watches for crashes and a sync flow pays ~1 s per run for it."""
    task_runner: Literal["thread", "process", "dask"] = "thread"
    """Where a train step's candidates run, each one a Prefect task: Prefect's own
    ``ThreadPoolTaskRunner``, ``ProcessPoolTaskRunner``, or prefect-dask's ``DaskTaskRunner``."""
    max_workers: int | None = Field(None, ge=1, le=1024)
    """Candidates at a time (threads, processes, or a local Dask cluster's workers). Default:
    the machine's CPU count."""
    address: str | None = None
    """``task_runner: dask`` only: a running Dask scheduler (``tcp://host:8786``) instead of a
    ``LocalCluster`` started for the run."""

    @model_validator(mode="after")
    def _address_is_for_dask(self) -> PrefectOptions:
        if self.address is not None and self.task_runner != "dask":
            raise ValueError(f"address is for task_runner: dask (this recipe has task_runner: {self.task_runner})")
        if self.address is not None and not self.address.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
            raise ValueError(f"address: expected a Dask scheduler address like tcp://host:8786, got {self.address!r}")
        return self

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, stages: dict[str, StageOptions], info: ValidationInfo) -> dict[str, StageOptions]:
        steps = (info.context or {}).get("steps")
        if steps is None:  # validated outside a recipe: nothing to check the names against
            return stages
        for name in stages:
            if name not in steps:
                have = ", ".join(steps) or "none"
                raise ValueError(f"no stage '{name}' in this recipe (its stages: {have})")
        return stages

    def for_stage(self, stage: str) -> StageOptions:
        """The options that apply to ``stage``: its overrides, else the runner's defaults."""
        own = self.stages.get(stage) or StageOptions()
        return StageOptions(
            retries=self.retries if own.retries is None else own.retries,
            retry_delay_seconds=self.retry_delay_seconds
            if own.retry_delay_seconds is None
            else own.retry_delay_seconds,
            timeout_seconds=self.timeout_seconds if own.timeout_seconds is None else own.timeout_seconds,
        )
