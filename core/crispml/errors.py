"""Errors a user can meet, each with the exit code the CLI gives it.

A user's mistake is a :class:`UsageError` (exit 2): the CLI prints its one-line message and no
traceback. Everything else that escapes a stage is a failure of the run (exit 1), recorded in the
run store. A gate that says no is not an error at all: it is an outcome (see ``crispml.runs``).
"""

from __future__ import annotations

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3


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
        field = f"{self.field}: " if self.field else ""
        return mask_urls(f"{where}{field}{self.message}")

    def located(self, file: str | None, line: int | None) -> RecipeError:
        """The same error, placed in a file (and line) once the caller knows them."""
        return RecipeError(
            self.message,
            field=self.field,
            file=self.file or file,
            line=self.line or line,
        )


class PluginError(CrispmlError):
    """A plugin could not be loaded or broke its contract."""


class MissingBackendError(UsageError):
    """A plugin's backend library is not installed; the message names the extra to install."""


class StageError(CrispmlError):
    """A stage raised. Names the stage and the plugin; the run is recorded as failed."""

    def __init__(self, stage: str, plugin: str, cause: BaseException) -> None:
        self.stage = stage
        self.plugin = plugin
        self.cause = cause
        super().__init__(f"stage '{stage}' (plugin '{plugin}') failed: {type(cause).__name__}: {cause}")

    @classmethod
    def recorded(cls, stage: str, plugin: str, message: str) -> StageError:
        """The error of a stage that failed in another process, as its record in the run store
        gives it (``message`` is the whole line that process wrote)."""
        error = cls.__new__(cls)
        error.stage, error.plugin, error.cause = stage, plugin, CrispmlError(message)
        Exception.__init__(error, message)
        return error
