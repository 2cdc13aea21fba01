"""The session: one plugin manager and one project, shared by hooks and commands.

Like pytest's ``config``, a :class:`Session` is how a plugin reaches the other plugins' work
without importing them: ``session.resolve_model("churn@champion")`` asks whichever registry
plugin is installed, ``session.deployment("churn")`` whichever serving plugin owns it.
Commands receive it in ``crispml_register_commands(cli, session)``; stage hooks reach it as
``context.session``; anything else calls :func:`session`.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crispml.context import RunContext
    from crispml.plugins import Plugins
    from crispml.results import Deployment, ResolvedModel, ServingFeatures


class Session:
    """A plugin manager (``plugins``, ``hook``) and the project it works on."""

    def __init__(self, plugins: Plugins | None = None, project_dir: str | Path | None = None) -> None:
        if plugins is None:
            from crispml.plugins import get_plugins

            plugins = get_plugins()
        self.plugins = plugins
        self._project_dir = Path(project_dir).resolve() if project_dir is not None else None

    @property
    def hook(self) -> Any:
        """The plugin manager's hooks (``session.hook.crispml_resolve_model(...)``)."""
        return self.plugins.pm.hook

    @property
    def project_dir(self) -> Path:
        """The project (``$CRISPML_PROJECT``, else the nearest folder with ``.crispml/``), found on first use."""
        if self._project_dir is None:
            from crispml.store import find_project

            self._project_dir = find_project()
        return self._project_dir

    def resolve_model(self, reference: str, *, context: RunContext | None = None) -> ResolvedModel:
        """``crispml.resolve_model`` with this session's plugins and project."""
        from crispml.models import resolve_model

        project = context.project_dir if context is not None else self.project_dir
        return resolve_model(reference, project, context=context, plugins=self.plugins)

    def deployment(self, name: str) -> Deployment:
        """``crispml.deployment`` with this session's plugins and project."""
        from crispml.models import deployment

        return deployment(name, self.project_dir, plugins=self.plugins)

    def serving_features(self, spec: dict[str, Any]) -> ServingFeatures:
        """``crispml.serving_features`` with this session's plugins and project."""
        from crispml.models import serving_features

        return serving_features(spec, self.project_dir, plugins=self.plugins)

    def load_model(self, reference: str) -> Any:
        """``crispml.load_model`` with this session's plugins and project."""
        from crispml.models import load_model

        return load_model(reference, project=self.project_dir, plugins=self.plugins)


_current: ContextVar[Session | None] = ContextVar("crispml_session", default=None)


def session() -> Session:
    """The current session: the command line's, or one made (and kept) on first call."""
    current = _current.get()
    if current is None:
        current = Session()
        _current.set(current)
    return current


def set_session(value: Session | None) -> Any:
    """Make ``value`` the current session; returns a token for ``_current.reset``."""
    return _current.set(value)
