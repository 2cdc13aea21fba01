"""The run manifest as a typed document: ``.crispml/runs/<id>/manifest.json``.

One pydantic model, so that the core, commands and plugins read attributes
(``manifest.stage("train").fingerprint``) instead of string keys spread over many files, and so
that the file's shape is written down in one place. ``schema_version`` says which shape a file
has; :meth:`Manifest.load` upgrades older files as it reads them (version 1, written before the
field existed, had no ``attempts``), so runs recorded by an older crispml still show, resume and
finish. Fields added since with a default (a stage's ``files``, a run's ``reproduces``) need no
new version: a file without them reads as "not recorded". Unknown fields are kept
(``extra="allow"``): a newer file read by an older crispml loses nothing when written back.

For plugins written against the dict the manifest used to be, ``manifest["status"]``,
``manifest.get("links")`` and ``"error" in manifest`` still work (reading only); new code reads
attributes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2


class _Document(BaseModel):
    """A pydantic model that can also be read like the dict it used to be."""

    model_config = ConfigDict(extra="allow", validate_assignment=False)

    def __getitem__(self, key: str) -> Any:
        if key in type(self).model_fields or key in (self.model_extra or {}):
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in type(self).model_fields or key in (self.model_extra or {}))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form, as written to the file."""
        return self.model_dump(mode="json")


class Attempt(_Document):
    """One time a stage ran: a retried stage has several."""

    started: str
    duration: float | None = None
    """``None`` while it runs (or when its process died before it ended)."""
    error: str | None = None
    """Why it failed; ``None`` when it succeeded."""


class CandidateRecord(_Document):
    """One training candidate of a stage: what it set, how it scored, how long it took."""

    index: int
    overrides: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    """The step's options as this candidate ran them (secrets masked)."""
    status: str = "pending"
    """``succeeded``, ``cached`` (trained and evaluated before) or ``failed``."""
    metrics: dict[str, float] = Field(default_factory=dict)
    duration: float | None = None
    error: str | None = None


class StageRecord(_Document):
    """One stage of a run: its status, result summary, fingerprint and attempts."""

    name: str
    plugin: str
    status: str = "pending"
    """``pending``, ``running``, then ``succeeded``, ``cached``, ``rejected``, ``failed``, ``skipped``."""
    attempts: list[Attempt] = Field(default_factory=list)
    started: str | None = None
    duration: float | None = None
    error: str | None = None
    reasons: list[str] | None = None
    """Why a gate rejected it."""
    summary: dict[str, Any] | None = None
    fingerprint: str | None = None
    """What this stage hands its consumers (part of their cache keys): equal means equal result."""
    gates: list[str] | None = None
    files: dict[str, str] | None = None
    """The files outside the run store the stage read (data, suites) and their sha256, as its
    cache key saw them: ``crispml reproduce`` names the ones that changed since. Absent from
    manifests written before it was recorded (``None``: not known)."""
    pid: int | None = None
    """The process running it (only while ``running``), with ``host`` and ``thread``."""
    pid_created: float | None = None
    """That process's start time: with ``pid``, it tells the process from a later one given the
    same pid (``crispml._process.ProcessIdentity``)."""
    host: str | None = None
    thread: int | None = None
    candidates: list[CandidateRecord] | None = None
    """A train step's candidates (``grid:``/``candidates:``), in order."""
    selected: int | None = None
    """The candidate whose model this stage handed on (its ``index``)."""


class ProductionWindow(_Document):
    """The production traffic a ``validate-data`` run validated: the deployment whose prediction
    log it read, and the version that was serving it (only that version's requests count)."""

    deployment: str
    model: str | None = None
    """The served version as ``name/version`` (``churn/3``); ``None`` when the serving plugin
    did not say."""


class Manifest(_Document):
    """Everything recorded about one run."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    recipe_name: str
    status: str
    """``running``, then ``succeeded``, ``rejected`` or ``failed``."""
    started: str
    ended: str | None = None
    duration: float | None = None
    pid: int | None = None
    pid_created: float | None = None
    """The start time of the process ``pid`` (guards against a recycled pid)."""
    host: str | None = None
    recipe: dict[str, Any]
    """The resolved recipe (``${env:NAME}`` references kept, literal secrets masked)."""
    recipe_file: str | None = None
    recipe_dir: str
    recipe_hash: str | None = None
    overrides: list[str] = Field(default_factory=list)
    use_cache: bool = True
    environment: dict[str, Any] = Field(default_factory=dict)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    stages: list[StageRecord] = Field(default_factory=list)
    rejection: str | None = None
    error: str | None = None
    links: dict[str, Any] = Field(default_factory=dict)
    resumes: int = 0
    reproduces: str | None = None
    """For a run made by ``crispml reproduce``: the id of the run it re-ran."""
    kind: str | None = None
    """What sort of run: ``None`` for a recipe's lifecycle run (``crispml run``, and the reruns,
    resumes and retrains of one), ``monitor`` for ``crispml monitor`` (the monitor step alone),
    ``validate-data`` for ``crispml validate-data`` (the validate step on a production window).
    A plain string, not a closed set, so that a kind a newer crispml adds still loads here.
    Manifests written before it was declared carry it as an extra field, read into it."""
    window: ProductionWindow | None = None
    """For a ``validate-data`` run: the production traffic it validated."""

    @classmethod
    def load(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from its JSON form, of this or an older ``schema_version``."""
        return cls.model_validate(_upgrade(dict(data)))

    def stage(self, name: str) -> StageRecord:
        """The record of stage ``name`` (``KeyError`` if the run has no such stage)."""
        for record in self.stages:
            if record.name == name:
                return record
        raise KeyError(name)

    @property
    def stage_status(self) -> dict[str, str]:
        return {s.name: s.status for s in self.stages}


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    version = int(data.get("schema_version") or 1)
    if version < 2:
        # Version 1 had no attempts: a stage that ran had exactly one, its record's own.
        stages = []
        for record in data.get("stages") or []:
            record = dict(record)
            if "attempts" not in record:
                ran = record.get("started") is not None
                attempt = {k: record.get(k) for k in ("started", "duration", "error")}
                record["attempts"] = [attempt] if ran else []
            stages.append(record)
        data["stages"] = stages
        data["schema_version"] = 2
    return data
