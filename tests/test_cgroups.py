"""A cgroup per attempt: real cgroups of this host, real forks, real escapes."""

# The fixtures come from a shared module; pyflakes sees their use as arguments as
# redefinitions of the imported names.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from isolate.model import Limits
from localexec.cgroups import AttemptCgroup, Hierarchies, detect, reap_leftovers, release, sweep
from localexec.executor import Executor
from localexec.spares import SpareKind, spawn, start_warm
from localexec.supervisor import start, wait
from tests.localexec_support import (  # noqa: F401 - fixtures
    MakeAttempt,
    env_python,
    make_attempt,
    runtime,
)

TASKS = {
    "tasks.py": """
        import os, subprocess

        def where():
            return open("/proc/self/cgroup").read()

        def fork_many(n):
            started, refused = [], 0
            for _ in range(n):
                try:
                    started.append(subprocess.Popen(["sleep", "5"]))
                except OSError:
                    refused += 1
            for child in started:
                child.kill()
                child.wait()
            return {"started": len(started), "refused": refused}
    """
}


@pytest.fixture
def hierarchies(tmp_path: Path) -> Iterator[Hierarchies]:
    found, why = detect(tmp_path)
    if found is None:
        pytest.skip(f"no cgroups for attempts on this host: {why}")
    try:
        yield found
    finally:
        release(found)
        assert not found.unified.exists(), "the node's cgroup parent was left behind"


def escapees() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "31"]]


def test_a_task_that_leaves_its_session_still_dies_with_its_attempt(
    hierarchies: Hierarchies, make_attempt: MakeAttempt
) -> None:
    # setsid: the daemon is in no group of the attempt's; only the cgroup still holds it.
    command = "setsid sleep 31 < /dev/null > /dev/null 2>&1 & sleep 30"
    attempt = make_attempt(
        TASKS, kind="command", command=command, callable=None, execution_timeout=1
    )
    cgroup = Executor(1, cgroups=hierarchies).cgroup_for(attempt)
    assert cgroup is not None
    try:
        outcome = wait(start(attempt, cgroup=cgroup))
        assert outcome.timed_out
        assert escapees() == []
        assert not any(path.exists() for path in cgroup.dirs)  # removed once empty
    finally:
        for process in escapees():
            process.kill()


def test_without_a_cgroup_the_same_escape_survives(make_attempt: MakeAttempt) -> None:
    """The reason for cgroups, shown: a process group alone does not hold a setsid daemon."""
    command = "setsid sleep 31 < /dev/null > /dev/null 2>&1 & sleep 30"
    attempt = make_attempt(
        TASKS, kind="command", command=command, callable=None, execution_timeout=1
    )
    try:
        assert wait(start(attempt)).timed_out
        time.sleep(0.2)
        assert len(escapees()) == 1
    finally:
        for process in escapees():
            process.kill()


def test_the_process_limit_counts_the_attempts_processes(
    hierarchies: Hierarchies, make_attempt: MakeAttempt
) -> None:
    if hierarchies.pids is None:
        pytest.skip("no pids controller for attempts on this host")
    attempt = make_attempt(TASKS, callable="tasks:fork_many", args=[20])
    cgroup = AttemptCgroup.create(hierarchies, "capped", Limits(processes=8))
    assert (hierarchies.pids / "capped" / "pids.max").read_text().strip() == "8"
    outcome = wait(start(attempt, cgroup=cgroup))
    assert outcome.ok, attempt.log_path.read_text()
    # The task process itself counts: at most 7 children at once (as root, RLIMIT_NPROC
    # would not have stopped any).
    assert outcome.xcom["started"] <= 7 and outcome.xcom["refused"] >= 13


def test_memory_is_capped_in_the_cgroup(hierarchies: Hierarchies) -> None:
    if hierarchies.memory is None:
        pytest.skip("no memory controller for attempts on this host")
    cgroup = AttemptCgroup.create(hierarchies, "memory", Limits(memory=64 << 20))
    try:
        knobs = [hierarchies.memory / "memory" / k for k in ("memory.max", "memory.limit_in_bytes")]
        (knob,) = [k for k in knobs if k.exists()]
        assert int(knob.read_text()) == 64 << 20
    finally:
        cgroup.remove()


def test_a_warm_started_attempt_runs_in_the_cgroup_its_spare_started_in(
    hierarchies: Hierarchies, make_attempt: MakeAttempt
) -> None:
    attempt = make_attempt(TASKS, callable="tasks:where")
    cgroup = AttemptCgroup.create(hierarchies, "warm", Limits())
    spare = spawn(SpareKind.of(attempt), cgroup)
    running = start_warm(attempt, spare, reader_gid=None)
    assert running is not None
    outcome = wait(running)
    assert outcome.ok, attempt.log_path.read_text()
    lines = outcome.xcom.splitlines()
    assert any(line.endswith(f"/{hierarchies.unified.name}/warm") for line in lines)


def test_sweep_removes_only_empty_attempt_cgroups(hierarchies: Hierarchies) -> None:
    empty = AttemptCgroup.create(hierarchies, "left-empty", Limits())
    busy = AttemptCgroup.create(hierarchies, "left-busy", Limits())
    pid = os.fork()
    if pid == 0:
        try:
            busy.join()
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while pid not in busy.pids():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert sweep(hierarchies) == len(empty.dirs)
        assert all(not path.exists() for path in empty.dirs)
        assert all(path.exists() for path in busy.dirs)
    finally:
        busy.remove()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_starting_scheduler_kills_what_a_stopped_one_left_in_its_cgroups(
    hierarchies: Hierarchies,
) -> None:
    """A daemon that left its attempt's session outlives the scheduler that started it; the
    next one's start ends it (Scheduler.recover only reaches the process group)."""
    left = AttemptCgroup.create(hierarchies, "left-running", Limits())
    # In a session of its own, as a double-forked daemon would be.
    daemon = subprocess.Popen(["sleep", "33"], preexec_fn=left.join, start_new_session=True)
    empty = AttemptCgroup.create(hierarchies, "left-empty", Limits())
    try:
        assert daemon.pid in left.pids()
        assert reap_leftovers(hierarchies) == 1
        assert daemon.wait(timeout=10) == -signal.SIGKILL
        assert not any(path.exists() for path in (*left.dirs, *empty.dirs))
    finally:
        daemon.kill()
        daemon.wait()
        left.remove()
        empty.remove()
