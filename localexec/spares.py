"""Warm starts: a task process started ahead of its attempt, waiting to be handed one.

Most of a no-op python task's start is the interpreter's own (about 7 ms here, most of a
bare ``python -c pass``). A *spare* pays it before the attempt exists: the supervisor forks,
the child runs the steps of the cold path's set-up that do not depend on the attempt, in the
same order (:data:`localexec.preexec.PIPELINE`: the cgroup, a new session, stdio on
/dev/null, default signals, the privilege drop of :mod:`privdrop`, umask 077, the sandbox,
every fd closed but its control socket, the resource limits) and execs the env's python on
the bootstrap, which imports what it needs and blocks on the socket.

When an attempt of the same (interpreter, bootstrap, user, limits) is launched, the
supervisor gives the work dir to the user, creates the log as for a cold start, and sends the
spare, with ``SCM_RIGHTS``, the log, the context (an anonymous memory file, as for a cold
start, plus the work dir and the task's environment) and the write end of the result pipe.
The bootstrap points stdout and stderr at the log, moves into the work dir, replaces its
whole environment, and runs the attempt like a cold-started one. A spare serves one attempt
and exits: nothing of one attempt is left for the next, and every process is the
supervisor's own child, so waiting, time-outs and recovery are the cold path's.

Not warm-started (the cold path is used): attempts with a templated field (templates are
rendered in the forked child, with Jinja, which the env does not have), attempts whose own
environment sets what the interpreter reads at start (``PYTHON*``, ``LC_*``, ``LANG``,
``LD_*``, ``TZ``), and any attempt when no spare of its kind is ready. A command task's
spare execs the command once it has taken the attempt over: what it saves is the fork of the
supervisor. A spare that died while idle (a tenant's task may kill its own user's processes)
is noticed at hand-over and the cold path is taken.

The pool keeps at most one idle spare per kind recently launched, ``capacity`` in all, and
stops the spares of a kind unused for ``idle_seconds``. Spares are started only while a slot
is free, and (under a root supervisor) with the ``SCHED_IDLE`` policy until their hand-over:
a starting interpreter would otherwise take CPU from the attempts running. Spares die with
the supervisor: the death signal of the privilege drop, and the end of their control socket
otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from isolate.model import Limits
from localexec.attempt import Attempt, Running
from localexec.cgroups import AttemptCgroup, Hierarchies
from localexec.child import context_document, context_memfd, task_environment
from localexec.logs import create_log, header, process_line, write_all
from localexec.preexec import EXIT_SETUP_FAILED, Launch, enter
from localexec.privdrop import give_work_dir, identity_of
from localexec.sandbox import Sandbox, layers_for
from localexec.supervisor import start_time_of, started
from localexec.templating import has_template

# What the interpreter reads from the environment when it starts: a spare started without
# the attempt's values would not honour them.
_STARTUP_PREFIXES = ("PYTHON", "LC_", "LANG", "LD_")
_STARTUP_NAMES = frozenset({"TZ"})
_HANDOVER = b"attempt"


@dataclass(frozen=True)
class SpareKind:
    """What a spare is started with; an attempt can use a spare of exactly its kind."""

    python: Path
    bootstrap: Path
    run_as: str | None
    limits: Limits
    sandbox: Sandbox = field(default_factory=Sandbox)

    @classmethod
    def of(cls, attempt: Attempt) -> SpareKind:
        return cls(
            attempt.python, attempt.bootstrap, attempt.run_as, attempt.limits, attempt.sandbox
        )


@dataclass
class Spare:
    """An idle task process of ``kind``; ``control`` is the supervisor's end of its socket."""

    kind: SpareKind
    pid: int
    start_time: float
    control: socket.socket = field(repr=False)
    born: float = 0.0
    cgroup: AttemptCgroup | None = None
    """The cgroup of the attempt it will serve, joined when it started."""

    def alive(self) -> bool:
        """Whether it still waits (reaps it if it has exited)."""
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return pid == 0

    def processes(self) -> list[int]:
        """Its pid and its descendants' (bubblewrap forks the interpreter)."""
        if self.cgroup is not None:
            return sorted(self.cgroup.pids() | {self.pid})
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return [self.pid]
        return [self.pid, *(child.pid for child in children)]

    def stop(self) -> None:
        """End it and reap it: its socket closes, its group gets SIGKILL."""
        self.control.close()
        for send, target in ((os.killpg, self.pid), (os.kill, self.pid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(target, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None


def warm_start_possible(attempt: Attempt) -> bool:
    """Whether ``attempt`` may run in a spare (see the module docstring for why not)."""
    if any(
        name.startswith(_STARTUP_PREFIXES) or name in _STARTUP_NAMES for name in attempt.env_vars
    ):
        return False
    command = attempt.command if isinstance(attempt.command, str) else list(attempt.command or ())
    fields = (list(attempt.args), dict(attempt.kwargs), dict(attempt.env_vars), command)
    return not any(has_template(value) for value in fields)


def spawn(kind: SpareKind, cgroup: AttemptCgroup | None = None) -> Spare:
    """Start a spare of ``kind`` in ``cgroup`` (created for the attempt it will serve: joining
    now costs the hand-over nothing); it is ready once its interpreter has started."""
    layers = layers_for(kind.sandbox)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    supervisor = os.getpid()
    try:
        pid = os.fork()
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        try:
            ours.close()
            control = theirs.detach()
            enter(
                Launch.spare(
                    kind.python,
                    kind.bootstrap,
                    kind.run_as,
                    kind.limits,
                    kind.sandbox,
                    control,
                    supervisor=supervisor,
                    cgroup=cgroup,
                    layers=layers,
                )
            )
        finally:
            os._exit(EXIT_SETUP_FAILED)
    theirs.close()
    return Spare(kind, pid, start_time_of(pid), ours, born=time.monotonic(), cgroup=cgroup)


def start_warm(attempt: Attempt, spare: Spare, *, reader_gid: int | None) -> Running | None:
    """Hand ``attempt`` to ``spare``; None if the spare is gone (the caller starts cold).

    Nothing is left behind on None: the log file made for the attempt is removed again.
    """
    if not spare.alive():
        spare.stop()
        return None
    if os.geteuid() == 0:
        # The spare's processes: one, or under bubblewrap bwrap's and the sandboxed
        # interpreter. All wait for the hand-over: none can fork or leave meanwhile.
        try:
            for pid in spare.processes():
                os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:  # never let an attempt run at idle priority
            spare.stop()
            return None
    started_at = dt.datetime.now(dt.UTC)
    give_work_dir(attempt.work_dir, attempt.run_as)
    user = identity_of(attempt.run_as)
    document = context_document(attempt, args=list(attempt.args), kwargs=dict(attempt.kwargs))
    if attempt.kind == "command":
        command = attempt.command
        document.update(
            mode="command", command=command if isinstance(command, str) else list(command or ())
        )
    document["spare"] = {
        "work_dir": str(attempt.work_dir),
        "env": task_environment(attempt, attempt.env_vars, user=user),
        "banner": process_line(spare.pid, user, warm=True).decode(),
    }
    log_fd = create_log(attempt.log_path, reader_gid=reader_gid)
    sent = False
    ctx_fd = result_r = result_w = error_r = error_w = output_r = output_w = -1
    try:
        write_all(log_fd, header(attempt, started_at))
        output_r, output_w = os.pipe()  # the task's stdout and stderr (logs.LogSink)
        ctx_fd = context_memfd(document)
        result_r, result_w = os.pipe()
        # What the cold path's child says before exec: here, only a command that cannot be
        # started (the spare closes it on a successful exec, or before a python task runs).
        error_r, error_w = os.pipe()
        began = time.monotonic()
        try:
            socket.send_fds(spare.control, [_HANDOVER], [output_w, ctx_fd, result_w, error_w])
            sent = True
        except OSError:
            return None
    finally:
        for fd in (ctx_fd, result_w, error_w, output_w):
            if fd >= 0:
                os.close(fd)
        spare.control.close()
        if not sent:
            for fd in (result_r, error_r, log_fd, output_r):
                if fd >= 0:
                    os.close(fd)
            with contextlib.suppress(OSError):
                attempt.log_path.unlink()
            spare.stop()
    if not attempt.sends_result:  # a command sends none: its end was closed before exec
        os.close(result_r)
        result_r = -1
    return started(
        attempt,
        spare.pid,
        start_time=spare.start_time,
        started_at=started_at,
        began=began,
        log_fd=log_fd,
        output_fd=output_r,
        result_fd=result_r if result_r >= 0 else None,
        error_fd=error_r,
        cgroup=spare.cgroup,
    )


class SparePool:
    """Idle spares by kind: at most one per kind launched in the last ``idle_seconds``."""

    def __init__(
        self, capacity: int, *, idle_seconds: float = 60.0, cgroups: Hierarchies | None = None
    ) -> None:
        """``cgroups``: the node's, if it has them; each spare of a kind whose sandbox has a
        cgroup starts in the cgroup of the attempt it will serve."""
        self.capacity = capacity
        self.idle_seconds = idle_seconds
        self.cgroups = cgroups
        self._idle: dict[SpareKind, Spare] = {}
        self._wanted: dict[SpareKind, float] = {}

    def take(self, kind: SpareKind) -> Spare | None:
        """The idle spare of ``kind``, if any; ``kind`` is wanted again from now on."""
        self._wanted[kind] = time.monotonic()
        return self._idle.pop(kind, None)

    def replenish(self, *, start: bool = True) -> None:
        """Stop the spares nobody wanted lately (and dead ones); start the missing ones
        unless ``start`` is False."""
        now = time.monotonic()
        for kind, last in list(self._wanted.items()):
            if now - last > self.idle_seconds:
                del self._wanted[kind]
        recent = sorted(self._wanted, key=self._wanted.__getitem__, reverse=True)
        keep = recent[: self.capacity]
        for kind, spare in list(self._idle.items()):
            if kind not in keep or not spare.alive():
                del self._idle[kind]
                spare.stop()
        for kind in keep:
            if start and kind not in self._idle:
                cgroup = None
                if self.cgroups is not None and kind.sandbox.cgroup:
                    try:
                        cgroup = AttemptCgroup.create(
                            self.cgroups, secrets.token_hex(8), kind.limits
                        )
                    except OSError:
                        continue  # no spare: the cold path creates its cgroup, or says why not
                try:
                    self._idle[kind] = spawn(kind, cgroup)
                except BaseException:
                    if cgroup is not None:
                        cgroup.remove()
                    raise

    @property
    def idle(self) -> list[Spare]:
        return list(self._idle.values())

    def close(self) -> None:
        """Stop every idle spare."""
        while self._idle:
            _, spare = self._idle.popitem()
            spare.stop()
        self._wanted.clear()
