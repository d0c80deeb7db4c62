"""From fork to exec: the one set-up of a task process, cold-started or a warm spare.

Runs in the supervisor's forked copy, so it never returns: :func:`enter` runs the steps
inside ``try: ... finally: os._exit(127)`` (supervisor's ``_spawn_as_child``, rq's fork
discipline). A cold start's failure before exec is written to the attempt's log (fd 2) and,
for the parent, to the error pipe, which is close-on-exec: a successful exec closes it with
nothing written. A spare has nobody to tell: it exits 127, and the hand-over finds it gone.

:data:`PIPELINE` is the order, one step per row, each with what a cold start does and what a
spare does (``None``: nothing). A spare is started before its attempt exists: it runs the
steps that do not depend on the attempt and execs the bootstrap, which waits for the
attempt; what the attempt adds is done at the hand-over, by the supervisor
(:func:`localexec.spares.start_warm`: the work dir given to the user, the log, the context)
and by the bootstrap (stdout and stderr to the log, the work dir, the environment, the
banner). The order, and why:

1. join the attempt's cgroup, first, while the process still may;
2. ``setsid``: the task and everything it forks form one process group the supervisor can
   time out as a whole, with no controlling terminal;
3. a spare only: the ``SCHED_IDLE`` policy until its hand-over (under root);
4. stdio: the fds it keeps moved above 2, stdin from /dev/null, stdout and stderr to the
   output pipe (a spare's to /dev/null), so later errors land in the log;
5. signals back to their defaults (Python ignores SIGPIPE and SIGXFSZ, and ignored signals
   survive exec) and an empty signal mask;
6. :func:`localexec.privdrop.become` (before anything of the DAG is touched), giving the
   attempt's work dir to the user first (a spare's is given at the hand-over);
7. umask 077 and chdir into the attempt's work dir (a spare: ``/``);
8. who runs the task, and the loader's variables it does not get, into the log;
9. the CPU and memory limits rendering must stay within
   (:func:`localexec.limits.apply_render_limits`);
10. the program: templated fields rendered (author input, only without privileges and under
    those limits), an environment built from scratch (:func:`localexec.child.task_environment`),
    the context in a memfd; a spare's is the bootstrap with an environment of isolate's;
11. the sandbox (:mod:`localexec.sandbox`): Landlock now, after the drop, bubblewrap by the
    exec (a task's environment handed to bwrap in a memfd, a spare's is isolate's own);
12. close every fd but stdio and those the program needs;
13. resource limits, last (see :mod:`localexec.limits`); exec.

Every effect goes through a :class:`Syscalls` (supervisor's ``options`` object is the model),
so the order is tested without forking (tests/test_preexec.py).
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from isolate.errors import IsolateError
from isolate.model import Limits
from localexec import child
from localexec.attempt import Attempt
from localexec.bootstrap import CTX_FD_VAR, SPARE_FD_VAR, XCOM_FD_VAR
from localexec.cgroups import AttemptCgroup
from localexec.limits import apply_limits, apply_render_limits
from localexec.logs import process_line, write_all
from localexec.privdrop import become
from localexec.sandbox import Sandbox, confine, confine_exec
from localexec.templating import renderer_for

EXIT_SETUP_FAILED = 127


class Syscalls(ABC):
    """What the steps do to the process; :class:`OsSyscalls` does it, a test records it."""

    @abstractmethod
    def join_cgroup(self, cgroup: AttemptCgroup) -> None: ...
    @abstractmethod
    def setsid(self) -> None: ...
    @abstractmethod
    def idle_priority(self) -> None: ...
    @abstractmethod
    def above_stdio(self, fd: int) -> int: ...
    @abstractmethod
    def stdio(self, output: int | None) -> None:
        """stdin from /dev/null; stdout and stderr to ``output`` (None: /dev/null)."""

    @abstractmethod
    def reset_signals(self) -> None: ...
    @abstractmethod
    def become(self, run_as: str | None, *, supervisor: int, work_dir: Path | None) -> str: ...
    @abstractmethod
    def umask(self, mask: int) -> None: ...
    @abstractmethod
    def chdir(self, path: Path) -> None: ...
    @abstractmethod
    def write(self, fd: int, data: bytes) -> None: ...
    @abstractmethod
    def render_limits(self, limits: Limits) -> None: ...
    @abstractmethod
    def context_memfd(self, document: Mapping[str, Any]) -> int: ...
    @abstractmethod
    def set_inheritable(self, fd: int) -> None: ...
    @abstractmethod
    def confine(self, sandbox: Sandbox, layers: list[int]) -> list[str]:
        """Confine a spare (its environment is isolate's): the argv prefix to exec through."""

    @abstractmethod
    def confine_exec(
        self, sandbox: Sandbox, layers: list[int], argv: Sequence[str], env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str], set[int]]:
        """Confine a task process: what to exec, its environment, the fds it inherits."""

    @abstractmethod
    def close_fds_except(self, keep: set[int]) -> None: ...
    @abstractmethod
    def apply_limits(self, limits: Limits) -> None: ...
    @abstractmethod
    def exec(self, argv: list[str], env: dict[str, str], *, search_path: bool) -> None: ...
    @abstractmethod
    def exit(self, code: int) -> NoReturn: ...


