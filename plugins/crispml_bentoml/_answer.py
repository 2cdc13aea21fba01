"""``crispml_deployment``: a deployment described for other plugins (a monitor, a dashboard).

The answer comes from the deployment's record alone (no registry, no BentoML import): the
version served, the crispml run that trained it, the public URL, whether it is up, and the
prediction log (crispml's versioned format, read with ``crispml.prediction_records``).
"""

from __future__ import annotations

from pathlib import Path

from crispml import Deployment, UsageError
from crispml_bentoml import _state


def describe(name: str, project_dir: Path) -> Deployment | None:
    try:
        _state.check_name(name)
    except UsageError:
        return None  # not a name this plugin could have given a deployment
    record = _state.read_record(project_dir, name)
    if record is None:
        return None
    model = record.get("model") or {}
    log = record.get("prediction_log")
    return Deployment(
        name=name,
        url=str(record.get("url", "")),
        model_uri=str(model.get("uri", "")),
        pid=(record.get("proxy") or {}).get("pid"),
        model=f"{model.get('name')}/{model.get('version')}",
        training_run=model.get("crispml_run_id"),
        prediction_log=Path(log) if log else None,
        status=_state.status(record),
    )
