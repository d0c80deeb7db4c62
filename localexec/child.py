"""The forked child, from fork to exec: the task process's setup before it becomes the task.

Runs in the supervisor's forked copy, so it never returns: everything is inside
``try: ... finally: os._exit(127)`` (supervisor's ``_spawn_as_child``, rq's fork discipline).
A failure before exec is written to the attempt's log (fd 2) and, for the parent, to the
error pipe, which is close-on-exec: a successful exec closes it with nothing written.

Order, and why:

1. ``setsid``: the task and everything it forks form one process group the supervisor can
   time out as a whole, with no controlling terminal;
2. stdio: stdin from /dev/null, stdout and stderr to the log, so later errors land there;
3. signals back to their defaults (Python ignores SIGPIPE and SIGXFSZ, and ignored signals
   survive exec) and an empty signal mask;
4. :func:`localexec.privdrop.drop_privileges` (before anything of the DAG is touched);
5. umask 077 and chdir into the attempt's work dir;
6. the CPU and memory limits rendering must stay within
   (:func:`localexec.limits.apply_render_limits`);
7. render the templated fields (author input, rendered only without privileges and under
   those limits);
8. the context into an anonymous memory file (memfd) for the bootstrap: the child fills it
   without ever blocking on a reader, however large the context;
9. an environment built from scratch (nothing of the supervisor's: no database URL), less
   what the dynamic loader and the C library read (``LD_PRELOAD``, ...: refused at push, and
   dropped here from versions pushed before, saying so in the log);
10. the sandbox (:func:`localexec.sandbox.confine_exec`): Landlock now, bubblewrap by the
    exec, with an environment of isolate's own (the task's is handed to it in a memfd);
11. close every fd but stdio, the result pipe, the context fd and bubblewrap's memfd;
12. resource limits, last (see :mod:`localexec.limits`); exec.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from isolate.errors import IsolateError
from isolate.validate import is_loader_variable
from localexec.attempt import Attempt
from localexec.bootstrap import CTX_FD_VAR, XCOM_FD_VAR
from localexec.cgroups import AttemptCgroup
from localexec.limits import apply_limits, apply_render_limits
from localexec.logs import process_line, write_all
from localexec.privdrop import drop_privileges
from localexec.sandbox import confine_exec
from localexec.templating import renderer_for

# After the env's own bin dir; no /sbin, no "." (a writable cwd must not shadow commands).
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
EXIT_SETUP_FAILED = 127
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


def child_main(
    attempt: Attempt,
    log_fd: int,
    result_fd: int | None,
    error_fd: int,
    *,
    supervisor: int,
    cgroup: AttemptCgroup | None = None,
    layers: list[int] | None = None,
) -> NoReturn:
    """Set up the task process and exec it. Never returns into the supervisor's code.
    ``supervisor`` is the forking process's pid, read before the fork; the process joins
    ``cgroup`` first, while it still may; ``layers`` are the supervisor's Landlock rulesets
    for the attempt's sandbox (:class:`localexec.sandbox.Layers`)."""
    try:
        try:
            if cgroup is not None:
                cgroup.join()
            _setup_and_exec(attempt, log_fd, result_fd, error_fd, supervisor, layers or [])
        except BaseException as exc:
            _report(error_fd, exc)
    finally:
        os._exit(EXIT_SETUP_FAILED)


def _setup_and_exec(
    attempt: Attempt,
    log_fd: int,
    result_fd: int | None,
    error_fd: int,
    supervisor: int,
    layers: list[int],
) -> None:
    os.setsid()
    # Keep our fds clear of 0-2 before stdio is rewired (a daemonized supervisor may have
    # closed its own stdio, so pipe() can hand out 0, 1 or 2).
    log_fd, error_fd = above_stdio(log_fd), above_stdio(error_fd)
    result_fd = None if result_fd is None else above_stdio(result_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    if devnull > 2:
        os.close(devnull)
    reset_signals()

    user = drop_privileges(attempt, supervisor=supervisor)
    os.umask(0o077)
    os.chdir(attempt.work_dir)
    write_all(2, process_line(os.getpid(), user))
    dropped = loader_variables(attempt.env)
    if dropped:
        write_all(2, dropped_line(dropped))

    apply_render_limits(attempt.limits)
    renderer = renderer_for(attempt.context, attempt.xcoms)
    own = {name: value for name, value in attempt.env.items() if name not in dropped}
    env = task_environment(attempt, renderer.render_env(own), user=user)
    keep = {error_fd}
    if attempt.kind == "command":
        assert attempt.command is not None
        command = renderer.render_command(
            attempt.command if isinstance(attempt.command, str) else list(attempt.command)
        )
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    else:
        document = context_document(
            attempt,
            args=renderer.render(list(attempt.args), "args"),
            kwargs=renderer.render(dict(attempt.kwargs), "kwargs"),
        )
        ctx_fd = above_stdio(context_memfd(document))
        argv = [str(attempt.python), "-I", str(attempt.bootstrap)]
        env[CTX_FD_VAR] = str(ctx_fd)
        keep.add(ctx_fd)
        os.set_inheritable(ctx_fd, True)
        if result_fd is not None:
            env[XCOM_FD_VAR] = str(result_fd)
            keep.add(result_fd)
            os.set_inheritable(result_fd, True)
    argv, env, helper_fds = confine_exec(attempt.sandbox, layers, argv, env)
    close_fds_except(keep | helper_fds)
    apply_limits(attempt.limits)
    os.execvpe(argv[0], argv, env)  # noqa: S606 - argv lists by design; sh -c only for shell strings


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


def _report(error_fd: int, exc: BaseException) -> None:
    if isinstance(exc, IsolateError):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.strerror}: {exc.filename}"
    else:
        message = f"{type(exc).__name__}: {exc}"
    message = " ".join(message.split()) or type(exc).__name__
    # Best effort on both channels: the child exits 127 right after, whatever happens here.
    with contextlib.suppress(BaseException):
        write_all(2, f"isolate: could not start the task: {message}\n".encode())
    with contextlib.suppress(BaseException):
        write_all(error_fd, message.encode()[:4096])
