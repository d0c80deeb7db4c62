"""What a task's own environment, templates and /dev can do before and around its sandbox.

- bwrap runs with isolate's environment, never the task's: the task's is handed to it in a
  memfd (``--args``) and set inside with ``--clearenv``/``--setenv``;
- variables the dynamic loader or the C library read (``LD_PRELOAD``, ...) are refused at
  push and dropped, saying so, from versions stored before;
- templates are rendered under the attempt's CPU and memory limits, with or without a cgroup;
- a Landlock-only task gets no host ``/dev/shm``; a bubblewrapped one has its own; abstract
  unix sockets of the host are out of reach where a sandbox says so.

The process tests run their tasks as root where the suite runs as root (as test_sandbox.py
does): each denial seen is the sandbox's own.
"""

# The fixtures come from a shared module; pyflakes sees their use as arguments as
# redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from isolate.bundles import make_bundle
from isolate.config import Settings
from isolate.errors import IsolateError, ValidationError
from isolate.format import load_document
from isolate.model import Limits
from isolate.services.dagfile import load_folder
from isolate.services.pushwire import decode_snapshot
from isolate.validate import LOADER_ENV_NAMES, check_push, is_loader_variable
from localexec.attempt import Attempt
from localexec.sandbox import (
    HELPER_ENVIRONMENT,
    Hardening,
    HostSandbox,
    Sandbox,
    device_paths,
    layers_for,
    resolve,
)
from localexec.supervisor import run, start, wait
from tests.conftest import write_folder
from tests.docs import doc_with, dumps, python_task
from tests.localexec_support import (  # noqa: F401 - fixtures
    MakeAttempt,
    env_python,
    make_attempt,
    runtime,
)

HOST = HostSandbox.detect(cgroups=False, cgroups_finding="not used here")
needs_landlock = pytest.mark.skipif(
    HOST.landlock_abi == 0, reason="Landlock is not available in this kernel"
)
needs_bwrap = pytest.mark.skipif(
    HOST.bwrap is None, reason=f"bubblewrap cannot be used here: {HOST.bwrap_finding}"
)
needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None, reason="gcc is needed to build the preloaded library"
)

TASKS = {
    "tasks.py": """
        import errno, os, socket, time

        def attempt(fn):
            try:
                result = fn()
            except PermissionError:
                return "denied"
            except OSError as exc:
                return errno.errorcode.get(exc.errno, str(exc.errno))
            return "allowed" if result is None else result

        def echo(value):
            return value

        def environment():
            return dict(os.environ)

        def held_until_released():
            open("ready", "w").close()
            deadline = time.monotonic() + 20
            while not os.path.exists("go") and time.monotonic() < deadline:
                time.sleep(0.01)
            links = {}
            for fd in os.listdir("/proc/self/fd"):
                try:
                    links[fd] = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    pass
            return {"env": dict(os.environ), "fds": links}

        def shm(host_file, name):
            def write():
                with open(f"/dev/shm/{name}", "w") as fh:
                    fh.write("mine")
            return {
                "host_file": attempt(lambda: open(host_file).read()),
                "write": attempt(write),
                "null": attempt(lambda: open("/dev/null", "w").write("x") and None),
                "urandom": attempt(lambda: len(open("/dev/urandom", "rb").read(4))),
            }

        def abstract(name):
            def go():
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect("\\0" + name)
            return attempt(go)
    """
}


def confined(attempt: Attempt, **want: Any) -> Attempt:
    """``attempt`` in the sandbox the scheduler would give it on this host."""
    env_root = attempt.python.parent.parent
    sandbox = resolve(
        Hardening(**want),
        HOST,
        read_only=(
            env_root,
            env_root.parent.parent / "objects" / "trees",
            attempt.sdk_dir.parent,
            attempt.bundle_dir,
        ),
        writable=(attempt.work_dir,),
    )
    return replace(attempt, sandbox=sandbox)


def run_ok(attempt: Attempt) -> Any:
    outcome = run(attempt, layers=layers_for(attempt.sandbox))
    assert outcome.ok, (outcome.message, attempt.log_path.read_text())
    return outcome.xcom


# --- 1. bwrap runs with isolate's environment ------------------------------------------------


