"""Per-try log files: created exclusively by the supervisor, a header, the output, a footer.

The supervisor creates the file, so a task (or another tenant) cannot point it elsewhere:
``O_EXCL`` refuses an existing file and ``O_NOFOLLOW`` a symlink planted at the path (CERT
FIO32-C/POS35-C: check-then-open races are avoided by letting open() fail).

The task never holds the file: its stdout and stderr are a pipe that the supervisor copies
into the log through a :class:`LogSink`, which keeps two promises no task can break:

- a line that starts with ``--- isolate`` is the supervisor's (the header, the footer); a
  task line that would start so is written with a ``(task) `` prefix, and author text in
  the header (a command's argv, ids) has its control characters escaped, so no newline in
  it can start a line;
- the log holds at most ``max_bytes`` of output (setting ``max_log_bytes``): the rest is
  read and dropped, with a marker, so a task cannot fill the node's disk through its log.
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


MARK = b"--- isolate"
TASK_PREFIX = b"(task) "


def visible(value: object) -> str:
    """``value`` as text with every non-printable character escaped (``\\n``, ``\\x1b``):
    author text in a line the supervisor writes can never start another line."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def header(attempt: Attempt, started_at: dt.datetime) -> bytes:
    """The supervisor's lines before the task's output (the child adds its pid and user)."""
    ctx = attempt.context
    what = attempt.callable if attempt.kind != "command" else _command_text(attempt.command)
    lines = [
        "--- isolate attempt",
        f"dag: {visible(ctx.get('dag_id'))}  run: {visible(ctx.get('run_id'))}  "
        f"task: {visible(ctx.get('task_id'))}  try: {ctx.get('try_number')}",
        f"kind: {attempt.kind}  {visible(what)}",
        f"{_origin(attempt)}  env: {attempt.env_key}",
        f"sandbox: {attempt.sandbox.describe()}",
        f"started: {started_at.isoformat()}",
    ]
    return ("\n".join(lines) + "\n").encode()


def _origin(attempt: Attempt) -> str:
    """Where the task's code comes from: its stored version, or `isolate test`'s folder."""
    if attempt.version is None and attempt.folder is not None:
        return f"folder: {visible(attempt.folder)}"
    return f"version: {attempt.version}"


class LogSink:
    """The task's output on its way into the log: lines that would pass for the
    supervisor's are marked as the task's, and everything past ``max_bytes`` is dropped."""

    def __init__(self, fd: int, max_bytes: int) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.written = 0
        self.dropped = 0
        self._at_line_start = True
        self._pending = b""  # the start of a line that may yet turn out to be MARK

    def write(self, data: bytes) -> None:
        if self.dropped:
            self.dropped += len(data)
            return
        data, self._pending = self._pending + data, b""
        out = bytearray()
        i = 0
        while i < len(data):
            if self._at_line_start:
                head = data[i : i + len(MARK)]
                if len(head) < len(MARK) and MARK.startswith(head) and b"\n" not in head:
                    self._pending = head  # undecided until more arrives
                    break
                if head == MARK:
                    out += TASK_PREFIX
            end = data.find(b"\n", i)
            if end < 0:
                out += data[i:]
                self._at_line_start = False
                break
            out += data[i : end + 1]
            i = end + 1
            self._at_line_start = True
        self._emit(bytes(out))

    def close(self) -> None:
        """Write what is held back (the task's last, unfinished line) and, if output was
        dropped, how much."""
        if self._pending:
            pending, self._pending = self._pending, b""
            self._at_line_start = False
            self._emit(pending)
        if self.dropped:
            write_all(self.fd, f"--- isolate: {self.dropped} bytes of output dropped\n".encode())

    def _emit(self, data: bytes) -> None:
        room = self.max_bytes - self.written
        if len(data) <= room:
            write_all(self.fd, data)
            self.written += len(data)
            return
        write_all(self.fd, data[:room])
        self.written = self.max_bytes
        self.dropped = len(data) - room
        write_all(
            self.fd,
            f"\n--- isolate: log truncated at {self.max_bytes} bytes of output "
            "(setting max_log_bytes); the rest is dropped\n".encode(),
        )


def process_line(pid: int, user: str, *, warm: bool = False) -> bytes:
    """Who actually runs the task: written by the child itself after the privilege drop, or,
    for a warm start, by the spare that dropped them before (see spares.py)."""
    start = "  start: warm" if warm else ""
    return f"pid: {pid}  user: {user}{start}\n---\n".encode()


def footer(outcome: Outcome, ended_at: dt.datetime) -> bytes:
    status = "success" if outcome.ok else "failed"
    return (
        f"\n--- isolate outcome: {status}: {visible(outcome.message)}\n"
        f"duration: {outcome.duration:.3f}s  ended: {ended_at.isoformat()}\n"
    ).encode()


def _command_text(command: str | object) -> str:
    return command if isinstance(command, str) else " ".join(map(str, command or ()))  # type: ignore[call-overload]
