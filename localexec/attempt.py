"""One try of one task: what the supervisor needs to run it, and what came of it.

Plain data. :func:`make_context` builds the Airflow-style context every attempt carries;
:mod:`localexec.supervisor` runs an :class:`Attempt` and returns an :class:`Outcome`.
"""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isolate.model import DagSpec, Limits, TaskSpec
from localexec.sandbox import Sandbox

KINDS = ("python", "command", "callback")
DEFAULT_XCOM_MAX_BYTES = 1 << 20
DEFAULT_KILL_GRACE = 5.0
DEFAULT_LOG_MAX_BYTES = 100 << 20
# A callback reports on a task's outcome: it may take a minute, and nothing waits for it.
CALLBACK_TIMEOUT = 60.0


def make_context(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    logical_date: dt.datetime,
    try_number: int,
    params: Mapping[str, Any] | None = None,
    conf: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The task context as JSON data: Airflow's ``ds``/``ts`` family from an aware date."""
    if logical_date.tzinfo is None:
        raise ValueError("logical_date must be timezone-aware")
    moment = logical_date.astimezone(dt.UTC)
    return {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "logical_date": moment.isoformat(),
        "ds": moment.date().isoformat(),
        "ds_nodash": moment.strftime("%Y%m%d"),
        "ts": moment.isoformat(),
        "ts_nodash": moment.strftime("%Y%m%dT%H%M%S"),
        "try_number": try_number,
        "params": dict(params or {}),
        "conf": dict(conf or {}),
    }


if TYPE_CHECKING:
    from localexec.cgroups import AttemptCgroup


@dataclass(frozen=True)
class Attempt:
    """Everything needed to run one try of a task (or one callback) in its env.

    ``kind`` is ``python`` (``callable`` with ``args``/``kwargs``, templated), ``command``
    (``command``: an argv list, or a shell string run by ``/bin/sh -c``) or ``callback``
    (``callable(context)``, ``callback_context`` merged into the context). ``xcoms`` holds the
    upstream values by task id. ``run_as`` is the OS user from the admin mapping: ``None``
    (the scheduler's own user) until the tenancy work lands in :mod:`localexec.privdrop`.
    """

    kind: str
    python: Path  # <env>/bin/python, not resolved: the venv is found through this path
    bootstrap: Path
    bundle_dir: Path
    sdk_dir: Path
    work_dir: Path
    log_path: Path
    context: Mapping[str, Any]
    xcoms: Mapping[str, Any] = field(default_factory=dict)
    callable: str | None = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    command: str | Sequence[str] | None = None
    env_vars: Mapping[str, str] = field(default_factory=dict)
    """The task's own environment variables (its spec's ``env``), before any is dropped."""
    limits: Limits = field(default_factory=Limits)
    execution_timeout: float | None = None
    callback_context: Mapping[str, Any] = field(default_factory=dict)
    run_as: str | None = None
    version: int | None = None
    folder: str | None = None  # `isolate test`: the local DAG folder, not a stored version
    env_key: str | None = None
    xcom_max_bytes: int = DEFAULT_XCOM_MAX_BYTES
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    kill_grace: float = DEFAULT_KILL_GRACE
    sandbox: Sandbox = field(default_factory=Sandbox)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("python", "callback") and not self.callable:
            raise ValueError(f"a {self.kind} attempt needs a callable")
        if self.kind == "command" and not self.command:
            raise ValueError("a command attempt needs a command")
        if self.execution_timeout is not None and self.execution_timeout <= 0:
            raise ValueError("execution_timeout must be positive")

    @property
    def sends_result(self) -> bool:
        """Whether the task process runs the bootstrap and so sends a result message."""
        return self.kind != "command"


@dataclass
class Running:
    """A started attempt. ``pid`` + ``start_time`` (psutil) identify the process for good."""

    attempt: Attempt
    pid: int
    pgid: int
    start_time: float
    started_at: dt.datetime
    # The parent's ends of the channels; owned by the supervisor, closed by wait().
    _monotonic: float = field(repr=False, default=0.0)
    _log_fd: int = field(repr=False, default=-1)
    # The read end of the task's stdout and stderr, copied into the log (logs.LogSink).
    _output_fd: int | None = field(repr=False, default=None)
    _result_fd: int | None = field(repr=False, default=None)
    _error_fd: int = field(repr=False, default=-1)
    # The attempt's cgroup (cgroups.py), if the node has them: emptied and removed by wait().
    _cgroup: AttemptCgroup | None = field(repr=False, default=None)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. ``message`` is one readable line; ``ok`` is the verdict."""

    pid: int
    exit_code: int | None
    signal: int | None
    timed_out: bool
    duration: float
    message: str
    xcom: Any = None
    has_xcom: bool = False
    error: str | None = None  # the task's one-line error, or the supervisor's finding
    start_error: str | None = None  # the child failed before exec (template, setup)

    @property
    def ok(self) -> bool:
        return (
            self.exit_code == 0
            and not self.timed_out
            and self.error is None
            and self.start_error is None
        )


def describe(
    *,
    exit_code: int | None,
    signum: int | None,
    timed_out: bool,
    timeout: float | None,
    killed: bool,
    error: str | None,
    start_error: str | None,
) -> str:
    """One line for a wait status: "exited with 3", "killed by SIGKILL", "timed out ..."."""
    if start_error is not None:
        return f"could not start: {start_error}"
    if timed_out:
        how = "was killed" if killed else "was terminated"
        return f"timed out after {timeout:g}s and {how}"
    if signum is not None:
        text = f"killed by {signal_name(signum)}"
        hint = _SIGNAL_HINTS.get(signum)
        return f"{text} ({hint})" if hint else text
    if exit_code == 0:
        return "succeeded" if error is None else error
    base = f"exited with {exit_code}"
    return f"{base}: {error}" if error else base


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


_SIGNAL_HINTS: dict[int, str] = {
    int(signal.SIGXCPU): "CPU time limit reached",
    int(signal.SIGXFSZ): "file size limit reached",
}


@dataclass(frozen=True)
class Placement:
    """Where an attempt runs: its env's python, the runtime files, bundle, work dir and log."""

    python: Path
    bootstrap: Path
    sdk_dir: Path
    bundle_dir: Path
    work_dir: Path
    log_path: Path
    env_key: str


def task_attempt(
    spec: DagSpec,
    task: TaskSpec,
    where: Placement,
    context: Mapping[str, Any],
    xcoms: Mapping[str, Any],
    version: int | None = None,
    run_as: str | None = None,
    limits: Limits | None = None,
    sandbox: Sandbox | None = None,
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
    callback: tuple[str, str] | None = None,
    folder: str | None = None,
) -> Attempt:
    """The attempt that runs ``task`` of ``spec`` as the format describes it, as ``run_as``
    (None: the supervisor's user) within ``limits`` (default: the task's own).

    With ``callback`` (its ``module:function`` and its event, e.g. ``on_failure``), the
    attempt runs that callback of the task instead: the same user, env, bundle, limits and
    sandbox as the task, its context with ``event``, none of the task's arguments, command,
    environment or XComs, and at most :data:`CALLBACK_TIMEOUT` seconds. Every launch of
    the scheduler and of ``isolate test`` is built here."""
    common: dict[str, Any] = {
        "python": where.python,
        "bootstrap": where.bootstrap,
        "bundle_dir": where.bundle_dir,
        "sdk_dir": where.sdk_dir,
        "work_dir": where.work_dir,
        "log_path": where.log_path,
        "context": context,
        "limits": task.limits if limits is None else limits,
        "run_as": run_as,
        "version": version,
        "folder": folder,
        "env_key": where.env_key,
        "sandbox": sandbox or Sandbox(),
        "log_max_bytes": log_max_bytes,
    }
    if callback is not None:
        target, event = callback
        return Attempt(
            kind="callback",
            callable=target,
            callback_context={"event": event},
            execution_timeout=CALLBACK_TIMEOUT,
            **common,
        )
    command = task.command if isinstance(task.command, str) else list(task.command or ()) or None
    return Attempt(
        kind=task.kind,
        xcoms=xcoms,
        callable=task.callable,
        args=list(task.args),
        kwargs=dict(task.kwargs or {}),
        command=command,
        env_vars=dict(task.env),
        execution_timeout=task.effective_retry(spec.defaults).execution_timeout,
        **common,
    )
