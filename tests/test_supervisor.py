"""The supervisor with real forks and real task processes in a real env (no process mocks)."""

# The fixtures come from a shared module; pyflakes sees their use as arguments as
# redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import psutil
import pytest

from isolate.model import Limits
from localexec.attempt import describe
from localexec.child import close_fds_except
from localexec.limits import rlimit_plan
from localexec.supervisor import run, start, wait
from localexec.templating import TemplateRenderError, renderer_for
from tests.localexec_support import (  # noqa: F401 - fixtures
    LOGICAL_DATE,
    MakeAttempt,
    env_python,
    make_attempt,
    runtime,
)

TASKS = {
    "tasks.py": """
        import os, resource, sys

        def extract():
            print("extracting")
            return {"rows": [1, 2, 3], "ok": True}

        def add(a, b, c=0):
            return a + b + c

        CONTEXT = {"dag_id", "task_id", "run_id", "logical_date", "ds", "ds_nodash", "ts",
                   "ts_nodash", "try_number", "params", "conf"}

        def echo(*args, **kwargs):  # **kwargs also receives the context: leave it out
            return {"args": list(args),
                    "kwargs": {k: v for k, v in kwargs.items() if k not in CONTEXT}}

        def named(x, ds, params, try_number, dag_id, task_id, run_id, ts, conf, logical_date):
            return [x, ds, params, try_number, dag_id, task_id, run_id, ts, conf,
                    type(logical_date).__name__, logical_date.year]

        def everything(x, **context):
            return {"x": x, "keys": sorted(context), "ds": context["ds"]}

        def bound_ds(ds):
            return ds

        def not_json():
            return {1, 2}

        def boom():
            raise ValueError("boom")

        def exits_quietly():
            sys.exit(0)

        def process_facts():
            fds = []
            for name in os.listdir("/proc/self/fd"):
                try:
                    os.fstat(int(name))
                    fds.append(int(name))
                except OSError:
                    pass  # the fd listdir itself used
            umask = os.umask(0)
            return {
                "fds": sorted(fds),
                "links": {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in fds if fd > 2},
                "stdin": os.readlink("/proc/self/fd/0"),
                "umask": umask,
                "cwd": os.getcwd(),
                "env": dict(os.environ),
                "sid_is_pid": os.getsid(0) == os.getpid(),
                "limits": {
                    "as": resource.getrlimit(resource.RLIMIT_AS)[0],
                    "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
                    "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
                    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                },
            }

        def open_many(n):
            return [open(os.devnull) for _ in range(n)] and n

        def allocate(mib):
            return len(bytearray(mib << 20))

        def big(n):
            return "x" * n

        def raw_write(n):
            # What hostile code does: find the result pipe among its own fds.
            for name in os.listdir("/proc/self/fd"):
                try:
                    if int(name) > 2 and os.readlink(f"/proc/self/fd/{name}").startswith("pipe"):
                        os.write(int(name), b"[" * n)
                except FileNotFoundError:
                    pass  # the fd listdir itself used
            return None

        def on_failure(context):
            print("callback for", context["task_id"], context["reason"], context["ds"])
            with open("callback-ran", "w") as out:
                out.write(context["reason"])
    """,
    "spawner.py": """
        import os, signal, time

        def spawn_and_sleep():
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                with open("grandchild.pid", "w") as out:
                    out.write(str(os.getpid()))
                while True:
                    time.sleep(1)
            while not os.path.exists("grandchild.pid"):
                time.sleep(0.01)
            time.sleep(60)
    """,
    "flow.py": """
        from isolate import task

        @task
        def total(rows, ds=None):
            return {"sum": sum(rows), "ds": ds}
    """,
}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- python tasks ---------------------------------------------------------------------------


def test_a_python_task_returns_its_xcom_and_logs_header_output_and_footer(
    make_attempt: MakeAttempt,
) -> None:
    attempt = make_attempt(TASKS, callable="tasks:extract")
    outcome = run(attempt)
    assert outcome.ok, outcome
    assert outcome.message == "succeeded"
    assert outcome.xcom == {"rows": [1, 2, 3], "ok": True}
    assert outcome.has_xcom and outcome.exit_code == 0 and outcome.signal is None
    log = attempt.log_path.read_text()
    assert log.startswith("--- isolate attempt\ndag: etl  run: manual__1  task: extract  try: 1")
    assert "version: 3  env: abc123" in log
    assert f"pid: {outcome.pid}  user: " in log
    assert log.index("extracting") < log.index("--- isolate outcome: success: succeeded")
    assert stat.S_IMODE(attempt.log_path.stat().st_mode) == 0o600


