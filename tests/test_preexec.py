"""The order of a task process's set-up from fork to exec, cold and warm, without forking.

The pipeline runs against a recording :class:`Syscalls`; the real calls are exercised by the
supervisor, spare, privilege-drop, cgroup and sandbox tests, which fork real processes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

from isolate.model import Limits
from localexec.attempt import Attempt
from localexec.bootstrap import CTX_FD_VAR, SPARE_FD_VAR, XCOM_FD_VAR
from localexec.cgroups import AttemptCgroup
from localexec.preexec import EXIT_SETUP_FAILED, Launch, Syscalls, enter, steps
from localexec.privdrop import PrivilegeDropError
from localexec.sandbox import HELPER_ENVIRONMENT, Sandbox

OUTPUT, ERROR, RESULT, CONTROL, CONTEXT, BWRAP_ARGS = 10, 11, 12, 13, 14, 15
SUPERVISOR = 4321
LIMITS = Limits(memory=1 << 30, cpu_time=60)
SANDBOX = Sandbox(landlock=6, bwrap=Path("/usr/bin/bwrap"))
LAYERS = [20]
CGROUP: Any = object()  # only handed to the seam


class Exited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Recording(Syscalls):
    """Records every call; the ``fail_at``-th call (from 0) raises ``failure``."""

    def __init__(self, fail_at: int | None = None, failure: BaseException | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_at = fail_at
        self.failure = failure or OSError(errno.EACCES, "Permission denied", "/the/thing")

    def _call(self, *call: Any) -> None:
        if len(self.calls) == self.fail_at:
            self.calls.append(call)
            raise self.failure
        self.calls.append(call)

    @property
    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == name]

    def join_cgroup(self, cgroup: AttemptCgroup) -> None:
        self._call("join_cgroup", cgroup)

    def setsid(self) -> None:
        self._call("setsid")

    def idle_priority(self) -> None:
        self._call("idle_priority")

    def above_stdio(self, fd: int) -> int:
        self._call("above_stdio", fd)
        return fd if fd > 2 else fd + 100

    def stdio(self, output: int | None) -> None:
        self._call("stdio", output)

    def reset_signals(self) -> None:
        self._call("reset_signals")

    def become(self, run_as: str | None, *, supervisor: int, work_dir: Path | None) -> str:
        self._call("become", run_as, supervisor, work_dir)
        return f"{run_as} (uid 1001, gid 1001)"

    def umask(self, mask: int) -> None:
        self._call("umask", mask)

    def chdir(self, path: Path) -> None:
        self._call("chdir", path)

    def write(self, fd: int, data: bytes) -> None:
        self._call("write", fd, data)

    def render_limits(self, limits: Limits) -> None:
        self._call("render_limits", limits)

    def context_memfd(self, document: Mapping[str, Any]) -> int:
        self._call("context_memfd", dict(document))
        return CONTEXT

    def set_inheritable(self, fd: int) -> None:
        self._call("set_inheritable", fd)

    def confine(self, sandbox: Sandbox, layers: list[int]) -> list[str]:
        self._call("confine", sandbox, list(layers))
        return ["bwrap", "--"] if sandbox.bwrap is not None else []

    def confine_exec(
        self, sandbox: Sandbox, layers: list[int], argv: Sequence[str], env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str], set[int]]:
        self._call("confine_exec", sandbox, list(layers), list(argv), dict(env))
        if sandbox.bwrap is None:
            return list(argv), dict(env), set()
        return (
            ["bwrap", "--args", str(BWRAP_ARGS), "--", *argv],
            dict(HELPER_ENVIRONMENT),
            {BWRAP_ARGS},
        )

    def close_fds_except(self, keep: set[int]) -> None:
        self._call("close_fds_except", set(keep))

    def apply_limits(self, limits: Limits) -> None:
        self._call("apply_limits", limits)

    def exec(self, argv: list[str], env: dict[str, str], *, search_path: bool) -> None:
        self._call("exec", list(argv), dict(env), search_path)
        # A real exec does not come back: what follows it here is enter's exit.

    def exit(self, code: int) -> NoReturn:
        self.calls.append(("exit", code))
        raise Exited(code)


COLD = [
    "join_cgroup",
    "setsid",
    "above_stdio",  # output
    "above_stdio",  # error
    "above_stdio",  # result
    "stdio",
    "reset_signals",
    "become",
    "umask",
    "chdir",
    "write",  # who runs it
    "render_limits",
    "context_memfd",
    "above_stdio",  # context
    "set_inheritable",  # context
    "set_inheritable",  # result
    "confine_exec",
    "close_fds_except",
    "apply_limits",
    "exec",
]
SPARE = [
    "join_cgroup",
    "setsid",
    "idle_priority",
    "above_stdio",  # control
    "stdio",
    "reset_signals",
    "become",
    "umask",
    "chdir",
    "set_inheritable",  # control
    "confine",
    "close_fds_except",
    "apply_limits",
    "exec",
]


def attempt_of(tmp_path: Path, **fields: Any) -> Attempt:
    values: dict[str, Any] = {
        "kind": "python",
        "python": Path("/envs/e1/bin/python"),
        "bootstrap": Path("/home/runtime/bootstrap.py"),
        "bundle_dir": tmp_path / "bundle",
        "sdk_dir": Path("/home/runtime/sdk"),
        "work_dir": tmp_path / "work",
        "log_path": tmp_path / "log",
        "context": {"dag_id": "etl", "task_id": "extract", "try_number": 1},
        "callable": "jobs:run",
        "args": ["{{ dag_id }}"],
        "run_as": "tenant",
        "limits": LIMITS,
        "sandbox": SANDBOX,
    }
    values.update(fields)
    return Attempt(**values)


def cold(attempt: Attempt, *, output: int = OUTPUT, error: int = ERROR) -> Launch:
    result = RESULT if attempt.sends_result else None
    return Launch.cold(
        attempt, output, result, error, supervisor=SUPERVISOR, cgroup=CGROUP, layers=LAYERS
    )


def spare() -> Launch:
    return Launch.spare(
        Path("/envs/e1/bin/python"),
        Path("/home/runtime/bootstrap.py"),
        "tenant",
        LIMITS,
        SANDBOX,
        CONTROL,
        supervisor=SUPERVISOR,
        cgroup=CGROUP,
        layers=LAYERS,
    )


def run(launch: Launch, calls: Recording) -> int:
    with pytest.raises(Exited) as exited:
        enter(launch, calls)
    return exited.value.code


def test_a_cold_start_runs_every_step_in_order(tmp_path: Path) -> None:
    attempt = attempt_of(tmp_path)
    calls = Recording()
    assert run(cold(attempt), calls) == EXIT_SETUP_FAILED  # a real exec never gets there
    assert calls.names == [*COLD, "exit"]

    assert calls.named("join_cgroup") == [("join_cgroup", CGROUP)]
    assert calls.named("stdio") == [("stdio", OUTPUT)]
    assert calls.named("become") == [("become", "tenant", SUPERVISOR, attempt.work_dir)]
    assert calls.named("umask") == [("umask", 0o077)]
    assert calls.named("chdir") == [("chdir", attempt.work_dir)]
    banner = f"pid: {os.getpid()}  user: tenant (uid 1001, gid 1001)\n---\n".encode()
    assert calls.named("write") == [("write", 2, banner)]
    assert calls.named("render_limits") == [("render_limits", LIMITS)]
    (_, document), *_ = calls.named("context_memfd")
    assert document["args"] == ["etl"]  # rendered, after the drop and under the limits
    assert calls.named("set_inheritable") == [
        ("set_inheritable", CONTEXT),
        ("set_inheritable", RESULT),
    ]
    (_, sandbox, layers, argv, env), *_ = calls.named("confine_exec")
    assert (sandbox, layers) == (SANDBOX, LAYERS)
    assert argv == [str(attempt.python), "-I", str(attempt.bootstrap)]
    assert env[CTX_FD_VAR] == str(CONTEXT) and env[XCOM_FD_VAR] == str(RESULT)
    assert env["USER"] == "tenant"
    assert calls.named("close_fds_except") == [
        ("close_fds_except", {ERROR, RESULT, CONTEXT, BWRAP_ARGS})
    ]
    assert calls.named("apply_limits") == [("apply_limits", LIMITS)]
    assert calls.named("exec") == [
        ("exec", ["bwrap", "--args", str(BWRAP_ARGS), "--", *argv], HELPER_ENVIRONMENT, True)
    ]


def test_a_spare_runs_the_same_steps_less_what_needs_its_attempt() -> None:
    calls = Recording()
    assert run(spare(), calls) == EXIT_SETUP_FAILED
    assert calls.names == [*SPARE, "exit"]

    assert calls.named("stdio") == [("stdio", None)]  # /dev/null until the hand-over
    # The work dir is given at the hand-over (start_warm); the spare waits in /.
    assert calls.named("become") == [("become", "tenant", SUPERVISOR, None)]
    assert calls.named("chdir") == [("chdir", Path("/"))]
    assert calls.named("write") == []  # its fd 2 is the supervisor's until stdio
    assert calls.named("confine") == [("confine", SANDBOX, LAYERS)]
    assert calls.named("close_fds_except") == [("close_fds_except", {CONTROL})]
    (_, argv, env, search_path), *_ = calls.named("exec")
    assert argv == ["bwrap", "--", "/envs/e1/bin/python", "-I", "/home/runtime/bootstrap.py"]
    assert env[SPARE_FD_VAR] == str(CONTROL) and env["USER"] == "tenant"
    assert search_path is False


def order(names: list[str], *expected: str) -> bool:
    firsts = [names.index(name) for name in expected]
    return firsts == sorted(firsts)


@pytest.mark.parametrize("make", [lambda tmp: cold(attempt_of(tmp)), lambda tmp: spare()])
def test_the_security_steps_keep_their_order(tmp_path: Path, make: Any) -> None:
    calls = Recording()
    run(make(tmp_path), calls)
    names = calls.names
    confine = "confine" if "confine" in names else "confine_exec"
    # The cgroup first (its limits hold for all that follows), a session of its own, stdio
    # and signals, then the drop; the sandbox after it (the filesystem ruleset is the
    # user's); fds closed and the limits set last, just before exec.
    assert order(names, "join_cgroup", "setsid", "stdio", "reset_signals", "become")
    assert order(names, "become", "umask", "chdir", confine, "close_fds_except")
    assert order(names, "close_fds_except", "apply_limits", "exec")
    assert names.index("exec") == len(names) - 2  # then only exit


def test_the_steps_are_named_in_one_order(tmp_path: Path) -> None:
    shared = ["cgroup", "session", "stdio", "signals", "privileges", "umask", "work dir"]
    tail = ["program", "sandbox", "fds", "limits", "exec"]
    assert [name for name, _ in steps(cold(attempt_of(tmp_path)))] == [
        *shared,
        "banner",
        "render limits",
        *tail,
    ]
    assert [name for name, _ in steps(spare())] == [
        "cgroup",
        "session",
        "idle priority",
        *shared[2:],
        *tail,
    ]


def test_a_command_gets_no_context_and_not_the_loaders_variables(tmp_path: Path) -> None:
    attempt = attempt_of(
        tmp_path,
        kind="command",
        callable=None,
        args=(),
        command="echo {{ task_id }}",
        env_vars={"LD_PRELOAD": "/evil.so", "GREETING": "hi"},
        sandbox=Sandbox(),
    )
    calls = Recording()
    run(cold(attempt), calls)
    assert "context_memfd" not in calls.names and "set_inheritable" not in calls.names
    (_, fd, banner), (_, dropped_fd, dropped) = calls.named("write")
    assert (fd, dropped_fd) == (2, 2) and banner.startswith(b"pid: ")
    assert b"not in the task's env" in dropped and b"LD_PRELOAD" in dropped
    (_, argv, env, search_path), *_ = calls.named("exec")
    assert argv == ["/bin/sh", "-c", "echo extract"] and search_path is True
    assert env["GREETING"] == "hi" and "LD_PRELOAD" not in env
    assert calls.named("close_fds_except") == [("close_fds_except", {ERROR})]


def test_fds_below_3_are_moved_before_stdio_is_rewired(tmp_path: Path) -> None:
    calls = Recording()
    run(cold(attempt_of(tmp_path), output=1, error=2), calls)
    assert calls.named("stdio") == [("stdio", 101)]
    assert ERROR not in calls.named("close_fds_except")[0][1]
    assert 102 in calls.named("close_fds_except")[0][1]


def test_a_failure_after_the_move_is_reported_on_the_moved_error_pipe(tmp_path: Path) -> None:
    """With the supervisor's stdio closed the error pipe may be fd 2: once moved above 2,
    fd 2 is the log, and the report must go to the pipe's new number."""
    calls = Recording(fail_at=COLD.index("become"))
    run(cold(attempt_of(tmp_path), output=1, error=2), calls)
    assert calls.calls[-2:] == [
        ("write", 102, b"Permission denied: /the/thing"),
        ("exit", EXIT_SETUP_FAILED),
    ]


