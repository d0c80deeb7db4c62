"""The one exception hierarchy of isolate.

Library code raises these; only the CLI turns them into a line on stderr and an exit code.
This module is stdlib-only: the authoring SDK imports it, and the SDK must import inside a
DAG's own environment, where the rest of this project is not installed.
"""

from __future__ import annotations


class IsolateError(Exception):
    """Base of every expected error. ``str(err)`` is one line that says what to do."""

    exit_code = 1


class UsageError(IsolateError):
    """The request itself is wrong: bad argument, unknown id, impossible combination."""

    exit_code = 2


class NotFoundError(UsageError):
    """A DAG, version or other named thing does not exist."""

    exit_code = 3


class DagDefinitionError(IsolateError):
    """An author's DAG code misuses the SDK (raised while the DAG file is being loaded)."""

    exit_code = 4


class ValidationError(IsolateError):
    """A serialized DAG document (or a part of it) is invalid.

    ``problems`` holds every located problem ("tasks[load].retries: expected integer"); the
    message shows the first few so one bad field does not hide the others.
    """

    exit_code = 4
    shown = 5

    def __init__(self, problems: list[str] | str, *, subject: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if not self.problems:
            raise ValueError("ValidationError needs at least one problem")
        self.subject = subject
        head = "; ".join(self.problems[: self.shown])
        more = len(self.problems) - self.shown
        prefix = f"{subject}: " if subject else ""
        super().__init__(prefix + head + (f" (and {more} more)" if more > 0 else ""))


class FormatVersionError(ValidationError):
    """A document's format version is newer than this isolate understands."""


class BundleError(IsolateError):
    """A DAG folder cannot be turned into a code bundle, or a bundle is corrupt."""

    exit_code = 4


class ConfigError(IsolateError):
    """The isolate home or its configuration is missing or wrong."""

    exit_code = 5


class StoreError(IsolateError):
    """The database cannot be reached, or is not at the schema this isolate expects."""

    exit_code = 6
