"""What a task process is given: an environment built from nothing, its context, its fds.

The pieces of :mod:`localexec.preexec`'s steps (the one set-up from fork to exec, of a cold
start and of a warm spare) and of a warm start's hand-over (:mod:`localexec.spares`):

- the environment, from scratch (nothing of the supervisor's: no database URL), less what
  the dynamic loader and the C library read (``LD_PRELOAD``, ...: refused at push, and
  dropped here from versions pushed before, saying so in the log);
- the context document, which the bootstrap reads from an anonymous memory file (memfd):
  the child fills it without ever blocking on a reader, however large the context;
- the fd and signal housekeeping before exec: fds kept above stdio, every other fd closed,
  signals back to their defaults (Python ignores SIGPIPE and SIGXFSZ, and ignored signals
  survive exec) with an empty mask.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isolate.validate import is_loader_variable
from localexec.attempt import Attempt
from localexec.logs import write_all

# After the env's own bin dir; no /sbin, no "." (a writable cwd must not shadow commands).
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
# Environment variables a command task gets for its context (Airflow: AIRFLOW_CTX_*).
CONTEXT_ENV = {
    "ISOLATE_CTX_DAG_ID": "dag_id",
    "ISOLATE_CTX_TASK_ID": "task_id",
    "ISOLATE_CTX_RUN_ID": "run_id",
    "ISOLATE_CTX_TRY_NUMBER": "try_number",
    "ISOLATE_CTX_LOGICAL_DATE": "logical_date",
    "ISOLATE_CTX_DS": "ds",
    "ISOLATE_CTX_TS": "ts",
}
_RESET_SIGNALS = (
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGCHLD,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def context_document(attempt: Attempt, *, args: Any, kwargs: Any) -> dict[str, Any]:
    """What the bootstrap reads: the task context plus what to call and with what."""
    document: dict[str, Any] = {
        **attempt.context,
        "mode": "callback" if attempt.kind == "callback" else "task",
        "callable": attempt.callable,
        "bundle_dir": str(attempt.bundle_dir),
        "sdk_dir": str(attempt.sdk_dir),
        "xcom_max_bytes": attempt.xcom_max_bytes,
    }
    if attempt.kind == "callback":
        document["callback_context"] = dict(attempt.callback_context)
    else:
        document.update(args=args, kwargs=kwargs, xcoms=dict(attempt.xcoms))
    return document


def task_environment(
    attempt: Attempt, rendered_env: Mapping[str, str], *, user: str
) -> dict[str, str]:
    """The task's whole environment, built from nothing: no variable of the supervisor's."""
    env = base_environment(attempt.python, user=user)
    env.update(HOME=str(attempt.work_dir), TMPDIR=str(attempt.work_dir))
    if attempt.kind == "command":
        # `python -m package.module` of the DAG's own folder, as a python task imports it
        # (the bootstrap puts the bundle on sys.path itself). The author's env may override.
        env["PYTHONPATH"] = str(attempt.bundle_dir)
    # The author's own variables (ISOLATE_* is reserved at push), but never the loader's.
    env.update((k, v) for k, v in rendered_env.items() if not is_loader_variable(k))
    for variable, key in CONTEXT_ENV.items():
        value = attempt.context.get(key)
        if value is not None:
            env[variable] = str(value)
    return env


def loader_variables(env: Mapping[str, str]) -> list[str]:
    """The names in ``env`` the dynamic loader or the C library would read before the task
    runs: refused at push since they were checked, dropped from older stored versions."""
    return sorted(name for name in env if is_loader_variable(name))


def dropped_line(names: list[str]) -> bytes:
    """The log's line saying which of the task's variables it does not get, and why."""
    return (
        f"isolate: not in the task's env (read by the dynamic loader or the C library before "
        f"a program starts; refused at push since): {', '.join(names)}\n"
    ).encode()


def base_environment(python: Path, *, user: str) -> dict[str, str]:
    """What every task's environment starts from (a spare starts its interpreter with it)."""
    name = user.split(" ", 1)[0]
    return {
        "PATH": f"{python.parent}:{BASE_PATH}",
        "VIRTUAL_ENV": str(python.parent.parent),
        "USER": name,
        "LOGNAME": name,
        "LANG": "C.UTF-8",
        "TZ": "UTC",
    }


def close_fds_except(keep: set[int]) -> None:
    """Close every fd above 2 that is not in ``keep`` (Python's closerange uses close_range)."""
    low = 3
    for fd in sorted(fd for fd in keep if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _max_fd())


def _max_fd() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1 << 30:
        return 1 << 30
    return max(hard, os.sysconf("SC_OPEN_MAX"))


def context_memfd(document: Mapping[str, Any]) -> int:
    data = json.dumps(document, allow_nan=False, separators=(",", ":")).encode()
    fd = os.memfd_create("isolate-context", os.MFD_CLOEXEC)
    write_all(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def above_stdio(fd: int) -> int:
    return fd if fd > 2 else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def reset_signals() -> None:
    for signum in _RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