@pytest.mark.parametrize("failing", range(len(COLD)), ids=lambda i: f"{i}-{COLD[i]}")
def test_a_cold_start_reports_a_failed_step_and_runs_nothing_after_it(
    tmp_path: Path, failing: int
) -> None:
    calls = Recording(fail_at=failing)
    assert run(cold(attempt_of(tmp_path)), calls) == EXIT_SETUP_FAILED
    assert calls.names[: failing + 1] == COLD[: failing + 1]
    assert calls.calls[failing + 1 :] == [
        ("write", 2, b"isolate: could not start the task: Permission denied: /the/thing\n"),
        ("write", ERROR, b"Permission denied: /the/thing"),
        ("exit", EXIT_SETUP_FAILED),
    ]


@pytest.mark.parametrize("failing", range(len(SPARE)), ids=lambda i: f"{i}-{SPARE[i]}")
def test_a_spare_that_fails_a_step_exits_silently_at_once(failing: int) -> None:
    calls = Recording(fail_at=failing)
    assert run(spare(), calls) == EXIT_SETUP_FAILED
    assert calls.names[: failing + 1] == SPARE[: failing + 1]
    # Nothing written: its fd 2 may still be the supervisor's; the hand-over finds it gone.
    assert calls.calls[failing + 1 :] == [("exit", EXIT_SETUP_FAILED)]


def test_a_refused_drop_says_why_in_the_attempts_words(tmp_path: Path) -> None:
    refusal = PrivilegeDropError("cannot run as 'tenant': no such user")
    calls = Recording(fail_at=COLD.index("become"), failure=refusal)
    run(cold(attempt_of(tmp_path)), calls)
    assert calls.calls[-2:] == [
        ("write", ERROR, b"cannot run as 'tenant': no such user"),
        ("exit", EXIT_SETUP_FAILED),
    ]
    assert "umask" not in calls.names
