"""``isolate demo``: two teams' DAGs, conflicting library versions, run side by side."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from cli import demo as demo_module
from cli.main import isolate
from envcache.tree import remove_tree

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from demo_wheels import WHEELHOUSE, build  # noqa: E402

from tests.osusers import os_users  # noqa: E402

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the demo makes OS users only as root")


def test_the_shipped_wheelhouse_is_what_its_script_builds(tmp_path: Path) -> None:
    """The wheels in the repository are reproducible from readable source, not opaque."""
    built = {wheel.name: wheel.read_bytes() for wheel in build(tmp_path)}
    shipped = {wheel.name: wheel.read_bytes() for wheel in WHEELHOUSE.glob("*.whl")}
    assert built == shipped and len(built) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo makes OS users only as root")
def test_the_demo_runs_each_team_in_its_env_as_its_user_and_cleans_up() -> None:
    result = CliRunner().invoke(isolate, ["demo", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    rows = {(r["dag_id"], r["task_id"]): r for r in shown["tasks"]}
    assert set(rows) == {
        (f"demo.{team}", task) for team in ("north", "south") for task in
        ("extract", "summarize", "whoami")
    }  # fmt: skip
    assert all(r["state"] == "success" and r["duration"] is not None for r in rows.values())
    for team, version in (("north", "1.0"), ("south", "2.0")):
        mine = [r for (dag, _), r in rows.items() if dag == f"demo.{team}"]
        assert {r["user"] for r in mine} == {f"isodemo-{team}-{os.getpid()}"}
        assert {r["library"] for r in mine} == {version, None}  # whoami reports none
        assert len({r["env_key"] for r in mine}) == 1
    assert rows["demo.north", "extract"]["env_key"] != rows["demo.south", "extract"]["env_key"]
    assert shown["node"] is None  # removed
    assert demo_users_of(os.getpid()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo makes OS users only as root")
def test_the_demo_table_says_what_ran_where() -> None:
    result = CliRunner().invoke(isolate, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["DAG", "TASK", "STATE", "OS", "USER", "ENV", "DEMOLIB", "DURATION"]
    north, south = (f"isodemo-{team}-{os.getpid()}" for team in ("north", "south"))
    assert re.search(rf"demo\.north +extract +success +{north} ", result.stdout)
    assert f"as its team's OS user ({north}, {south})" in result.stdout
    assert f"removed the users {north}, {south}" in result.stderr


def demo_users_of(pid: int) -> list[str]:
    """The users a demo of process ``pid`` made and has not removed."""
    mark = re.compile(rf"^isodemo-[a-z]+-{pid}(-[0-9]+)?$")
    return sorted(user.pw_name for user in pwd.getpwall() if mark.match(user.pw_name))


@pytest.fixture
def demo_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty directory the demo's (in this process) temporary node goes into."""
    path = Path(tempfile.mkdtemp(prefix="isodemo-tmp-"))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    try:
        yield path
    finally:
        remove_tree(path)  # read-only directories too, should a demo leave any


