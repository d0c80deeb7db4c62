"""The errors envcache raises: one base class, messages that say what to do."""

from __future__ import annotations


class EnvCacheError(Exception):
    """Base of every expected envcache error; ``str(error)`` is one line for the user."""


class LockfileError(EnvCacheError):
    """A lockfile is malformed or breaks the lock policy.

    ``problems`` lists every located problem (``requirements.txt:12: ...``); the message
    shows the first one.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        more = len(self.problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{self.problems[0]}{suffix}")


class InterpreterError(EnvCacheError):
    """An interpreter can't be used for envs: not found, not runnable, or not accessible."""


class BuildError(EnvCacheError):
    """A build tool (uv, virtualenv, pip) failed; ``output`` holds the tail of its output."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class CorruptEnvError(EnvCacheError):
    """An env differs from its manifest, or its manifest is missing or unreadable."""

    def __init__(self, message: str, differences: list[str] | None = None) -> None:
        super().__init__(message)
        self.differences = list(differences or [])
