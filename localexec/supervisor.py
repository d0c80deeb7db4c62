"""Run one attempt: fork the task process, wait for it, enforce its timeout, read its result.

``start(attempt)`` creates the log, forks (the child's side is :mod:`localexec.preexec`) and
returns a :class:`Running`; ``wait(running)`` blocks until the task process has ended and
returns an :class:`Outcome`. The scheduler calls them from an executor slot; a crash
between the two loses nothing: ``pid`` + ``start_time`` identify the process for re-adoption.

The result pipe carries hostile data (docs/security.md): it is read with a size cap (over
the cap is an error, never a truncation), parsed as JSON only, and nothing in it is ever used
as a path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pwd
import selectors
import signal
import time
from typing import Any

import psutil

from isolate import jsondata
from localexec.attempt import Attempt, Outcome, Running, describe
from localexec.cgroups import AttemptCgroup
from localexec.logs import LogSink, create_log, footer, header, write_all
from localexec.preexec import EXIT_SETUP_FAILED, Launch, enter
from localexec.sandbox import exit_signal

_READ_CHUNK = 1 << 16
_ERROR_CHARS = 2000
# Without pidfd (Linux < 5.3) the parent polls for the exit this often.
_POLL_INTERVAL = 0.02


def start(
    attempt: Attempt, *, cgroup: AttemptCgroup | None = None, layers: list[int] | None = None
) -> Running:
    """Create the attempt's log, fork and start the task process; do not wait for it.

    Raises ``FileExistsError`` if the log file exists (a try never reuses a log) and
    ``OSError`` for other problems with the log path; setup errors inside the child are
    reported by :func:`wait` instead (``Outcome.start_error``).
    """
    started_at = dt.datetime.now(dt.UTC)
    log_fd = create_log(attempt.log_path, reader_gid=reader_gid(attempt))
    parent_fds = [log_fd]
    child_fds: list[int] = []
    try:
        write_all(log_fd, header(attempt, started_at))
        # The task writes into a pipe, never the file: the supervisor copies it (LogSink).
        output_r, output_w = os.pipe()
        parent_fds.append(output_r)
        child_fds.append(output_w)
        result_r = result_w = None
        if attempt.sends_result:
            result_r, result_w = os.pipe()
            parent_fds.append(result_r)
            child_fds.append(result_w)
        error_r, error_w = os.pipe()  # close-on-exec: EOF without data means exec happened
        parent_fds.append(error_r)
        child_fds.append(error_w)
        launch = Launch.cold(
            attempt,
            output_w,
            result_w,
            error_w,
            supervisor=os.getpid(),
            cgroup=cgroup,
            layers=layers,
        )
        began = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                enter(launch)
            finally:
                os._exit(EXIT_SETUP_FAILED)
    except BaseException:
        for fd in parent_fds + child_fds:
            os.close(fd)
        raise
    for fd in child_fds:
        os.close(fd)
    return started(
        attempt,
        pid,
        start_time=start_time_of(pid),
        started_at=started_at,
        began=began,
        log_fd=log_fd,
        output_fd=output_r,
        result_fd=result_r,
        error_fd=error_r,
        cgroup=cgroup,
    )


def started(
    attempt: Attempt,
    pid: int,
    *,
    start_time: float,
    started_at: dt.datetime,
    began: float,
    log_fd: int,
    output_fd: int,
    result_fd: int | None,
    error_fd: int,
    cgroup: AttemptCgroup | None,
) -> Running:
    """The :class:`Running` of a task process started cold or warm (every one is made
    here): ``pid`` leads a process group of its own id (its ``setsid``), ``began`` is the
    monotonic time its timeout counts from, and the read ends of its pipes, the supervisor's
    from now on, are made non-blocking for :func:`wait`."""
    for read_end in (result_fd, error_fd, output_fd):
        if read_end is not None:
            os.set_blocking(read_end, False)
    return Running(
        attempt=attempt,
        pid=pid,
        pgid=pid,
        start_time=start_time,
        started_at=started_at,
        _monotonic=began,
        _log_fd=log_fd,
        _output_fd=output_fd,
        _result_fd=result_fd,
        _error_fd=error_fd,
        _cgroup=cgroup,
    )


def start_time_of(pid: int) -> float:
    """The start time of our child ``pid`` (psutil's), which identifies it with its pid."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:  # cannot happen before we reap it; keep the attempt going anyway
        return 0.0


def signal_group(running: Running, signum: int) -> None:
    """Send ``signum`` to the attempt's whole process group (and the leader, in case it has
    not reached ``setsid`` yet)."""
    for send, target in ((os.killpg, running.pgid), (os.kill, running.pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            send(target, signum)


def wait(running: Running) -> Outcome:
    """Wait for the task process; time it out; collect its result; write the log's footer.

    On ``execution_timeout`` the whole group gets SIGTERM, and SIGKILL ``kill_grace`` seconds
    later. Once the task's main process has ended, whatever it left in its group is killed:
    an attempt leaves no survivors (a process that calls ``setsid`` itself escapes the group;
    a cgroup per attempt would catch it).
    """
    attempt = running.attempt
    reader = _Reader(running._result_fd, attempt.xcom_max_bytes)
    errors = _Reader(running._error_fd, 4096)
    sink = LogSink(running._log_fd, attempt.log_max_bytes)
    output = _Copier(running._output_fd, sink)
    status, timed_out, killed = _wait_loop(running, reader, errors, output)
    ended = time.monotonic()
    signal_group(running, signal.SIGKILL)  # leftovers: daemons, double forks
    if running._cgroup is not None:
        running._cgroup.remove()  # and those that left the group (setsid): all of its cgroup
    for channel in (reader, errors, output):
        channel.drain()
        channel.close()
    sink.close()

    exit_code = os.waitstatus_to_exitcode(status)
    sandboxed = exit_signal(attempt.sandbox, exit_code)
    if sandboxed is not None:
        exit_code = -sandboxed
    signum = -exit_code if exit_code < 0 else None
    code = exit_code if exit_code >= 0 else None
    start_error = errors.text() if errors.data else None
    xcom, has_xcom, error = None, False, None
    if attempt.sends_result and start_error is None:
        xcom, has_xcom, error = _parse_result(reader)
        if error is None and not has_xcom and code == 0 and not timed_out:
            error = (
                "exited with 0 without sending its result (sys.exit() or os._exit() in the task?)"
            )
    outcome = Outcome(
        pid=running.pid,
        exit_code=code,
        signal=signum,
        timed_out=timed_out,
        duration=ended - running._monotonic,
        message=describe(
            exit_code=code,
            signum=signum,
            timed_out=timed_out,
            timeout=attempt.execution_timeout,
            killed=killed,
            error=error,
            start_error=start_error,
        ),
        xcom=xcom,
        has_xcom=has_xcom,
        error=error,
        start_error=start_error,
    )
    try:
        write_all(running._log_fd, footer(outcome, dt.datetime.now(dt.UTC)))
    finally:
        os.close(running._log_fd)
    return outcome


def run(attempt: Attempt, *, layers: list[int] | None = None) -> Outcome:
    """``wait(start(attempt))``."""
    return wait(start(attempt, layers=layers))


def _wait_loop(
    running: Running, reader: _Reader, errors: _Reader, output: _Copier
) -> tuple[int, bool, bool]:
    """Until the main process ends: (its wait status, timed out, SIGKILL sent)."""
    attempt = running.attempt
    pidfd = _pidfd(running.pid)
    selector = selectors.DefaultSelector()
    try:
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ, None)
        for channel in (reader, errors, output):
            if channel.fd is not None:
                selector.register(channel.fd, selectors.EVENT_READ, channel)
        deadline = (
            running._monotonic + attempt.execution_timeout
            if attempt.execution_timeout is not None
            else None
        )
        kill_at: float | None = None
        timed_out = killed = False
        while True:
            now = time.monotonic()
            if deadline is not None and not timed_out and now >= deadline:
                timed_out = True
                signal_group(running, signal.SIGTERM)
                kill_at = now + attempt.kill_grace
            if kill_at is not None and not killed and now >= kill_at:
                killed = True
                signal_group(running, signal.SIGKILL)
            if pidfd is None:
                reaped, status = os.waitpid(running.pid, os.WNOHANG)
                if reaped:
                    return status, timed_out, killed
            wake = [
                t
                for t in (None if timed_out else deadline, None if killed else kill_at)
                if t is not None
            ]
            timeout = max(0.0, min(wake) - now) if wake else None
            if pidfd is None:
                timeout = _POLL_INTERVAL if timeout is None else min(timeout, _POLL_INTERVAL)
            for key, _ in selector.select(timeout):
                channel = key.data
                if channel is None:  # the pidfd: the process has ended
                    _, status = os.waitpid(running.pid, 0)
                    return status, timed_out, killed
                if not channel.read():
                    selector.unregister(key.fd)
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class _Reader:
    """Non-blocking reads of one pipe into memory, refusing more than ``limit`` bytes."""

    def __init__(self, fd: int | None, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.data = bytearray()
        self.over = False

    def read(self) -> bool:
        """Read what is there; False once the pipe is done (EOF, or over the limit)."""
        if self.fd is None:
            return False
        while True:
            try:
                chunk = os.read(self.fd, _READ_CHUNK)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self.data += chunk
            if len(self.data) > self.limit:
                # Stop reading and close our end: the writer gets EPIPE instead of filling
                # our memory; the attempt fails with a clear error.
                self.over = True
                self.data = self.data[: self.limit]
                self.close()
                return False

    def drain(self) -> None:
        if self.fd is not None and not self.over:
            self.read()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def text(self) -> str:
        return _one_line(self.data.decode("utf-8", "replace"))


class _Copier(_Reader):
    """Non-blocking reads of the task's output pipe into its log (no limit here: the
    sink drops what is over the log's cap, and reading on keeps the task from blocking)."""

    def __init__(self, fd: int | None, sink: LogSink) -> None:
        super().__init__(fd, 0)
        self.sink = sink

    def read(self) -> bool:
        if self.fd is None:
            return False
        while True:
            try:
                chunk = os.read(self.fd, _READ_CHUNK)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self.sink.write(chunk)

    def drain(self) -> None:
        self.read()


def _parse_result(reader: _Reader) -> tuple[Any, bool, str | None]:
    """(xcom, has_xcom, error) from the bootstrap's message: JSON only, shape checked."""
    if reader.over:
        return None, False, f"sent a result over the {reader.limit}-byte XCom limit"
    if not reader.data:
        return None, False, None
    try:
        message = jsondata.loads(bytes(reader.data), max_depth=jsondata.MAX_DEPTH + 1)
    except jsondata.JsonDataError as exc:
        return None, False, f"sent a result that is not valid JSON ({_one_line(str(exc))})"
    if isinstance(message, dict) and set(message) == {"xcom"}:
        return message["xcom"], True, None
    if (
        isinstance(message, dict)
        and set(message) == {"error"}
        and isinstance(message["error"], str)
    ):
        return None, False, _one_line(message["error"]) or "failed"
    return None, False, "sent a malformed result message"


def _one_line(text: str) -> str:
    # Hostile text headed for one-line messages and the database: no control characters.
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(cleaned.split())[:_ERROR_CHARS]


def reader_gid(attempt: Attempt) -> int | None:
    """The group that may read the attempt's log: its run-as user's (None: owner only)."""
    if attempt.run_as is None or os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(attempt.run_as).pw_gid
    except KeyError:
        return None  # the child refuses an unknown user; the log stays the owner's
