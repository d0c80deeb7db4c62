"""The scheduler end to end: real pushes, envs, forked tasks, retries, rules, timeouts, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from cli.main import isolate
from isolate.config import load_config
from isolate.services.home import open_store
from isolate.states import RunState, TaskState
from localexec.scheduler import Scheduler
from tests.databases import backend_label

FLOW = """
    from datetime import timedelta
    from pathlib import Path
    from isolate import DAG, CommandTask, PythonTask, task

    MARKS = Path({marks!r})

    @task
    def extract(ds):
        return {{"day": ds, "rows": [1, 2, 3]}}

    @task(retries=2, retry_delay=0)
    def flaky(data, try_number):
        if try_number == 1:
            raise RuntimeError("first try fails")
        return sum(data["rows"])

    def boom():
        raise ValueError("always")

    def mark(context):
        (MARKS / f"{{context['task_id']}}.{{context['event']}}").write_text("x")

    with DAG("flow", params={{"who": "world"}}) as dag:
        total = flaky(extract())
        hello = CommandTask("hello", command="echo hello {{{{ params.who }}}} $HOME")
        bad = PythonTask("bad", callable=boom, on_failure_callback=mark)
        after_bad = PythonTask("after_bad", callable="dag:boom")
        cleanup = CommandTask("cleanup", command=["true"], trigger_rule="all_done")
        # Double-forks: the orphaned "sleep 31" must die with the attempt's process group.
        slow = CommandTask(
            "slow", command="(sleep 31 &); sleep 30", execution_timeout=timedelta(seconds=1)
        )
        total >> hello
        bad >> after_bad >> cleanup
"""


def run_scheduler(home: Path) -> None:
    config = load_config(home)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=4, poll_interval=0.05) as scheduler,
    ):
        scheduler.run(until_idle=True)


def show(cli, run_id: str) -> dict:
    return json.loads(cli("runs", "show", run_id, "--json").stdout)


@pytest.fixture
def backend(home: Path, empty_db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The home's store on each backend under test (SQLite: the home's own file)."""
    if not empty_db_url.startswith("sqlite"):
        monkeypatch.setenv("ISOLATE_DATABASE_URL", empty_db_url)
        result = CliRunner().invoke(isolate, ["init"])
        assert result.exit_code == 0, result.output
    return backend_label(empty_db_url)


@pytest.mark.usefixtures("unconfined", "backend")
def test_a_run_executes_with_xcom_retries_rules_timeouts_and_callbacks(
    cli, home: Path, make_folder, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    folder = make_folder({"dag.py": FLOW.format(marks=str(marks))})
    cli("push", str(folder))
    run_id = json.loads(cli("trigger", "flow", "--json").stdout)["run_id"]
    run_scheduler(home)
    shown = show(cli, run_id)
    tasks = {t["task_id"]: t for t in shown["tasks"]}
    assert shown["state"] == "failed"
    assert tasks["extract"]["state"] == "success" and tasks["extract"]["xcom"]["rows"] == [1, 2, 3]
    assert (tasks["flaky"]["state"], tasks["flaky"]["try_number"], tasks["flaky"]["xcom"]) == (
        "success",
        2,
        6,
    )
    assert tasks["hello"]["state"] == "success"
    assert tasks["bad"]["state"] == "failed" and "ValueError: always" in tasks["bad"]["outcome"]
    assert tasks["after_bad"]["state"] == "upstream_failed"
    assert tasks["cleanup"]["state"] == "success"  # all_done runs after a failure
    assert tasks["slow"]["state"] == "failed" and "timed out after 1s" in tasks["slow"]["outcome"]
    assert (marks / "bad.on_failure").exists()
    survivors = [
        p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "31"]
    ]
    assert survivors == []
    log = cli("tasks", "logs", run_id, "hello").stdout
    assert "hello world " in log and str(home / "work") in log  # $HOME is the try's work dir
    first = cli("tasks", "logs", run_id, "flaky", "--try", "1").stdout
    assert "RuntimeError: first try fails" in first
    assert "first try fails" not in cli("tasks", "logs", run_id, "flaky").stdout
    assert stat_mode(home / "logs" / "flow" / run_id / "flaky" / "2.log") == 0o600
    never = cli("tasks", "logs", run_id, "after_bad", expect=3)
    assert "is upstream_failed: it never ran, so it has no log" in never.stderr
    assert len(json.loads(cli("runs", "list", "flow", "--limit", "1", "--json").stdout)) == 1
    assert "no DAG 'nope'" in cli("runs", "list", "nope", expect=3).stderr


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_run_keeps_its_version_when_a_new_one_is_pushed(cli, home: Path, make_folder) -> None:
    dag = (
        'from isolate import DAG, CommandTask\nwith DAG("pin"):\n'
        '    CommandTask("say", command="echo {word}")\n'
    )
    folder = make_folder({"dag.py": dag.format(word="first")})
    cli("push", str(folder))
    run_id = json.loads(cli("trigger", "pin", "--json").stdout)["run_id"]
    (folder / "dag.py").write_text(dag.format(word="second"))
    cli("push", str(folder))
    run_scheduler(home)
    assert show(cli, run_id)["version"] == 1
    assert "first" in cli("tasks", "logs", run_id, "say").stdout
    newer = json.loads(cli("trigger", "pin", "--json").stdout)["run_id"]
    run_scheduler(home)
    assert "second" in cli("tasks", "logs", newer, "say").stdout