class OsSyscalls(Syscalls):
    """The real calls."""

    def join_cgroup(self, cgroup: AttemptCgroup) -> None:
        cgroup.join()

    def setsid(self) -> None:
        os.setsid()

    def idle_priority(self) -> None:
        if os.geteuid() == 0:
            # Start up only on CPU time nobody else wants; start_warm restores the normal
            # policy at hand-over (which only root can always do).
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    def above_stdio(self, fd: int) -> int:
        return child.above_stdio(fd)

    def stdio(self, output: int | None) -> None:
        devnull = os.open(os.devnull, os.O_RDWR if output is None else os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(devnull if output is None else output, 1)
        os.dup2(devnull if output is None else output, 2)
        if devnull > 2:
            os.close(devnull)

    def reset_signals(self) -> None:
        child.reset_signals()

    def become(self, run_as: str | None, *, supervisor: int, work_dir: Path | None) -> str:
        return become(run_as, supervisor=supervisor, work_dir=work_dir)

    def umask(self, mask: int) -> None:
        os.umask(mask)

    def chdir(self, path: Path) -> None:
        os.chdir(path)

    def write(self, fd: int, data: bytes) -> None:
        write_all(fd, data)

    def render_limits(self, limits: Limits) -> None:
        apply_render_limits(limits)

    def context_memfd(self, document: Mapping[str, Any]) -> int:
        return child.context_memfd(document)

    def set_inheritable(self, fd: int) -> None:
        os.set_inheritable(fd, True)

    def confine(self, sandbox: Sandbox, layers: list[int]) -> list[str]:
        return confine(sandbox, layers)

    def confine_exec(
        self, sandbox: Sandbox, layers: list[int], argv: Sequence[str], env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str], set[int]]:
        return confine_exec(sandbox, layers, argv, env)

    def close_fds_except(self, keep: set[int]) -> None:
        child.close_fds_except(keep)

    def apply_limits(self, limits: Limits) -> None:
        apply_limits(limits)

    def exec(self, argv: list[str], env: dict[str, str], *, search_path: bool) -> None:
        # Argv lists by design (sh -c only for a command task's shell string); a command
        # is found on the task's PATH, a spare's bootstrap has an absolute path.
        if search_path:
            os.execvpe(argv[0], argv, env)  # noqa: S606
        else:
            os.execve(argv[0], argv, env)  # noqa: S606

    def exit(self, code: int) -> NoReturn:
        os._exit(code)