def test_start_reports_pid_start_time_and_group(make_attempt: MakeAttempt) -> None:
    running = start(make_attempt(TASKS, callable="tasks:extract"))
    assert running.pgid == running.pid
    assert abs(running.start_time - psutil.Process(running.pid).create_time()) < 0.01
    assert wait(running).ok


def test_upstream_xcom_references_are_substituted_anywhere(make_attempt: MakeAttempt) -> None:
    outcome = run(
        make_attempt(
            TASKS,
            callable="tasks:echo",
            args=[{"$xcom": "a"}, [{"$xcom": "b"}]],
            kwargs={"nested": {"deep": [{"$xcom": "a"}]}, "plain": {"$xcom": "b", "x": 1}},
            xcoms={"a": [1, 2], "b": {"k": "v"}},
        )
    )
    assert outcome.xcom == {
        "args": [[1, 2], [{"k": "v"}]],
        "kwargs": {"nested": {"deep": [[1, 2]]}, "plain": {"$xcom": "b", "x": 1}},
    }


def test_context_keys_are_passed_by_parameter_name(make_attempt: MakeAttempt) -> None:
    outcome = run(make_attempt(TASKS, callable="tasks:named", args=[5]))
    assert outcome.xcom == [
        5,
        "2024-03-05",
        {"x": 7},
        1,
        "etl",
        "extract",
        "manual__1",
        LOGICAL_DATE.isoformat(),
        {"who": "me"},
        "datetime",
        2024,
    ]


def test_double_star_context_gets_every_key_and_bound_names_win(make_attempt: MakeAttempt) -> None:
    outcome = run(make_attempt(TASKS, callable="tasks:everything", kwargs={"x": 1}))
    assert outcome.xcom["keys"] == sorted(
        [
            *("dag_id", "task_id", "run_id", "logical_date", "ds", "ds_nodash", "ts"),
            *("ts_nodash", "try_number", "params", "conf"),
        ]
    )
    assert outcome.xcom["ds"] == "2024-03-05"
    bound = run(make_attempt(TASKS, callable="tasks:bound_ds", args=["mine"]))
    assert bound.xcom == "mine"


def test_templated_kwargs_are_rendered_in_the_child(make_attempt: MakeAttempt) -> None:
    outcome = run(
        make_attempt(
            TASKS,
            callable="tasks:echo",
            args=["{{ ds }}"],
            kwargs={"p": "x={{ params.x }}", "up": "{{ xcom('a')['n'] + 1 }}", "n": 5},
            xcoms={"a": {"n": 41}},
        )
    )
    assert outcome.xcom == {"args": ["2024-03-05"], "kwargs": {"p": "x=7", "up": "42", "n": 5}}


