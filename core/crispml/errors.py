"""Errors a user can meet, each with the exit code the CLI gives it.

A user's mistake is a :class:`UsageError` (exit 2): the CLI prints its one-line message and no
traceback. Everything else that escapes a stage is a failure of the run (exit 1), recorded in the
run store. A gate that says no is not an error at all: it is an outcome (see ``crispml.runs``).
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crispml.declarations import Backend


class ExitCode(IntEnum):
    """The exit codes of every ``crispml`` command, core and plugin alike: one meaning each."""

    SUCCEEDED = 0
    """Done; for a run, every stage passed its gates."""
    FAILED = 1
    """Something broke (a backend, a stage): the run is recorded as failed."""
    USAGE = 2
    """The user asked for something that cannot be done as asked; nothing ran or changed."""
    REJECTED = 3
    """A quality gate said no (a metric, the champion comparison, a smoke test): an outcome."""


EXIT_SUCCEEDED = ExitCode.SUCCEEDED
EXIT_FAILED = ExitCode.FAILED
EXIT_USAGE = ExitCode.USAGE
EXIT_REJECTED = ExitCode.REJECTED

_ONE_LINE_LIMIT = 300


def one_line(error: BaseException | str, *, limit: int = _ONE_LINE_LIMIT) -> str:
    """A (backend's, often multi-line) error message on one line, cut to a readable length.

    What crispml prints of an exception it did not raise itself: whitespace and newlines
    collapsed, at most ``limit`` characters, never empty."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or "(no message)"


MESSAGE_LIMIT = 400
"""The longest message a user's mistake prints (values in it are cut first, see :func:`clip`)."""


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to at most about ``limit`` characters, saying how much was left out: messages
    echo values, and a value of megabytes must not become a message of megabytes."""
    if len(text) <= limit:
        return text
    keep = max(limit - 24, 10)
    return f"{text[:keep]}… ({len(text):,} characters)"


class CrispmlError(Exception):
    """Base class of every error crispml raises on purpose."""

    exit_code = EXIT_FAILED


class UsageError(CrispmlError):
    """The user asked for something that cannot be done as asked (bad input). Exit 2."""

    exit_code = EXIT_USAGE


class RecipeError(UsageError):
    """A recipe is invalid. Names the file, the field, the YAML line and what was expected."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.field = field
        self.file = file
        self.line = line
        super().__init__(self.one_line())

    def one_line(self) -> str:
        # A URL's password never reaches the terminal, whichever value an error echoes.
        from crispml._redact import mask_urls

        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        elif self.line:
            where = f"line {self.line}: "
        # Mask first, then cut: a cut through a URL could leave part of its password behind.
        field = f"{clip(mask_urls(self.field))}: " if self.field else ""
        return f"{clip(mask_urls(where), 200)}{field}{clip(mask_urls(self.message), MESSAGE_LIMIT)}"

    def located(self, file: str | None, line: int | None) -> RecipeError:
        """The same error, placed in a file (and line) once the caller knows them."""
        return RecipeError(
            self.message,
            field=self.field,
            file=self.file or file,
            line=self.line or line,
        )


class BackendError(CrispmlError):
    """A backend failed inside a plugin's command: one line ``what: Type: message``, exit 1.

    ``raise BackendError.of("bentoml build", exc) from None`` in a command; the CLI prints it
    as ``crispml: error: ...`` without a traceback. (An exception a command lets escape is
    printed the same way, with its type, by ``crispml.cli.main``.)"""

    @classmethod
    def of(cls, what: str, error: BaseException | str) -> BackendError:
        kind = f"{type(error).__name__}: " if isinstance(error, BaseException) else ""
        return cls(f"{what}: {kind}{one_line(error)}")


class PluginError(CrispmlError):
    """A plugin could not be loaded or broke its contract."""


class MissingBackendError(RecipeError):
    """A step's plugin needs a library that is not installed; the message names the extra to
    install (``pip install 'crispml[feast]'``). A recipe error: exit 2, nothing has run."""

    def __init__(
        self,
        message: str,
        *,
        backend: Backend | None = None,
        field: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.backend = backend
        super().__init__(message, field=field, file=file, line=line)

    def located(self, file: str | None, line: int | None) -> MissingBackendError:
        return MissingBackendError(
            self.message, backend=self.backend, field=self.field, file=self.file or file, line=self.line or line
        )


class StageError(CrispmlError):
    """A stage raised. Names the stage and the plugin; the run is recorded as failed."""

    def __init__(self, stage: str, plugin: str, cause: BaseException) -> None:
        self.stage = stage
        self.plugin = plugin
        self.cause = cause
        # Kept whole enough to debug from the manifest, never megabytes (an exception may echo
        # a whole input); the terminal cuts it further.
        said = clip(str(cause), 5 * MESSAGE_LIMIT)
        super().__init__(f"stage '{stage}' (plugin '{plugin}') failed: {type(cause).__name__}: {said}")

    @classmethod
    def recorded(cls, stage: str, plugin: str, message: str) -> StageError:
        """The error of a stage that failed in another process, as its record in the run store
        gives it (``message`` is the whole line that process wrote)."""
        error = cls.__new__(cls)
        error.stage, error.plugin, error.cause = stage, plugin, CrispmlError(message)
        Exception.__init__(error, message)
        return error