@dataclass
class Launch:
    """One task process's way from fork to exec: what the steps read, and what each leaves
    for the next. Made by :meth:`cold` or :meth:`spare`."""

    python: Path
    bootstrap: Path
    run_as: str | None
    limits: Limits
    sandbox: Sandbox
    supervisor: int
    """The forking process's pid, read before the fork (see :func:`privdrop.become`)."""
    fds: dict[str, int]
    """The fds it keeps, by role; the stdio step moves them above 2."""
    cgroup: AttemptCgroup | None = None
    layers: list[int] = field(default_factory=list)
    """The supervisor's Landlock rulesets (:func:`localexec.sandbox.layers_for`)."""
    attempt: Attempt | None = None
    """None: a spare, whose attempt does not exist yet."""
    report_fd: int | None = None
    """The error pipe a failure is reported on (with fd 2); None: not reported."""
    user: str = ""
    argv: list[str] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)
    keep: set[int] = field(default_factory=set)

    @classmethod
    def cold(
        cls,
        attempt: Attempt,
        output_fd: int,
        result_fd: int | None,
        error_fd: int,
        *,
        supervisor: int,
        cgroup: AttemptCgroup | None = None,
        layers: list[int] | None = None,
    ) -> Launch:
        """The task process of ``attempt``: output, result and error pipes' write ends."""
        fds = {"output": output_fd, "error": error_fd}
        if result_fd is not None:
            fds["result"] = result_fd
        return cls(
            python=attempt.python,
            bootstrap=attempt.bootstrap,
            run_as=attempt.run_as,
            limits=attempt.limits,
            sandbox=attempt.sandbox,
            supervisor=supervisor,
            fds=fds,
            cgroup=cgroup,
            layers=list(layers or []),
            attempt=attempt,
            report_fd=error_fd,
        )

    @classmethod
    def spare(
        cls,
        python: Path,
        bootstrap: Path,
        run_as: str | None,
        limits: Limits,
        sandbox: Sandbox,
        control: int,
        *,
        supervisor: int,
        cgroup: AttemptCgroup | None = None,
        layers: list[int] | None = None,
    ) -> Launch:
        """A spare (:mod:`localexec.spares`) waiting on its end of the ``control`` socket."""
        return cls(
            python=python,
            bootstrap=bootstrap,
            run_as=run_as,
            limits=limits,
            sandbox=sandbox,
            supervisor=supervisor,
            fds={"control": control},
            cgroup=cgroup,
            layers=list(layers or []),
        )

    @property
    def is_spare(self) -> bool:
        return self.attempt is None


Step = Callable[[Launch, Syscalls], None]


def _join_cgroup(launch: Launch, calls: Syscalls) -> None:
    if launch.cgroup is not None:
        calls.join_cgroup(launch.cgroup)


def _new_session(launch: Launch, calls: Syscalls) -> None:
    calls.setsid()


def _idle_priority(launch: Launch, calls: Syscalls) -> None:
    calls.idle_priority()


def _stdio(launch: Launch, calls: Syscalls) -> None:
    # Keep our fds clear of 0-2 before stdio is rewired (a daemonized supervisor may have
    # closed its own stdio, so pipe() can hand out 0, 1 or 2).
    launch.fds = {role: calls.above_stdio(fd) for role, fd in launch.fds.items()}
    calls.stdio(launch.fds.get("output"))


def _default_signals(launch: Launch, calls: Syscalls) -> None:
    calls.reset_signals()


def _drop_privileges(launch: Launch, calls: Syscalls) -> None:
    work_dir = None if launch.attempt is None else launch.attempt.work_dir
    launch.user = calls.become(launch.run_as, supervisor=launch.supervisor, work_dir=work_dir)


def _umask(launch: Launch, calls: Syscalls) -> None:
    calls.umask(0o077)


def _work_dir(launch: Launch, calls: Syscalls) -> None:
    calls.chdir(Path("/") if launch.attempt is None else launch.attempt.work_dir)


def _banner(launch: Launch, calls: Syscalls) -> None:
    assert launch.attempt is not None
    calls.write(2, process_line(os.getpid(), launch.user))
    dropped = child.loader_variables(launch.attempt.env_vars)
    if dropped:
        calls.write(2, child.dropped_line(dropped))


def _render_limits(launch: Launch, calls: Syscalls) -> None:
    calls.render_limits(launch.limits)


def _task_program(launch: Launch, calls: Syscalls) -> None:
    attempt = launch.attempt
    assert attempt is not None
    dropped = child.loader_variables(attempt.env_vars)
    renderer = renderer_for(attempt.context, attempt.xcoms)
    own = {name: value for name, value in attempt.env_vars.items() if name not in dropped}
    env = child.task_environment(attempt, renderer.render_env(own), user=launch.user)
    keep = {launch.fds["error"]}
    if attempt.kind == "command":
        assert attempt.command is not None
        command = renderer.render_command(
            attempt.command if isinstance(attempt.command, str) else list(attempt.command)
        )
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    else:
        document = child.context_document(
            attempt,
            args=renderer.render(list(attempt.args), "args"),
            kwargs=renderer.render(dict(attempt.kwargs), "kwargs"),
        )
        ctx_fd = calls.above_stdio(calls.context_memfd(document))
        argv = [str(attempt.python), "-I", str(attempt.bootstrap)]
        env[CTX_FD_VAR] = str(ctx_fd)
        keep.add(ctx_fd)
        calls.set_inheritable(ctx_fd)
        result_fd = launch.fds.get("result")
        if result_fd is not None:
            env[XCOM_FD_VAR] = str(result_fd)
            keep.add(result_fd)
            calls.set_inheritable(result_fd)
    launch.argv, launch.environ, launch.keep = argv, env, keep