@needs_bwrap
def test_bwrap_itself_runs_with_isolates_environment_and_the_task_gets_its_own(
    make_attempt: MakeAttempt,
) -> None:
    secret = "tenant-secret-value"
    big = "y" * 50_000
    attempt = confined(
        make_attempt(
            TASKS,
            callable="tasks:held_until_released",
            env_vars={"CANARY": secret, "BIG": big, "TRICKY": "--bind / /\nx"},
            execution_timeout=60,
        ),
        landlock="off",
        bubblewrap="required",
    )
    running = start(attempt, layers=layers_for(attempt.sandbox))
    try:
        ready = attempt.work_dir / "ready"
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), attempt.log_path.read_text()
        # The outer bwrap process: what its loader saw, and what others read in /proc.
        environ = Path(f"/proc/{running.pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{running.pid}/cmdline").read_bytes()
        assert Path(f"/proc/{running.pid}/exe").resolve() == HOST.bwrap
    finally:
        (attempt.work_dir / "go").touch()
        outcome = wait(running)
    assert (
        dict(item.split("=", 1) for item in environ.decode().split("\0") if item)
        == HELPER_ENVIRONMENT
    )
    assert secret.encode() not in cmdline and b"--args" in cmdline
    assert outcome.ok, (outcome.message, attempt.log_path.read_text())
    seen = outcome.xcom
    assert seen["env"]["CANARY"] == secret and seen["env"]["BIG"] == big
    assert seen["env"]["TRICKY"] == "--bind / /\nx"  # a value, not options
    assert seen["env"]["PATH"].startswith(str(attempt.python.parent))
    # bwrap read its memfd and closed it: the task holds stdio, the context, the result pipe.
    assert not [link for link in seen["fds"].values() if "isolate-bwrap-args" in link]
    assert len(seen["fds"]) <= 6, seen["fds"]


def test_bwraps_arguments_go_through_a_memfd_it_inherits() -> None:
    sandbox = Sandbox(bwrap=Path("/usr/bin/bwrap"), network=False, writable=(Path("/w"),))
    argv, env, fd = sandbox.bwrap_exec(["python", "-I", "boot.py"], {"A": "1", "EMPTY": ""})
    try:
        assert argv == ["/usr/bin/bwrap", "--args", str(fd), "--", "python", "-I", "boot.py"]
        assert env == HELPER_ENVIRONMENT
        assert fd > 2 and os.get_inheritable(fd)
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    args = data.split(b"\0")
    assert args[-1] == b""  # every argument ends with a NUL
    assert args[:2] == [b"--unshare-all", b"--die-with-parent"]
    tail = [b"--clearenv", b"--setenv", b"A", b"1", b"--setenv", b"EMPTY", b"", b""]
    assert args[-len(tail) :] == tail
    assert b"--bind" in args and b"/w" in args


@pytest.mark.parametrize(
    "env", [{"X": "a\0--bind\0/\0/"}, {"X\0--bind": "v"}, {"A=B": "v"}, {"": "v"}]
)
def test_a_variable_that_would_smuggle_bwrap_options_is_refused(env: dict[str, str]) -> None:
    sandbox = Sandbox(bwrap=Path("/usr/bin/bwrap"), network=False)
    with pytest.raises(IsolateError, match="cannot hold a NUL"):
        sandbox.bwrap_exec(["true"], env)


def test_more_variables_than_bwrap_takes_is_a_clear_error() -> None:
    sandbox = Sandbox(bwrap=Path("/usr/bin/bwrap"), network=False)
    with pytest.raises(IsolateError, match="too many for bubblewrap"):
        sandbox.bwrap_exec(["true"], {f"V{i}": "x" for i in range(3000)})


# --- 2. loader variables ---------------------------------------------------------------------

REFUSED = [*sorted(LOADER_ENV_NAMES), "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_X"]
ALLOWED = ["TMPDIR", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "PATH", "MALLOC_ARENA_MAX", "ld_x"]


@pytest.mark.parametrize("name", REFUSED)
def test_a_loader_variable_is_refused_at_push_naming_task_and_variable(name: str) -> None:
    text = dumps(doc_with([python_task("a"), python_task("load", env={name: "/x", "OK": "1"})]))
    spec = load_document(text)  # a stored version stays readable
    with pytest.raises(ValidationError) as info:
        check_push(spec)
    assert info.value.problems == [
        f"tasks[load].env.{name}: {name} is read by the dynamic loader or the C library "
        "before a program starts: not allowed in a task's env"
    ]
    assert str(info.value).startswith("dag etl: tasks[load].env.")


@pytest.mark.parametrize("name", ALLOWED)
def test_other_variables_are_the_authors(name: str) -> None:
    assert not is_loader_variable(name)
    check_push(load_document(dumps(doc_with([python_task("a", env={name: "v"})]))))


def test_the_push_server_refuses_a_loader_variable(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "src", {"x.py": "X = 1\n"})
    bundle = make_bundle(folder, max_bytes=Settings().max_bundle_bytes)
    doc = doc_with([python_task("a", env={"LD_PRELOAD": "/tmp/evil.so"})])
    doc["bundle"]["hash"] = bundle.hash
    with pytest.raises(ValidationError, match=r"tasks\[a\]\.env\.LD_PRELOAD: LD_PRELOAD is read"):
        decode_snapshot([dumps(doc)], bundle.data, Settings())
    doc["tasks"][0]["env"] = {"MODE": "fast"}
    assert decode_snapshot([dumps(doc)], bundle.data, Settings()).dags  # the check's only effect


