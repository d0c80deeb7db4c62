"""Per-try log files: created exclusively by the supervisor, a header, the output, a footer.

The supervisor creates the file, so a task (or another tenant) cannot point it elsewhere:
``O_EXCL`` refuses an existing file and ``O_NOFOLLOW`` a symlink planted at the path (CERT
FIO32-C/POS35-C: check-then-open races are avoided by letting open() fail). ``O_APPEND`` keeps
the footer after whatever the task wrote through its inherited copy of the fd.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from localexec.attempt import Attempt, Outcome

LOG_MODE = 0o600
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_APPEND | os.O_CLOEXEC


def create_log(path: Path, *, reader_gid: int | None = None) -> int:
    """A new log file at ``path``, opened for appending; never an existing file.

    Mode 0600; with ``reader_gid`` (the group of the user the task runs as) 0640 and that
    group, so the tenant can read its own logs and other tenants cannot.
    """
    fd = os.open(path, _FLAGS, LOG_MODE)
    try:
        if reader_gid is not None:
            os.fchown(fd, os.geteuid(), reader_gid)
            os.fchmod(fd, 0o640)
            return fd
        os.fchmod(fd, LOG_MODE)  # exact whatever the umask
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def header(attempt: Attempt, started_at: dt.datetime) -> bytes:
    """The supervisor's lines before the task's output (the child adds its pid and user)."""
    ctx = attempt.context
    what = attempt.callable if attempt.kind != "command" else _command_text(attempt.command)
    lines = [
        "--- isolate attempt",
        f"dag: {ctx.get('dag_id')}  run: {ctx.get('run_id')}  task: {ctx.get('task_id')}  "
        f"try: {ctx.get('try_number')}",
        f"kind: {attempt.kind}  {what}",
        f"version: {attempt.version}  env: {attempt.env_key}",
        f"sandbox: {attempt.sandbox.describe()}",
        f"started: {started_at.isoformat()}",
    ]
    return ("\n".join(lines) + "\n").encode()


def process_line(pid: int, user: str, *, warm: bool = False) -> bytes:
    """Who actually runs the task: written by the child itself after the privilege drop, or,
    for a warm start, by the spare that dropped them before (see spares.py)."""
    start = "  start: warm" if warm else ""
    return f"pid: {pid}  user: {user}{start}\n---\n".encode()


def footer(outcome: Outcome, ended_at: dt.datetime) -> bytes:
    status = "success" if outcome.ok else "failed"
    return (
        f"\n--- isolate outcome: {status}: {outcome.message}\n"
        f"duration: {outcome.duration:.3f}s  ended: {ended_at.isoformat()}\n"
    ).encode()


def _command_text(command: str | object) -> str:
    return command if isinstance(command, str) else " ".join(map(str, command or ()))  # type: ignore[call-overload]