def _spare_program(launch: Launch, calls: Syscalls) -> None:
    control = launch.fds["control"]
    launch.environ = child.base_environment(launch.python, user=launch.user)
    launch.environ[SPARE_FD_VAR] = str(control)
    calls.set_inheritable(control)
    launch.argv = [str(launch.python), "-I", str(launch.bootstrap)]
    launch.keep = {control}


def _confine_task(launch: Launch, calls: Syscalls) -> None:
    argv, env, helper_fds = calls.confine_exec(
        launch.sandbox, launch.layers, launch.argv, launch.environ
    )
    launch.argv, launch.environ = argv, env
    launch.keep |= helper_fds


def _confine_spare(launch: Launch, calls: Syscalls) -> None:
    launch.argv = [*calls.confine(launch.sandbox, launch.layers), *launch.argv]


def _close_fds(launch: Launch, calls: Syscalls) -> None:
    calls.close_fds_except(launch.keep)


def _limits(launch: Launch, calls: Syscalls) -> None:
    calls.apply_limits(launch.limits)


def _exec(launch: Launch, calls: Syscalls) -> None:
    calls.exec(launch.argv, launch.environ, search_path=not launch.is_spare)


# (name, a cold start's step, a spare's step): the one order of both.
PIPELINE: tuple[tuple[str, Step | None, Step | None], ...] = (
    ("cgroup", _join_cgroup, _join_cgroup),
    ("session", _new_session, _new_session),
    ("idle priority", None, _idle_priority),
    ("stdio", _stdio, _stdio),  # a spare's output: at hand-over (bootstrap)
    ("signals", _default_signals, _default_signals),
    ("privileges", _drop_privileges, _drop_privileges),  # a spare's work dir: at hand-over
    ("umask", _umask, _umask),
    ("work dir", _work_dir, _work_dir),  # a spare's: at hand-over (bootstrap)
    ("banner", _banner, None),  # a spare's: at hand-over (bootstrap)
    ("render limits", _render_limits, None),  # a spare's attempt has no templates
    ("program", _task_program, _spare_program),  # a spare's env and context: at hand-over
    ("sandbox", _confine_task, _confine_spare),
    ("fds", _close_fds, _close_fds),
    ("limits", _limits, _limits),
    ("exec", _exec, _exec),
)


def steps(launch: Launch) -> list[tuple[str, Step]]:
    """The steps ``launch`` runs, in order."""
    picked = ((name, spare if launch.is_spare else cold) for name, cold, spare in PIPELINE)
    return [(name, step) for name, step in picked if step is not None]


def enter(launch: Launch, calls: Syscalls | None = None) -> NoReturn:
    """Run ``launch``'s steps and exec (the real :class:`OsSyscalls` by default). Never
    returns: a failure is reported (a cold start's) and the process exits 127."""
    calls = calls or OsSyscalls()
    try:
        try:
            for _, step in steps(launch):
                step(launch, calls)
        except BaseException as exc:
            if launch.report_fd is not None:
                # Where the error pipe is now: the stdio step moves it above 2 when the
                # supervisor's own stdio was closed and it was given a low number.
                _report(calls, launch.fds.get("error", launch.report_fd), exc)
    finally:
        calls.exit(EXIT_SETUP_FAILED)


def failure_message(exc: BaseException) -> str:
    """One line for what kept the task from starting."""
    if isinstance(exc, IsolateError):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.strerror}: {exc.filename}"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return " ".join(message.split()) or type(exc).__name__


def _report(calls: Syscalls, error_fd: int, exc: BaseException) -> None:
    message = failure_message(exc)
    # Best effort on both channels: the child exits 127 right after, whatever happens here.
    with contextlib.suppress(BaseException):
        calls.write(2, f"isolate: could not start the task: {message}\n".encode())
    with contextlib.suppress(BaseException):
        calls.write(error_fd, message.encode()[:4096])