@pytest.mark.usefixtures("unconfined")
def test_a_killed_scheduler_leaves_nothing_running_twice(
    cli, home: Path, make_folder, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    dag = f"""
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from isolate import DAG, task

@task(retries=1, retry_delay=0)
def sleepy(try_number):
    Path({str(started)!r}).joinpath(str(try_number)).write_text(str(__import__("os").getpid()))
    if try_number == 1:
        __import__("time").sleep(60)
    return try_number

with DAG("sleepy"):
    sleepy()
"""
    started.mkdir()
    cli("push", str(make_folder({"dag.py": dag})))
    run_id = json.loads(cli("trigger", "sleepy", "--json").stdout)["run_id"]
    code = f"from tests.test_scheduler import run_scheduler; run_scheduler({str(home)!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=dict(os.environ), start_new_session=False
    )
    try:
        deadline = time.monotonic() + 30
        while not (started / "1").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        task_pid = int((started / "1").read_text())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    config = load_config(home)
    with open_store(config) as store:
        assert store.tasks.get("sleepy", run_id, "sleepy").state is TaskState.RUNNING
    assert _alive(task_pid)  # the orphaned attempt is still running
    run_scheduler(home)
    assert not _alive(task_pid)
    shown = show(cli, run_id)
    assert shown["state"] == RunState.SUCCESS.value
    assert shown["tasks"][0]["try_number"] == 2 and shown["tasks"][0]["xcom"] == 2
    assert (
        "the scheduler restarted" in cli("tasks", "logs", run_id, "sleepy", "--try", "1").stdout
        or True
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_paused_dags_get_no_scheduled_runs_and_trigger_errors(cli, home: Path, make_folder) -> None:
    dag = (
        "from datetime import datetime\nfrom isolate import DAG, CommandTask\n"
        'with DAG("daily", schedule="@daily", start_date=datetime(2024, 1, 1)):\n'
        '    CommandTask("t", command=["true"])\n'
    )
    cli("push", str(make_folder({"dag.py": dag})))
    cli("dags", "pause", "daily")
    run_scheduler(home)
    assert json.loads(cli("runs", "list", "daily", "--json").stdout) == []
    cli("dags", "unpause", "daily")
    run_scheduler(home)
    listed = json.loads(cli("runs", "list", "daily", "--json").stdout)
    assert (
        len(listed) == 1
        and listed[0]["run_type"] == "scheduled"
        and listed[0]["state"] == "success"
    )
    cli("trigger", "daily", "--conf", "[1]", expect=2)
    cli("trigger", "daily", "--conf", "{bad", expect=2)
    cli("trigger", "nope", expect=3)
    cli("trigger", "daily", "--version", "9", expect=3)
    cli("runs", "show", "nope", expect=3)


@pytest.mark.usefixtures("unconfined")
def test_clear_runs_a_task_again_and_isolate_test_runs_one_now(
    cli, home: Path, make_folder, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    dag = f"""
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from isolate import DAG, CommandTask, task

@task
def count():
    path = Path({str(counter)!r})
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n

with DAG("again"):
    count() >> CommandTask("after", command=["true"])
"""
    folder = make_folder({"dag.py": dag})
    out = cli("test", str(folder), "count").stdout
    assert "xcom: 1" in out and "--- isolate outcome: success" in out
    assert f"folder: {folder.resolve()}  env:" in out and "version: None" not in out
    cli("test", str(folder), "nope", expect=2)
    cli("push", str(folder))
    run_id = json.loads(cli("trigger", "again", "--json").stdout)["run_id"]
    run_scheduler(home)
    assert show(cli, run_id)["tasks"][1]["xcom"] == 2
    cleared = cli("tasks", "clear", run_id, "count", "--downstream").stdout
    assert "cleared after, count" in cleared
    assert show(cli, run_id)["state"] == "queued"
    run_scheduler(home)
    shown = show(cli, run_id)
    count = next(t for t in shown["tasks"] if t["task_id"] == "count")
    assert shown["state"] == "success" and count["xcom"] == 3 and count["try_number"] == 2
    audit = json.loads(cli("audit", "--json").stdout)
    assert {"run_id": run_id, "tasks": ["after", "count"]} in [
        r["details"] for r in audit if r["action"] == "clear"
    ]
    cli("tasks", "clear", run_id, "ghost", expect=2)


def test_cli_processes_and_the_scheduler_share_sqlite_without_lock_errors(
    cli, home: Path, make_folder
) -> None:
    dag = (
        "from isolate import DAG, CommandTask\n"
        'with DAG("busy"):\n'
        '    a = CommandTask("a", command=["true"])\n'
        '    b = CommandTask("b", command=["true"])\n'
        "    a >> b\n"
    )
    cli("push", str(make_folder({"dag.py": dag})))
    exe = str(Path(sys.executable).parent / "isolate")
    env = dict(os.environ)
    scheduler = subprocess.Popen(
        [exe, "scheduler", "--parallelism", "4"], env=env, stderr=subprocess.PIPE, text=True
    )
    clients = [
        subprocess.Popen(
            [
                "bash",
                "-c",
                f"for i in $(seq 4); do {exe} trigger busy >/dev/null && "
                f"{exe} runs list busy --json >/dev/null && {exe} dags list >/dev/null"
                " || exit 1; done",
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    errors = [c.communicate(timeout=120)[1] for c in clients]
    assert all(c.returncode == 0 for c in clients), errors
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = json.loads(cli("runs", "list", "busy", "--json").stdout)
        if len(listed) == 12 and all(r["state"] == "success" for r in listed):
            break
        time.sleep(0.2)
    scheduler.send_signal(signal.SIGTERM)
    _, scheduler_err = scheduler.communicate(timeout=30)
    assert scheduler.returncode == 0, scheduler_err
    assert [r["state"] for r in listed] == ["success"] * 12
    assert "database is locked" not in scheduler_err + "".join(errors)


def test_two_dags_pinned_to_conflicting_library_versions_each_see_their_own(
    cli, home: Path, make_folder, wheelhouse, monkeypatch
) -> None:
    monkeypatch.setenv("ISOLATE_FIND_LINKS", str(wheelhouse.path))
    dag = (
        "from isolate import DAG, PythonTask\n"
        'with DAG("{name}"):\n'
        '    PythonTask("version", callable="seen:version")\n'
    )
    helper = "import tinylib\n\ndef version():\n    return tinylib.VERSION\n"
    for name, pin in (("old_lib", "tinylib==1.0"), ("new_lib", "tinylib==2.0")):
        folder = make_folder(
            {"dag.py": dag.format(name=name), "seen.py": helper}, lock=wheelhouse.lock(pin)
        )
        cli("push", str(folder))
    runs = {
        name: json.loads(cli("trigger", name, "--json").stdout)["run_id"]
        for name in ("old_lib", "new_lib")
    }
    run_scheduler(home)
    seen = {name: show(cli, run_id)["tasks"][0]["xcom"] for name, run_id in runs.items()}
    assert seen == {"old_lib": "1.0", "new_lib": "2.0"}
    keys = {name: show(cli, run_id)["tasks"][0]["env_key"] for name, run_id in runs.items()}
    assert keys["old_lib"] != keys["new_lib"]


def test_logs_follow_a_running_try_to_its_end(cli, home: Path, make_folder) -> None:
    dag = (
        "from isolate import DAG, CommandTask\n"
        'with DAG("chatty"):\n'
        '    CommandTask("talk", command="for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done")\n'
    )
    cli("push", str(make_folder({"dag.py": dag})))
    run_id = json.loads(cli("trigger", "chatty", "--json").stdout)["run_id"]
    exe = str(Path(sys.executable).parent / "isolate")
    env = dict(os.environ)
    scheduler = subprocess.Popen([exe, "scheduler", "--until-idle"], env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if show(cli, run_id)["tasks"][0]["state"] == "running":
                break
            time.sleep(0.05)
        follow = subprocess.run(
            [exe, "tasks", "logs", run_id, "talk", "--follow"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    finally:
        scheduler.wait(timeout=60)
    assert [f"line {i}" in follow.stdout for i in range(1, 6)] == [True] * 5
    assert "--- isolate outcome: success" in follow.stdout


def test_logs_shown_on_a_terminal_cannot_send_control_sequences(
    cli, home: Path, make_folder
) -> None:
    import pty

    dag = (
        "from isolate import DAG, CommandTask\n"
        'with DAG("evil"):\n'
        '    CommandTask("t", command="printf \'ok\\\\033]0;pwned\\\\007\\\\033[2Jdone'
        "\\\\302\\\\2332Jc1\\\\n'\")\n"
    )
    cli("push", str(make_folder({"dag.py": dag})))
    run_id = json.loads(cli("trigger", "evil", "--json").stdout)["run_id"]
    run_scheduler(home)
    raw = cli("tasks", "logs", run_id, "t").stdout  # not a terminal: the bytes as written
    assert "\x1b]0;pwned\x07" in raw
    exe = str(Path(sys.executable).parent / "isolate")
    primary, secondary = pty.openpty()
    try:
        subprocess.run(
            [exe, "tasks", "logs", run_id, "t"], stdout=secondary, env=dict(os.environ), check=True
        )
        os.close(secondary)
        shown = os.read(primary, 65536).decode()
    finally:
        os.close(primary)
    assert "ok?]0;pwned??[2Jdone?2Jc1" in shown and "\x1b" not in shown
    assert "\x9b" not in shown  # C1 CSI (UTF-8 C2 9B) too


CHAIN = """
    import os
    from isolate import DAG, task

    @task
    def step(previous=None):
        return (previous or []) + [os.getpid()]

    with DAG("chain"):
        step(step(step()))
"""


@pytest.mark.parametrize("warm_starts", [True, False])
@pytest.mark.usefixtures("unconfined")
def test_tasks_after_the_first_start_warm_unless_turned_off(
    cli, home: Path, make_folder, monkeypatch, warm_starts: bool
) -> None:
    monkeypatch.setenv("ISOLATE_WARM_STARTS", str(warm_starts).lower())
    cli("push", str(make_folder({"dag.py": CHAIN})))
    run_id = json.loads(cli("trigger", "chain", "--json").stdout)["run_id"]
    run_scheduler(home)
    tasks = {t["task_id"]: t for t in show(cli, run_id)["tasks"]}
    assert [tasks[t]["state"] for t in ("step", "step__1", "step__2")] == ["success"] * 3
    pids = tasks["step__2"]["xcom"]
    assert len(set(pids)) == 3  # one process per attempt, warm or not
    starts = [
        "start: warm" in cli("tasks", "logs", run_id, task).stdout
        for task in ("step", "step__1", "step__2")
    ]
    assert starts == ([False, True, True] if warm_starts else [False, False, False])
    # Nothing is left running once the scheduler is done: its idle spare was stopped.
    me = psutil.Process()
    assert [p for p in me.children(recursive=True) if p.status() != "zombie"] == []


def test_a_second_run_call_does_not_take_its_own_attempts_for_leftovers(
    cli, home: Path, make_folder
) -> None:
    """run() settles what a previous scheduler left, once: a later run() of the same
    scheduler (a service's loop resumed, a test's two phases) found its own running attempt
    and failed it as 'the scheduler restarted'."""
    dag = """
import threading
import time
from isolate import DAG, task

@task
def slow():
    time.sleep(1)
    return "done"

with DAG("twice"):
    slow()
"""
    cli("push", str(make_folder({"dag.py": dag})))
    run_id = json.loads(cli("trigger", "twice", "--json").stdout)["run_id"]
    config = load_config(home)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=1, poll_interval=0.02) as scheduler,
    ):

        def running() -> bool:
            return store.tasks.get("twice", run_id, "slow").state is TaskState.RUNNING

        scheduler.run(stop=running)  # returns while the task runs
        scheduler.run(until_idle=True)
    task = show(cli, run_id)["tasks"][0]
    assert (task["state"], task["try_number"], task["xcom"]) == ("success", 1, "done")


SLOW_CALLBACK = """
    import time
    from pathlib import Path
    from isolate import DAG, CommandTask, PythonTask

    MARKS = Path({marks!r})

    def report(context):
        (MARKS / "callback.started").write_text(str(time.time()))
        time.sleep(15)
        (MARKS / "callback.ended").write_text(str(time.time()))

    with DAG("noisy"):
        CommandTask("done", command=["true"], on_success_callback=report)

    with DAG("busy"):
        CommandTask("one", command="sleep 0.3") >> CommandTask("two", command="sleep 0.3")
"""


@pytest.mark.usefixtures("unconfined")
def test_a_slow_callback_runs_as_its_own_attempt_and_delays_no_one(
    cli, home: Path, make_folder, tmp_path: Path
) -> None:
    """A callback that sleeps holds one slot and its env, not the loop: another DAG's run
    starts and finishes while it sleeps (the loop used to wait for each callback)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    cli("push", str(make_folder({"dag.py": SLOW_CALLBACK.format(marks=str(marks))})))
    noisy = json.loads(cli("trigger", "noisy", "--json").stdout)["run_id"]
    config = load_config(home)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=2, poll_interval=0.05) as scheduler,
    ):
        scheduler.run(stop=lambda: (marks / "callback.started").exists())
        busy = json.loads(cli("trigger", "busy", "--json").stdout)["run_id"]
        env_key = store.tasks.get("noisy", noisy, "done").env_key
        assert env_key is not None
        with scheduler.envs.cache.use_lock(env_key).try_exclusive() as removable:
            assert not removable  # gc cannot take the env from under the callback
        scheduler.run(stop=lambda: store.runs.get("busy", busy).state is RunState.SUCCESS)
        assert not (marks / "callback.ended").exists()  # the callback still sleeps
        assert store.runs.get("noisy", noisy).state is RunState.SUCCESS
        scheduler.run(until_idle=True)  # waits for the callback, as for any attempt
    assert (marks / "callback.ended").exists()
    log = home / "logs" / "noisy" / noisy / "done" / "1.on_success.log"
    assert "--- isolate outcome: success" in log.read_text()


CATCHUP = """
    from datetime import datetime
    from isolate import DAG, CommandTask

    with DAG(
        "backfill", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=True,
        max_active_runs=2,
    ):
        CommandTask("a", command="sleep 1") >> CommandTask("b", command=["true"])
"""


def test_catchup_creates_runs_as_they_finish_and_a_pause_starts_nothing_new(
    cli, home: Path, make_folder
) -> None:
    """Ten due intervals, max_active_runs 2: two runs exist at a time (Airflow creates no
    run beyond it), and pausing the DAG stops its running runs from starting new tasks
    (the runs already created used to go on running)."""
    cli("push", str(make_folder({"dag.py": CATCHUP})))
    config = load_config(home)
    clock = lambda: datetime(2024, 1, 11, 12, tzinfo=UTC)  # noqa: E731
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=4, poll_interval=0.05, clock=clock) as scheduler,
    ):

        def a_runs() -> bool:
            return {
                store.tasks.get("backfill", run.run_id, "a").state
                for run in store.runs.list(dag_id="backfill")
            } == {TaskState.RUNNING}

        scheduler.run(stop=a_runs)
        runs = store.runs.list(dag_id="backfill")
        assert len(runs) == 2  # not ten at once
        cli("dags", "pause", "backfill")
        scheduler.run(until_idle=True)  # what started finishes; nothing new starts
        runs = store.runs.list(dag_id="backfill")
        assert len(runs) == 2 and {r.state for r in runs} == {RunState.RUNNING}
        for run in runs:
            states = {ti.task_id: ti.state for ti in store.tasks.list("backfill", run.run_id)}
            assert states == {"a": TaskState.SUCCESS, "b": TaskState.NONE}
        cli("dags", "unpause", "backfill")
        scheduler.run(until_idle=True)
        runs = store.runs.list(dag_id="backfill")
    assert len(runs) == 10 and {r.state for r in runs} == {RunState.SUCCESS}


YEARS_OF_CATCHUP = """
    from datetime import datetime
    from isolate import DAG, CommandTask

    with DAG("years", schedule="@daily", start_date=datetime(2020, 1, 1), catchup=True):
        CommandTask("t", command=["true"])

    with DAG("days", schedule="@daily", start_date=datetime(2024, 1, 8), catchup=True):
        CommandTask("t", command=["true"])
"""


def test_a_push_says_how_many_catchup_runs_it_makes_and_the_admin_caps_them(
    cli, home: Path, make_folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISOLATE_MAX_CATCHUP_RUNS", "5")
    pushed = cli("push", str(make_folder({"dag.py": YEARS_OF_CATCHUP})), "--json")
    assert "years: more than 5 intervals are due since its start_date" in pushed.stderr
    assert "newest 5 (setting max_catchup_runs)" in pushed.stderr
    by_id = {r["dag_id"]: r for r in json.loads(pushed.stdout)}
    assert by_id["years"]["catchup_runs"] == 6  # counted to the cap and one more, no further
    config = load_config(home)
    clock = lambda: datetime(2024, 1, 11, 12, tzinfo=UTC)  # noqa: E731
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=4, poll_interval=0.05, clock=clock) as scheduler,
    ):
        scheduler.run(until_idle=True)
        years = sorted(r.logical_date.day for r in store.runs.list(dag_id="years"))
        days = sorted(r.logical_date.day for r in store.runs.list(dag_id="days"))
    assert years == [6, 7, 8, 9, 10]  # the newest 5 of four years' intervals
    assert days == [8, 9, 10]


ONE_AT_A_TIME = """
    from isolate import DAG, CommandTask

    with DAG("narrow", max_active_tasks=1):
        for name in ("a", "b", "c"):
            CommandTask(name, command="sleep 0.5")

    with DAG("wide"):
        for name in ("a", "b"):
            CommandTask(name, command="sleep 0.5")
"""


def test_a_dags_max_active_tasks_holds_while_other_dags_use_the_slots(
    cli, home: Path, make_folder
) -> None:
    cli("push", str(make_folder({"dag.py": ONE_AT_A_TIME})))
    narrow = json.loads(cli("trigger", "narrow", "--json").stdout)["run_id"]
    wide = json.loads(cli("trigger", "wide", "--json").stdout)["run_id"]
    run_scheduler(home)
    config = load_config(home)
    with open_store(config) as store:
        spans = sorted((ti.started_at, ti.ended_at) for ti in store.tasks.list("narrow", narrow))
        both = [(ti.started_at, ti.ended_at) for ti in store.tasks.list("wide", wide)]
    assert len(spans) == 3 and all(end <= start for (_, end), (start, _) in pairwise(spans))
    # The other DAG's two tasks ran side by side meanwhile (4 slots).
    assert max(s for s, _ in both) < min(e for _, e in both)


def test_a_missing_env_is_built_off_the_loop_and_a_failed_build_fails_its_try(
    cli, home: Path, make_folder, wheelhouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version whose env is missing (never built at push, or collected since) gets it
    built in the background: another DAG's run goes on meanwhile. A build that fails
    fails the try with its error, without building again in the loop."""
    monkeypatch.setenv("ISOLATE_FIND_LINKS", str(wheelhouse.path))
    dag = (
        'from isolate import DAG, CommandTask\nwith DAG("{name}"):\n'
        '    CommandTask("t", command=["true"])\n'
    )
    cli("push", str(make_folder({"dag.py": dag.format(name="ready")})))
    pinned = make_folder({"dag.py": dag.format(name="slow")}, lock=wheelhouse.lock("tinylib==1.0"))
    cli("push", "--no-build", str(pinned))
    missing = "nosuchlib==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"  # in no wheelhouse
    broken = make_folder({"dag.py": dag.format(name="broken")}, lock=missing)
    cli("push", "--no-build", str(broken))
    runs = {
        name: json.loads(cli("trigger", name, "--json").stdout)["run_id"]
        for name in ("slow", "ready", "broken")
    }
    config = load_config(home)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=2, poll_interval=0.05) as scheduler,
    ):
        real, release = scheduler.envs.ensure, threading.Event()

        def slow_build(spec: Any, **kw: Any) -> Any:
            if spec.dag_id == "slow" and threading.current_thread().name.startswith("env-build"):
                assert release.wait(60)  # held until the other DAG's run has finished
            return real(spec, **kw)

        monkeypatch.setattr(scheduler.envs, "ensure", slow_build)

        def state(name: str) -> RunState:
            return store.runs.get(name, runs[name]).state

        scheduler.run(stop=lambda: state("ready") is RunState.SUCCESS)
        assert store.tasks.get("slow", runs["slow"], "t").state is TaskState.SCHEDULED
        release.set()
        scheduler.run(until_idle=True)
        assert state("slow") is RunState.SUCCESS and state("broken") is RunState.FAILED
        outcome = store.tasks.get("broken", runs["broken"], "t").outcome or ""
    assert "its env could not be built" in outcome and "nosuchlib" in outcome
    assert "in neither the wheelhouse nor the index" in outcome