@needs_root
def test_two_demos_at_once_each_run_as_and_remove_only_their_own_users(tmp_path: Path) -> None:
    """Two demos at once, from a TMPDIR the demo users cannot reach (pytest's, 0700): each
    puts its node in /tmp instead, runs as its own users and removes only them."""
    exe = Path(sys.executable).parent / "isolate"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    demos = [
        subprocess.Popen(
            [exe, "demo", *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in (["--json"], [])
    ]
    users = []
    for process in demos:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        mine = {f"isodemo-{team}-{process.pid}" for team in ("north", "south")}
        if process.args[-1] == "--json":
            tasks = json.loads(out)["tasks"]
            assert {task["user"] for task in tasks} == mine
            assert all(task["state"] == "success" for task in tasks)
        else:
            assert f"cannot reach {tmp_path}: the node goes in /tmp" in err
            node = re.search(r"throwaway node in (/tmp/isolate-demo-\S+)", err)
            assert node and not Path(node.group(1)).exists()
            assert out.count(" success ") == 6 and all(name in out for name in mine)
        users.append(mine)
        assert demo_users_of(process.pid) == []
    assert not users[0] & users[1]
    assert list(tmp_path.iterdir()) == []


@needs_root
def test_the_demo_leaves_alone_a_user_it_did_not_create() -> None:
    taken = f"isodemo-north-{os.getpid()}"  # as left by a demo whose pid this one now has
    with os_users(taken):
        said: list[str] = []
        with demo_module._demo_users(said.append) as users:
            assert users is not None
            assert users["north"] == f"{taken}-1" and users["south"] != taken
            made = set(users.values())
            assert all(pwd.getpwnam(name) for name in made)
        assert pwd.getpwnam(taken)  # still there
        assert demo_users_of(os.getpid()) == [taken]
        assert said[-1] == f"demo: removed the users {', '.join(users.values())}"


@pytest.mark.parametrize("failure", [demo_module.DemoError("boom"), KeyboardInterrupt()])
def test_a_failed_demo_leaves_no_node_and_no_users(
    failure: BaseException, demo_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: dict[str, str] = {}

    def fail(base: Path, users: dict[str, str] | None, say: object) -> None:
        (base / "home").mkdir()
        (base / "home" / "isolate.db").write_text("half made")
        env = base / "home" / "envcache" / "envs" / "key"  # read-only, as built envs are
        env.mkdir(parents=True)
        (env / "python").write_text("")
        env.chmod(0o555)
        made.update(users or {})
        raise failure

    monkeypatch.setattr(demo_module, "_run", fail)
    result = CliRunner().invoke(isolate, ["demo", "--keep"])
    assert result.exit_code == 1 and list(demo_tmp.iterdir()) == []
    if os.geteuid() == 0:
        assert len(made) == 2 and demo_users_of(os.getpid()) == []


@needs_root
def test_a_demo_stopped_while_its_tasks_run_kills_them_and_cleans_up(
    demo_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while tasks run: they are killed (here they are held stopped, so that they
    cannot end by themselves first), the users removed (userdel refuses a user whose
    processes live) and the node deleted."""
    held: list[int] = []

    class Stopped(demo_module.Scheduler):
        def run(self, *, until_idle: bool = False, stop: object = None) -> None:
            uids = {pwd.getpwnam(name).pw_uid for name in demo_users_of(os.getpid())}

            def hold_some() -> bool:
                # Each pass, stop whatever of the demo's users runs (a task may end between
                # its start and the next pass: then a later one is held).
                for process in psutil.process_iter(["uids"]):
                    if process.info["uids"] and process.info["uids"].real in uids:
                        with contextlib.suppress(psutil.Error):
                            process.suspend()
                            held.append(process.pid)
                return bool(held)

            super().run(until_idle=until_idle, stop=hold_some)
            signal.raise_signal(signal.SIGTERM)  # as `kill` or systemd would
            time.sleep(5)  # the demo's handler ends it here

    monkeypatch.setattr(demo_module, "Scheduler", Stopped)
    try:
        result = CliRunner().invoke(isolate, ["demo"])
        assert result.exit_code == 1, result.output  # aborted
        assert held, "no task of the demo's users was running"
        assert not [pid for pid in held if psutil.pid_exists(pid)]
        assert demo_users_of(os.getpid()) == [], result.output
        assert list(demo_tmp.iterdir()) == []
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        for pid in held:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        for name in demo_users_of(os.getpid()):
            subprocess.run(["userdel", name], check=False, capture_output=True)


@needs_root
@pytest.mark.parametrize(
    ("signum", "after"),
    [(signal.SIGINT, "made for the demo"), (signal.SIGTERM, "pushed demo.south")],
)
def test_ctrl_c_or_sigterm_ends_a_demo_without_leftovers(
    signum: int, after: str, tmp_path: Path
) -> None:
    exe = Path(sys.executable).parent / "isolate"
    process = subprocess.Popen(
        [exe, "demo"],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    said = []
    for line in process.stderr:
        said.append(line)
        if after in line:
            process.send_signal(signum)
            break
    said.extend(process.stderr)
    assert process.wait(timeout=60) == 1, "".join(said)
    assert said[-1] == "isolate: aborted\n"
    assert demo_users_of(process.pid) == []
    assert list(tmp_path.iterdir()) == []


def test_without_root_the_demo_says_tasks_run_as_you(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    monkeypatch.setattr(demo_module.os, "geteuid", lambda: 4321)
    with demo_module._demo_users(said.append) as users:
        assert users is None
    assert said[0].startswith("demo: not root: the tasks run as you (")
    assert "not root, so no OS users of its own" in demo_module._who(None)


DEMO_SH = REPO / "scripts" / "demo.sh"
SYSTEM_PYTHON = "/usr/bin/python3.11"
needs_system_python = pytest.mark.skipif(
    not (os.path.isfile(SYSTEM_PYTHON) and os.stat(SYSTEM_PYTHON).st_mode & 0o001),
    reason=f"needs {SYSTEM_PYTHON}, executable by every user",
)


def _pick_python(path: str, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/demo.sh's choice of interpreter with this PATH (its functions, sourced)."""
    return subprocess.run(
        ["bash", "-c", f'source "{DEMO_SH}"; pick_python'],
        env={**os.environ, "PATH": path, **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path]]:
    """A directory every user may enter and one only its owner may, both under /tmp."""
    public, private = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    public.chmod(0o755)
    private.chmod(0o700)
    try:
        yield public, private
    finally:
        shutil.rmtree(public)
        shutil.rmtree(private)


@needs_system_python
def test_demo_sh_skips_a_python_only_its_owner_may_run(dirs: tuple[Path, Path]) -> None:
    public, private = dirs
    (private / "python3.11").symlink_to(SYSTEM_PYTHON)  # as a pyenv build under /root
    shim = public / "python3.11"  # as pyenv's shim: anyone may run it, not what it runs
    shim.write_text(f'#!/bin/sh\nexec "{private}/python3.11" "$@"\n')
    shim.chmod(0o755)
    for first in (private, public):
        done = _pick_python(f"{first}:/usr/bin:/bin")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{SYSTEM_PYTHON}\n"
        assert f"skipping {first}/python3.11" in done.stderr
        assert "other users cannot run it" in done.stderr


@needs_system_python
def test_demo_sh_takes_the_first_python_every_user_may_run(dirs: tuple[Path, Path]) -> None:
    public, _ = dirs
    (public / "python3.11").symlink_to(SYSTEM_PYTHON)
    done = _pick_python(f"{public}:/usr/bin:/bin")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{public}/python3.11\n", "")


@needs_system_python
def test_demo_sh_uses_python_as_told_and_warns_when_it_is_private(
    dirs: tuple[Path, Path],
) -> None:
    _, private = dirs
    (private / "python3.11").symlink_to(SYSTEM_PYTHON)
    done = _pick_python("/usr/bin:/bin", PYTHON=f"{private}/python3.11")
    assert done.stdout == f"{private}/python3.11\n"
    assert "which other users cannot run" in done.stderr
    told = _pick_python("/usr/bin:/bin", PYTHON=SYSTEM_PYTHON)
    assert (told.stdout, told.stderr) == (f"{SYSTEM_PYTHON}\n", "")


@needs_system_python
def test_demo_sh_says_what_an_existing_venv_runs_on(dirs: tuple[Path, Path]) -> None:
    """A .venv built before (perhaps on a private python) is used, saying what it runs on."""
    public, private = dirs
    (public / "scripts").mkdir()
    shutil.copy(DEMO_SH, public / "scripts" / "demo.sh")
    shutil.copy(DEMO_SH.with_name("venv.sh"), public / "scripts" / "venv.sh")
    (private / "python3.11").symlink_to(SYSTEM_PYTHON)
    venv = public / ".venv"
    for python, said in (
        (SYSTEM_PYTHON, f"demo.sh: .venv runs on {SYSTEM_PYTHON}\n"),
        (f"{private}/python3.11", f"cannot run .venv/bin/isolate (mode of {private}); remove"),
    ):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
        (venv / "bin" / "isolate").write_text('#!/bin/sh\necho "isolate $*"\n')
        (venv / "bin" / "isolate").chmod(0o755)
        done = subprocess.run(
            ["bash", str(public / "scripts" / "demo.sh"), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == "isolate demo --json\n"
        assert said in done.stderr
