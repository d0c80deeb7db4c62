"""Warm starts: spare task processes, handed their attempt over a socket. Real processes.

(Warm starts as a mapped OS user are in test_privdrop.py; through the scheduler in
test_scheduler.py.)
"""

# The fixtures come from a shared module; pyflakes sees their use as arguments as
# redefinitions of the imported names.
# ruff: noqa: F811

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil
import pytest

from isolate.model import Limits
from localexec.attempt import Attempt
from localexec.spares import (
    SpareKind,
    SparePool,
    spawn,
    start_warm,
    warm_start_possible,
)
from localexec.supervisor import run, wait
from tests.localexec_support import (  # noqa: F401 - fixtures
    MakeAttempt,
    env_python,
    make_attempt,
    runtime,
)

PROBE = {
    "probe.py": """
        import os, sys

        def probe(ds, logical_date, **context):
            print("hello from the task")
            fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
            return {
                "cwd": os.getcwd(),
                "env": dict(os.environ),
                "fds": len(fds),
                "umask": oct(os.umask(0)),
                "sid_is_pid": os.getsid(0) == os.getpid(),
                "stdin": os.readlink("/proc/self/fd/0"),
                "ds": ds,
                "date": logical_date.isoformat(),
                "keys": sorted(context),
            }

        def slow():
            import time
            time.sleep(30)
    """
}


def warm(attempt: Attempt) -> Any:
    spare = spawn(SpareKind.of(attempt))
    running = start_warm(attempt, spare, reader_gid=None)
    assert running is not None
    assert running.pid == spare.pid
    return wait(running)


def comparable(seen: dict[str, Any], attempt: Attempt) -> dict[str, Any]:
    """What must be equal between a cold and a warm run of the same task."""
    seen = dict(seen)
    assert seen.pop("cwd") == str(attempt.work_dir)
    env = seen.pop("env")
    assert env["HOME"] == env["TMPDIR"] == str(attempt.work_dir)
    seen["env"] = {k: v for k, v in env.items() if k not in ("HOME", "TMPDIR")}
    return seen


def test_a_warm_start_runs_the_attempt_as_a_cold_start_would(make_attempt: MakeAttempt) -> None:
    cold_attempt = make_attempt(PROBE, callable="probe:probe")
    warm_attempt = make_attempt(PROBE, callable="probe:probe")
    assert warm_start_possible(warm_attempt)
    cold = run(cold_attempt)
    hot = warm(warm_attempt)
    assert cold.ok and hot.ok, (hot.message, warm_attempt.log_path.read_text())
    # The same view of the world: work dir, whole environment (nothing of the spare's control
    # socket), open fds, umask, session, stdin, context keys and a parsed logical date.
    assert comparable(hot.xcom, warm_attempt) == comparable(cold.xcom, cold_attempt)
    assert "ISOLATE_SPARE_FD" not in hot.xcom["env"]
    assert hot.xcom["umask"] == "0o77" and hot.xcom["sid_is_pid"] is True
    assert hot.xcom["stdin"] == "/dev/null" and hot.xcom["date"].startswith("2024-03-05")
    log = warm_attempt.log_path.read_text()
    assert log.startswith("--- isolate attempt\n") and "start: warm" in log
    assert "hello from the task" in log and "--- isolate outcome: success" in log
    assert "start: warm" not in cold_attempt.log_path.read_text()


