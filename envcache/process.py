"""Run a build tool with captured output; a failure becomes a BuildError with the output's tail."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from envcache.errors import BuildError

_TAIL_LINES = 40
_SUMMARY_PREFIXES = ("error", "cause", "caused by", "hint")


# What to do when an install fails for the two reasons a lock's author can fix.
MISSING_PACKAGE = (
    "a locked package is in neither the wheelhouse nor the index: add its wheel to "
    "find_links, reach the index, or lock again against what is there"
)
WRONG_HASH = "a file does not match the lock's hash: lock again, or fix the wheelhouse's copy"


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    what: str,
    hint: str = "",
    hints: Sequence[tuple[str, str]] = (),
    cwd: Path | None = None,
) -> str:
    """Run ``argv`` with exactly ``env``, no stdin, and return its stdout.

    On failure, BuildError says ``what`` failed, with the tool's own error lines and what
    to do in its one-line message and the tail of the output in ``output``. What to do is
    the first of ``hints`` (text the output holds, in any case; the hint) that matches,
    else ``hint``.
    """
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
    except OSError as exc:
        raise BuildError(f"cannot run {what}: {exc}") from exc
    if done.returncode != 0:
        lines = (done.stdout + "\n" + done.stderr).strip().splitlines()
        tail = "\n".join(lines[-_TAIL_LINES:])
        message = f"{what} failed (exit {done.returncode}): {_summary(lines)}"
        said = "\n".join(lines).lower()
        advice = next((text for found, text in hints if found.lower() in said), hint)
        raise BuildError(f"{message}; {advice}" if advice else message, tail)
    return done.stdout


def _summary(lines: list[str]) -> str:
    """The tool's own error lines joined into one, e.g. uv's "error: ... / cause: ..."."""
    picked = [line.strip() for line in lines if line.strip().lower().startswith(_SUMMARY_PREFIXES)]
    if not picked:
        picked = [line.strip() for line in lines if line.strip()][-1:] or ["no output"]
    return " / ".join(picked[:3])
