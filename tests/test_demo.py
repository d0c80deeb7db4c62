"""``isolate demo``: two teams' DAGs, conflicting library versions, run side by side."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import demo as demo_module
from cli.main import isolate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from demo_wheels import WHEELHOUSE, build  # noqa: E402


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
        assert {r["user"] for r in mine} == {f"isodemo-{team}"}
        assert {r["library"] for r in mine} == {version, None}  # whoami reports none
        assert len({r["env_key"] for r in mine}) == 1
    assert rows["demo.north", "extract"]["env_key"] != rows["demo.south", "extract"]["env_key"]
    assert shown["node"] is None  # removed
    for team in ("north", "south"):
        with pytest.raises(KeyError):
            pwd.getpwnam(f"isodemo-{team}")


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo makes OS users only as root")
def test_the_demo_table_says_what_ran_where() -> None:
    result = CliRunner().invoke(isolate, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["DAG", "TASK", "STATE", "OS", "USER", "ENV", "DEMOLIB", "DURATION"]
    assert "demo.north  extract    success  isodemo-north" in result.stdout
    assert "as its team's OS user (isodemo-north, isodemo-south)" in result.stdout
    assert "removed the users isodemo-north, isodemo-south" in result.stderr


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