def test_the_author_hears_of_it_when_loading_the_folder(tmp_path: Path) -> None:
    dag = """
        from isolate import DAG, task

        @task(env={"GCONV_PATH": "/home/me/gconv"})
        def convert():
            return 1

        with DAG("charsets"):
            convert()
    """
    folder = write_folder(tmp_path / "src", {"dag.py": dag})
    with pytest.raises(ValidationError, match=r"tasks\[convert\]\.env\.GCONV_PATH: GCONV_PATH"):
        load_folder(folder)


@pytest.mark.parametrize("bubblewrap", ["off", pytest.param("required", marks=needs_bwrap)])
def test_loader_variables_of_a_stored_version_are_dropped_and_logged(
    make_attempt: MakeAttempt, bubblewrap: str
) -> None:
    dropped = {"LD_LIBRARY_PATH": "/x", "GCONV_PATH": "/y", "LD_DEBUG": "all"}
    attempt = confined(
        make_attempt(TASKS, callable="tasks:environment", env_vars={**dropped, "MODE": "fast"}),
        landlock="off",
        bubblewrap=bubblewrap,
    )
    env = run_ok(attempt)
    assert env["MODE"] == "fast" and not set(dropped) & set(env)
    log = attempt.log_path.read_text()
    assert "isolate: not in the task's env (read by the dynamic loader" in log
    assert "GCONV_PATH, LD_DEBUG, LD_LIBRARY_PATH" in log
    assert "ld.so" not in log and "calling init" not in log  # LD_DEBUG=all reached nobody


EVIL_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void evil(void) {
    char exe[4096] = {0};
    const char *out = getenv("EVIL_OUT");
    FILE *fh;
    if (!out || readlink("/proc/self/exe", exe, sizeof exe - 1) < 0) return;
    if ((fh = fopen(out, "a"))) {
        fprintf(fh, "%s\n", exe);
        fclose(fh);
    }
}
"""


@needs_gcc
@pytest.mark.parametrize("bubblewrap", ["off", pytest.param("required", marks=needs_bwrap)])
def test_a_preloaded_library_of_a_stored_version_never_runs(
    make_attempt: MakeAttempt, tmp_path: Path, bubblewrap: str
) -> None:
    attempt = make_attempt(TASKS, callable="tasks:echo", args=["done"])
    source = tmp_path / "evil.c"
    source.write_text(EVIL_C)
    library = attempt.bundle_dir / "evil.so"  # readable inside the sandbox too
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=60
    )
    out = attempt.work_dir / "evil.txt"
    attempt = confined(
        replace(attempt, env_vars={"LD_PRELOAD": str(library), "EVIL_OUT": str(out)}),
        landlock="off",
        bubblewrap=bubblewrap,
    )
    assert run_ok(attempt) == "done"
    assert not out.exists(), out.read_text()  # not bwrap, not the task's python
    assert "LD_PRELOAD" in attempt.log_path.read_text()


# --- 3. templates under the attempt's limits ------------------------------------------------


def test_a_template_allocating_past_the_memory_limit_fails_quickly(
    make_attempt: MakeAttempt,
) -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    attempt = make_attempt(
        TASKS,
        callable="tasks:echo",
        kwargs={"value": "{{ ('x' * 600000000) | length }}"},
        limits=Limits(memory=256 << 20),
        execution_timeout=60,
    )
    began = time.monotonic()
    outcome = run(attempt)  # no cgroup: only the rlimits stand in the way
    assert time.monotonic() - began < 15
    assert not outcome.ok
    assert outcome.start_error is not None
    assert outcome.start_error.startswith("kwargs.value: template error: MemoryError")
    assert "could not start the task: kwargs.value" in attempt.log_path.read_text()
    # The supervisor is unaffected: its own limits, and the next attempt.
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    small = make_attempt(
        TASKS,
        callable="tasks:echo",
        kwargs={"value": "{{ ('x' * 1000) | length }}"},
        limits=Limits(memory=256 << 20),
    )
    assert run_ok(small) == "1000"


def test_a_template_computing_past_the_cpu_limit_is_stopped(make_attempt: MakeAttempt) -> None:
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    attempt = make_attempt(
        TASKS,
        callable="tasks:echo",
        kwargs={"value": loop},
        limits=Limits(cpu_time=1),
        execution_timeout=30,
    )
    outcome = run(attempt)
    assert not outcome.timed_out, outcome.message
    assert outcome.signal == signal.SIGXCPU
    assert outcome.message == "killed by SIGXCPU (CPU time limit reached)"
    assert outcome.duration < 15


def test_a_task_still_gets_its_whole_memory_after_rendering(make_attempt: MakeAttempt) -> None:
    """The render budget is lowered to the task's own limit at exec, not left above it."""
    probe = {
        "limits.py": """
            import resource

            def address_space(x):
                return list(resource.getrlimit(resource.RLIMIT_AS))
        """
    }
    attempt = make_attempt(
        probe,
        callable="limits:address_space",
        kwargs={"x": "{{ ds }}"},
        limits=Limits(memory=512 << 20, cpu_time=30),
    )
    assert run_ok(attempt) == [512 << 20, 512 << 20]