def test_a_warm_attempt_times_out_like_a_cold_one(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(PROBE, callable="probe:slow", execution_timeout=0.5)
    started = time.monotonic()
    outcome = warm(attempt)
    assert outcome.timed_out and not outcome.ok
    assert time.monotonic() - started < 10
    assert not psutil.pid_exists(outcome.pid) or psutil.Process(outcome.pid).status() == "zombie"


def test_a_spare_that_died_is_noticed_and_leaves_nothing(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(PROBE, callable="probe:probe")
    spare = spawn(SpareKind.of(attempt))
    os.kill(spare.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert start_warm(attempt, spare, reader_gid=None) is None
    assert not attempt.log_path.exists()  # the cold start that follows makes it
    outcome = run(attempt)
    assert outcome.ok and "start: warm" not in attempt.log_path.read_text()


def test_only_plain_python_attempts_are_warm_started(make_attempt: MakeAttempt) -> None:
    assert warm_start_possible(make_attempt(PROBE, callable="probe:probe"))
    assert warm_start_possible(make_attempt(PROBE, kind="callback", callable="probe:probe"))
    command = {"kind": "command", "callable": None}
    assert warm_start_possible(make_attempt(PROBE, command=["true"], **command))
    assert warm_start_possible(make_attempt(PROBE, command="echo $HOME | wc -c", **command))
    for overrides in (
        {"kwargs": {"when": "{{ ds }}"}},
        {"args": [["x", {"y": "{% if true %}1{% endif %}"}]]},
        {"env_vars": {"GREETING": "{{ dag_id }}"}},
        {"env_vars": {"PYTHONPATH": "/tmp"}},
        {"env_vars": {"LC_ALL": "C"}},
        {"env_vars": {"TZ": "Europe/Paris"}},
        {"kind": "command", "command": ["echo", "{{ ds }}"], "callable": None},
        {"kind": "command", "command": "echo {{ ds }}", "callable": None},
    ):
        fields: dict[str, Any] = {"callable": "probe:probe", **overrides}
        assert not warm_start_possible(make_attempt(PROBE, **fields))


def test_the_pool_keeps_one_spare_per_kind_wanted_and_stops_the_rest(
    make_attempt: MakeAttempt,
) -> None:
    first = SpareKind.of(make_attempt(PROBE, callable="probe:probe"))
    second = SpareKind.of(make_attempt(PROBE, callable="probe:probe", limits=Limits(cpu_time=60)))
    pool = SparePool(capacity=1, idle_seconds=60)
    try:
        assert pool.take(first) is None  # a cold launch: the kind is wanted from now on
        pool.replenish()
        pool.replenish()
        (spare,) = pool.idle
        assert spare.kind == first and spare.alive()
        assert pool.take(second) is None
        pool.replenish()  # capacity 1: the most recently wanted kind gets the spare
        assert [s.kind for s in pool.idle] == [second]
        assert not _running(spare.pid)
        taken = pool.take(second)
        assert taken is not None and pool.idle == []
        taken.stop()
        pool.idle_seconds = 0.0
        time.sleep(0.01)
        pool.replenish()  # nobody wanted anything since: nothing is started
        assert pool.idle == []
        pool.idle_seconds = 60
        pool.take(first)
        pool.replenish()
        pids = [s.pid for s in pool.idle]
    finally:
        pool.close()
    assert pool.idle == [] and pids and not any(_running(pid) for pid in pids)


def test_an_idle_spare_exits_when_its_supervisor_goes(make_attempt: MakeAttempt) -> None:
    spare = spawn(SpareKind.of(make_attempt(PROBE, callable="probe:probe")))
    time.sleep(0.3)  # in the bootstrap, waiting
    spare.control.close()  # what the end of the supervisor does to the socket
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and spare.alive():
        time.sleep(0.02)
    assert not _running(spare.pid)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(autouse=True)
def _no_spares_left() -> Any:
    yield
    left = [
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE
    ]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"processes left behind: {left}"


def test_a_warm_command_becomes_the_command_in_the_work_dir(make_attempt: MakeAttempt) -> None:
    script = "echo cwd=$(pwd) home=$HOME ds=$ISOLATE_CTX_DS; ls /proc/self/fd | wc -l; exit 3"
    attempt = make_attempt(PROBE, kind="command", command=script, callable=None)
    outcome = warm(attempt)
    assert outcome.exit_code == 3 and not outcome.ok and outcome.start_error is None
    log = attempt.log_path.read_text()
    work = attempt.work_dir
    assert f"cwd={work} home={work} ds=2024-03-05" in log and "start: warm" in log
    # stdio, and the fd ls itself opens: nothing of the spare's (socket, context, pipes).
    assert "\n4\n" in log


def test_a_warm_command_that_cannot_start_says_why(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(PROBE, kind="command", command=["no-such-command-x"], callable=None)
    outcome = warm(attempt)
    assert outcome.exit_code == 127 and not outcome.ok
    assert outcome.start_error is not None and "no-such-command-x" in outcome.start_error
    assert "could not start the task" in attempt.log_path.read_text()