def test_a_template_error_fails_before_exec_naming_the_field(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(TASKS, callable="tasks:echo", kwargs={"p": "{{ params.nope }}"})
    outcome = run(attempt)
    assert not outcome.ok
    assert outcome.exit_code == 127
    assert outcome.start_error is not None
    assert outcome.start_error.startswith("kwargs.p: template error:")
    assert "nope" in outcome.start_error
    assert outcome.message.startswith("could not start: kwargs.p: template error")
    assert "isolate: could not start the task: kwargs.p" in attempt.log_path.read_text()


def test_a_taskflow_function_importing_the_sdk_runs(make_attempt: MakeAttempt) -> None:
    outcome = run(
        make_attempt(TASKS, callable="flow:total", args=[{"$xcom": "e"}], xcoms={"e": [1, 2]})
    )
    assert outcome.xcom == {"sum": 3, "ds": "2024-03-05"}


def test_a_non_json_return_value_fails_clearly(make_attempt: MakeAttempt) -> None:
    outcome = run(make_attempt(TASKS, callable="tasks:not_json"))
    assert not outcome.ok and outcome.exit_code == 1
    assert outcome.error is not None and "not JSON-serializable" in outcome.error
    assert "never pickle" in outcome.error


def test_an_exception_exits_1_with_its_traceback_in_the_log(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(TASKS, callable="tasks:boom")
    outcome = run(attempt)
    assert outcome.exit_code == 1
    assert outcome.error == "ValueError: boom"
    assert outcome.message == "exited with 1: ValueError: boom"
    log = attempt.log_path.read_text()
    assert "Traceback (most recent call last)" in log
    assert 'raise ValueError("boom")' in log
    assert "--- isolate outcome: failed: exited with 1: ValueError: boom" in log


def test_exiting_0_without_a_result_is_a_failure(make_attempt: MakeAttempt) -> None:
    outcome = run(make_attempt(TASKS, callable="tasks:exits_quietly"))
    assert outcome.exit_code == 0 and not outcome.ok
    assert outcome.error is not None and "without sending its result" in outcome.error


def test_an_unknown_callable_fails_with_the_import_error(make_attempt: MakeAttempt) -> None:
    outcome = run(make_attempt(TASKS, callable="tasks:missing"))
    assert outcome.exit_code == 1
    assert outcome.error is not None and "missing" in outcome.error


# -- command tasks --------------------------------------------------------------------------


def test_a_command_argv_runs_with_the_env_bin_first_on_path(
    make_attempt: MakeAttempt, env_python: Path
) -> None:
    attempt = make_attempt(
        kind="command",
        command=["sh", "-c", 'which python; echo "$1 $ISOLATE_CTX_TASK_ID"', "sh", "{{ ds }}"],
    )
    outcome = run(attempt)
    assert outcome.ok, attempt.log_path.read_text()
    assert not outcome.has_xcom
    log = attempt.log_path.read_text()
    assert f"{env_python}\n" in log
    assert "2024-03-05 extract\n" in log


def test_a_command_runs_a_module_of_its_dags_folder(make_attempt: MakeAttempt) -> None:
    """``python -m module`` as docs/format.md shows it: the bundle is on PYTHONPATH."""
    files = {"report_job.py": "print('report from', __name__)"}
    attempt = make_attempt(files, kind="command", command=["python", "-m", "report_job"])
    outcome = run(attempt)
    assert outcome.ok, attempt.log_path.read_text()
    assert "report from __main__\n" in attempt.log_path.read_text()


def test_a_shell_string_runs_with_sh_and_its_exit_code_is_reported(
    make_attempt: MakeAttempt, env_python: Path
) -> None:
    attempt = make_attempt(
        kind="command", command="echo {{ params.x }} $(command -v python); exit 3"
    )
    outcome = run(attempt)
    assert outcome.exit_code == 3 and outcome.message == "exited with 3"
    assert f"7 {env_python}\n" in attempt.log_path.read_text()


def test_a_missing_command_fails_before_exec(make_attempt: MakeAttempt) -> None:
    outcome = run(make_attempt(kind="command", command=["no-such-command-here"]))
    assert outcome.exit_code == 127
    assert outcome.start_error is not None and "no-such-command-here" in outcome.start_error


# -- the process the task gets --------------------------------------------------------------


def test_the_task_process_is_clean(
    make_attempt: MakeAttempt, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISOLATE_DATABASE_URL", "postgresql://secret@db/isolate")
    monkeypatch.setenv("SECRET", "hunter2")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    leaked = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leaked, True)  # even an inheritable fd of the supervisor is closed
    try:
        attempt = make_attempt(TASKS, callable="tasks:process_facts", env_vars={"MINE": "{{ ds }}"})
        facts = run(attempt).xcom
    finally:
        os.close(leaked)
    # stdio and the result pipe (kept by the bootstrap, which also took its variable away).
    assert facts["fds"][:3] == [0, 1, 2] and len(facts["fds"]) == 4
    assert next(iter(facts["links"].values())).startswith("pipe:")
    assert facts["stdin"] == "/dev/null"
    assert facts["umask"] == 0o077
    assert facts["cwd"] == str(attempt.work_dir)
    assert facts["sid_is_pid"]
    env = facts["env"]
    assert "ISOLATE_DATABASE_URL" not in env and "SECRET" not in env
    assert "PYTHONPATH" not in env
    assert not {"ISOLATE_XCOM_FD", "ISOLATE_CTX_FD", "ISOLATE_SPARE_FD"} & set(env)
    assert env["MINE"] == "2024-03-05"
    assert env["HOME"] == str(attempt.work_dir)
    assert env["PATH"].split(":")[0] == str(attempt.python.parent)
    assert env["ISOLATE_CTX_DAG_ID"] == "etl" and env["ISOLATE_CTX_TRY_NUMBER"] == "1"


def test_resource_limits_are_applied(make_attempt: MakeAttempt) -> None:
    limits = Limits(memory=1 << 30, processes=500, cpu_time=30, open_files=64)
    facts = run(make_attempt(TASKS, callable="tasks:process_facts", limits=limits)).xcom
    assert facts["limits"] == {"as": 1 << 30, "nproc": 500, "cpu": 30, "nofile": 64}
    assert rlimit_plan(Limits()) == []


def test_the_open_files_limit_stops_the_task(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(
        TASKS, callable="tasks:open_many", args=[100], limits=Limits(open_files=32)
    )
    outcome = run(attempt)
    assert outcome.exit_code == 1
    assert outcome.error is not None and "Too many open files" in outcome.error


def test_the_memory_limit_stops_the_task(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(
        TASKS, callable="tasks:allocate", args=[1024], limits=Limits(memory=256 << 20)
    )
    outcome = run(attempt)
    assert not outcome.ok
    assert outcome.error == "MemoryError" or outcome.signal is not None, outcome


def test_a_timeout_kills_the_whole_group_including_a_grandchild(
    make_attempt: MakeAttempt,
) -> None:
    attempt = make_attempt(TASKS, callable="spawner:spawn_and_sleep", execution_timeout=1.0)
    began = time.monotonic()
    outcome = run(attempt)
    assert time.monotonic() - began < 5
    assert outcome.timed_out and not outcome.ok
    assert outcome.message in (
        "timed out after 1s and was terminated",
        "timed out after 1s and was killed",
    )
    grandchild = int((attempt.work_dir / "grandchild.pid").read_text())
    deadline = time.monotonic() + 2
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)
    assert not _alive(outcome.pid)
    assert "timed out after 1s" in attempt.log_path.read_text()


def test_an_xcom_over_the_cap_is_an_error(make_attempt: MakeAttempt) -> None:
    outcome = run(make_attempt(TASKS, callable="tasks:big", args=[5000], xcom_max_bytes=1000))
    assert not outcome.ok and outcome.xcom is None
    assert outcome.error is not None and "over the XCom limit of 1000 bytes" in outcome.error


def test_the_supervisor_caps_a_task_writing_its_pipe_directly(make_attempt: MakeAttempt) -> None:
    outcome = run(
        make_attempt(TASKS, callable="tasks:raw_write", args=[300_000], xcom_max_bytes=4096)
    )
    assert not outcome.ok and not outcome.has_xcom
    assert outcome.error == "sent a result over the 4096-byte XCom limit"


def test_a_callback_runs_in_callback_mode(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(
        TASKS,
        kind="callback",
        callable="tasks:on_failure",
        callback_context={"reason": "exited with 1"},
    )
    outcome = run(attempt)
    assert outcome.ok, attempt.log_path.read_text()
    assert (attempt.work_dir / "callback-ran").read_text() == "exited with 1"
    assert "callback for extract exited with 1 2024-03-05" in attempt.log_path.read_text()


# -- the log file and the privilege drop ----------------------------------------------------


def test_a_symlink_planted_at_the_log_path_is_not_followed(
    make_attempt: MakeAttempt, tmp_path: Path
) -> None:
    target = tmp_path / "victim"
    target.write_text("precious\n")
    attempt = make_attempt(TASKS, callable="tasks:extract")
    attempt.log_path.symlink_to(target)
    with pytest.raises(FileExistsError):
        start(attempt)
    assert target.read_text() == "precious\n"


def test_an_existing_log_is_never_reused(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(TASKS, callable="tasks:extract")
    attempt.log_path.write_text("try 1\n")
    with pytest.raises(FileExistsError):
        start(attempt)


def test_an_unknown_run_as_user_fails_closed(make_attempt: MakeAttempt) -> None:
    outcome = run(make_attempt(TASKS, callable="tasks:extract", run_as="nobody-else"))
    assert outcome.exit_code == 127
    assert outcome.start_error is not None
    assert "cannot run as 'nobody-else': no such user" in outcome.start_error


# -- small pure parts -----------------------------------------------------------------------


def test_wait_statuses_read_as_sentences() -> None:
    def say(
        exit_code: int | None, signum: int | None, timed_out: bool = False, killed: bool = False
    ) -> str:
        return describe(
            exit_code=exit_code,
            signum=signum,
            timed_out=timed_out,
            timeout=5,
            killed=killed,
            error=None,
            start_error=None,
        )

    assert say(0, None) == "succeeded"
    assert say(3, None) == "exited with 3"
    assert say(None, 9) == "killed by SIGKILL"
    assert say(None, 24) == "killed by SIGXCPU (CPU time limit reached)"
    assert say(None, 9, timed_out=True, killed=True) == "timed out after 5s and was killed"
    assert say(None, 15, timed_out=True) == "timed out after 5s and was terminated"


def test_templates_are_sandboxed_and_errors_name_the_field() -> None:
    context = {"ds": "2024-03-05", "params": {"x": 1}, "logical_date": LOGICAL_DATE.isoformat()}
    renderer = renderer_for(context, {"a": [1]})
    assert renderer.render({"k": ["{{ ds }}", {"$xcom": "a"}], "n": 1}, "kwargs") == {
        "k": ["2024-03-05", {"$xcom": "a"}],
        "n": 1,
    }
    assert renderer.render_string("{{ logical_date.year }}", "f") == "2024"
    assert renderer.render_command(["echo", "{{ xcom('a') }}"]) == ["echo", "[1]"]
    assert renderer.render_env({"V": "{{ params.x }}"}) == {"V": "1"}
    with pytest.raises(TemplateRenderError, match=r"^env.V: template error: .*undefined"):
        renderer.render_env({"V": "{{ nothing }}"})
    with pytest.raises(TemplateRenderError, match=r"^command\[1\]: xcom\('b'\): no XCom"):
        renderer.render_command(["echo", "{{ xcom('b') }}"])
    with pytest.raises(TemplateRenderError, match=r"^args\[0\]: template error: .*unsafe"):
        renderer.render(["{{ ''.__class__.__mro__ }}"], "args")
    with pytest.raises(TemplateRenderError, match=r"^kwargs.p: template error"):
        renderer.render({"p": "{{ params.update({'x': 2}) }}"}, "kwargs")
    assert json.dumps(context["params"]) == '{"x": 1}'  # the immutable sandbox changed nothing


def test_close_fds_except_keeps_only_what_it_is_told(tmp_path: Path) -> None:
    # Run in a forked child: closing fds in the test process would break pytest.
    read_end, write_end = os.pipe()
    extra = os.open(os.devnull, os.O_RDONLY)
    pid = os.fork()
    if pid == 0:
        try:
            close_fds_except({write_end})
            alive = [fd for fd in (extra, read_end) if _fd_open(fd)]
            os.write(write_end, json.dumps(alive).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as result:
        assert json.loads(result.read()) == []
    os.close(extra)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# A task owns its process: it can write any bytes to the result pipe itself and exit. What
# the supervisor accepts must be writable again later (a warm start's context, the store).
FORGER = """
    import fcntl, os, sys

    def send(raw):
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("pipe:") and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_WRONLY:
                os.write(fd, raw.encode())
                os.close(fd)
        os._exit(0)

    def overflow():
        send('{"xcom": [1e999]}')

    def nan():
        send('{"xcom": NaN}')

    def deep():
        send('{"xcom": ' + "[" * 990 + "]" * 990 + "}")

    def deepest_allowed():
        send('{"xcom": ' + "[" * 64 + "]" * 64 + "}")
"""


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        ("overflow", "out of range"),
        ("nan", "NaN is not a JSON number"),
        ("deep", "nested deeper than"),
    ],
)
def test_a_forged_result_the_store_cannot_hold_fails_the_attempt(
    make_attempt: MakeAttempt, forged: str, why: str
) -> None:
    outcome = run(make_attempt({"forge.py": FORGER}, callable=f"forge:{forged}"))
    assert not outcome.ok and not outcome.has_xcom
    assert outcome.error is not None and "not valid JSON" in outcome.error
    assert why in outcome.error


def test_a_result_nested_64_deep_is_accepted(make_attempt: MakeAttempt) -> None:
    outcome = run(make_attempt({"forge.py": FORGER}, callable="forge:deepest_allowed"))
    assert outcome.ok, outcome.message
    depth, value = 0, outcome.xcom
    while isinstance(value, list):
        depth, value = depth + 1, value[0] if value else None
    assert depth == 64
