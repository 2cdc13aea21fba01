"""``crispml.load_model``: a registered model by reference, from whichever plugin knows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crispml._isolation import isolate
from crispml.errors import UsageError
from crispml.plugins import Plugins, get_plugins
from crispml.store import find_project


def load_model(reference: str, *, project: str | Path | None = None, plugins: Plugins | None = None) -> Any:
    """Load ``name@alias`` or ``name/version`` from the model registry a plugin provides.

    :return: an object with ``predict`` (for MLflow, a ``pyfunc`` model).
    """
    pl = plugins or get_plugins()
    project_dir = Path(project).resolve() if project else find_project()
    isolate(project_dir, pl)  # the registry's backend loads in this process: its state in the project
    model = pl.pm.hook.crispml_load_model(reference=reference, project_dir=project_dir)
    if model is None:
        raise UsageError(
            f"no installed plugin knows the model '{reference}' "
            "(is a model-registry plugin installed, and is the name right?)"
        )
    return model