# --- 4. /dev/shm and abstract unix sockets ---------------------------------------------------


@pytest.fixture
def host_shm_file() -> Iterator[Path]:
    """A world-readable file in the host's /dev/shm, as another tenant might leave one."""
    path = Path("/dev/shm") / f"isolate-test-shm-{os.getpid()}"
    path.write_text("left by someone else")
    os.chmod(path, 0o644)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        for leftover in Path("/dev/shm").glob("isolate-test-mine-*"):
            leftover.unlink()


def test_landlock_rules_leave_out_the_shared_memory_filesystems() -> None:
    rules = dict(Sandbox(landlock=6, writable=(Path("/w"),)).filesystem_rules())
    assert Path("/dev/shm") not in rules and Path("/dev") not in rules
    assert Path("/dev/null") in rules and Path("/dev/urandom") in rules
    assert not [path for path in device_paths() if path.name in ("shm", "mqueue", "hugepages")]
    assert Path("/dev/fd") not in device_paths()  # a symlink into /proc


@needs_landlock
def test_a_landlock_only_task_has_no_host_dev_shm(
    make_attempt: MakeAttempt, host_shm_file: Path
) -> None:
    name = f"isolate-test-mine-{os.getpid()}"
    free = confined(
        make_attempt(TASKS, callable="tasks:shm", args=[str(host_shm_file), name]),
        landlock="off",
        bubblewrap="off",
    )
    assert run_ok(free)["host_file"] == "left by someone else"  # what is not closed without
    (Path("/dev/shm") / name).unlink()
    attempt = confined(
        make_attempt(TASKS, callable="tasks:shm", args=[str(host_shm_file), name]),
        landlock="required",
        bubblewrap="off",
    )
    assert run_ok(attempt) == {
        "host_file": "denied",
        "write": "denied",
        "null": "allowed",
        "urandom": 4,
    }
    assert not (Path("/dev/shm") / name).exists()


@needs_bwrap
def test_a_bubblewrapped_task_has_its_own_dev_shm(
    make_attempt: MakeAttempt, host_shm_file: Path
) -> None:
    name = f"isolate-test-mine-{os.getpid()}"
    attempt = confined(
        make_attempt(TASKS, callable="tasks:shm", args=[str(host_shm_file), name]),
        landlock="off",
        bubblewrap="required",
    )
    assert run_ok(attempt) == {
        "host_file": "ENOENT",
        "write": "allowed",
        "null": "allowed",
        "urandom": 4,
    }
    assert not (Path("/dev/shm") / name).exists()  # it wrote into its own, gone with it


@pytest.fixture
def abstract_listener() -> Iterator[str]:
    """A host process's abstract unix socket (no file, no permissions: anyone may connect)."""
    name = f"isolate-test-abstract-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(8)
    try:
        yield name
    finally:
        server.close()


@pytest.mark.parametrize(
    ("want", "expected"),
    [
        pytest.param({"landlock": "off", "bubblewrap": "off"}, "allowed", id="users-only"),
        pytest.param(
            {"landlock": "required", "bubblewrap": "off"},
            "denied",
            marks=pytest.mark.skipif(HOST.landlock_abi < 6, reason="Landlock scopes need ABI 6"),
            id="landlock",
        ),
        pytest.param(
            {"landlock": "off", "bubblewrap": "required"},
            "ECONNREFUSED",  # its own network namespace: its own abstract names
            marks=needs_bwrap,
            id="bubblewrap",
        ),
        pytest.param(
            {"landlock": "off", "bubblewrap": "required", "network": True},
            "allowed",  # the host's network namespace: the host's abstract names
            marks=needs_bwrap,
            id="bubblewrap-network",
        ),
    ],
)
def test_abstract_unix_sockets_of_the_host(
    make_attempt: MakeAttempt, abstract_listener: str, want: dict[str, Any], expected: str
) -> None:
    attempt = confined(
        make_attempt(TASKS, callable="tasks:abstract", args=[abstract_listener]), **want
    )
    assert run_ok(attempt) == expected
