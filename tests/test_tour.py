"""The README's tour, command by command, as root and as a plain user, in a throwaway home.

The commands are read from README.md ("A short tour"): what a reader types is what is
tested. Its paths (``/tmp/demo``, ``/tmp/etl``) become a fresh temporary directory's, and
``<RUN_ID>`` the run its ``isolate trigger`` made. Each ``isolate`` runs in its own process,
as a reader's does, from the top of the repository.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import isolate
from envcache.tree import remove_tree
from isolate.config import load_config
from isolate.services.home import DIRECTORIES
from tests.osusers import clear_isolate_env, os_users, unique

REPO = Path(__file__).resolve().parent.parent
ISOLATE = "import sys; from cli.main import main; sys.argv[0] = 'isolate'; main()"
# An interpreter every user may run that imports isolate's dependencies (a venv built on
# /usr/bin/python3.11), for the plain user's tour when this test's own is private.
TOUR_PYTHON = os.environ.get("ISOLATE_TEST_TOUR_PYTHON") or sys.executable

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def tour_commands() -> list[str]:
    """The shell lines of the README tour's ``sh`` blocks, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## A short tour\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


@dataclass
class Tour:
    """Runs the tour's lines as ``user`` (None: as this process's user), in ``base``."""

    base: Path
    user: str | None
    python: str
    env: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    done: list[tuple[str, subprocess.CompletedProcess[str]]] = field(default_factory=list)

    def line(self, text: str) -> subprocess.CompletedProcess[str] | None:
        text = text.replace("/tmp/demo", str(self.base / "home"))
        text = text.replace("/tmp/etl", str(self.base / "etl"))
        if "<RUN_ID>" in text:
            assert self.run_id, "the tour shows a run before it triggers one"
            text = text.replace("<RUN_ID>", self.run_id)
        argv = shlex.split(text, comments=True)
        if argv[0] == "export":
            name, _, value = argv[1].partition("=")
            self.env[name] = value
            return None
        done = self.run(argv)
        assert done.returncode == 0, f"$ {text}\n{done.stdout}{done.stderr}"
        self.done.append((shlex.join(argv), done))
        if argv[:2] == ["isolate", "trigger"]:
            self.run_id = triggered(done)
        return done

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if argv[0] == "isolate":
            argv = [self.python, "-c", ISOLATE, *argv[1:]]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(
            argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120
        )

    def out(self, command: str) -> str:
        """The output of the tour's commands that start with ``command``."""
        found = [done.stdout + done.stderr for line, done in self.done if line.startswith(command)]
        assert found, f"the tour has no `{command}`"
        return "".join(found)


def triggered(done: subprocess.CompletedProcess[str]) -> str:
    """The run id ``isolate trigger`` printed."""
    found = re.search(r" run (\S+) \(version", done.stdout)
    assert found, done.stdout
    return found.group(1)


@pytest.fixture
def base() -> Iterator[Path]:
    """A fresh directory under /tmp (pytest's own is root's only), removed after."""
    path = Path(tempfile.mkdtemp(prefix="isotour-"))
    try:
        yield path
    finally:
        remove_tree(path)  # with the home's read-only envs and bundles


def tour_env(base: Path) -> dict[str, str]:
    """The reader's environment, without the developer's ISOLATE_* settings; offline (tests
    never reach for the network), and a tenant mapping of its own that does not exist, so
    that the host's /etc/isolate/tenants.toml cannot change what the tour shows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISOLATE_")}
    env.update(
        ISOLATE_OFFLINE="true",
        ISOLATE_TENANTS_FILE=str(base / "no-tenants.toml"),
        XDG_CACHE_HOME=str(base / "cache"),  # a test user has no home directory
        PYTHONDONTWRITEBYTECODE="1",  # nothing written into the repository
    )
    return env


def check_tour(tour: Tour, user: str) -> None:
    for text in tour_commands():
        tour.line(text)
    pushed = tour.out("isolate push " + str(tour.base / "etl"))
    assert re.search(r"example\.etl +1 +new", pushed) and re.search(
        r"example\.etl +1 +unchanged", pushed
    )
    assert re.search(r"example\.etl +2 +new", pushed)
    assert "example.etl: v1 -> v2" in tour.out("isolate dags diff")
    assert "load: retry.retries: 3 -> 4" in tour.out("isolate dags diff")
    assert "(version 2)" in tour.out("isolate trigger example.etl")
    assert "not started" not in tour.out("isolate scheduler --until-idle")
    shown = tour.out(f"isolate runs show {tour.run_id}")
    assert f"{tour.run_id}: success (version 2)" in shown
    rows = [line.split() for line in shown.splitlines()[2:] if line.strip()]
    assert {row[0] for row in rows} == {"extract", "summarize", "load", "report"}
    assert {row[4] for row in rows} == {user}, shown  # the USER column: the scheduler's
    assert f"user: {user} (uid " in tour.out(f"isolate tasks logs {tour.run_id}")
    assert "cleared load, report" in tour.out(f"isolate tasks clear {tour.run_id}")
    assert '"customer": "a"' in tour.out("isolate test " + str(tour.base / "etl"))
    assert f"single-user home: every task runs as the scheduler's user, {user} here" in (
        tour.out("isolate init --home")
    )


def test_the_readme_tour_changes_the_dag_before_it_diffs_two_versions() -> None:
    lines = [shlex.split(line, comments=True) for line in tour_commands()]
    pushes = [i for i, argv in enumerate(lines) if argv[:2] == ["isolate", "push"]]
    diff = next(i for i, argv in enumerate(lines) if argv[:3] == ["isolate", "dags", "diff"])
    assert len(pushes) >= 3 and pushes[2] < diff  # v1, unchanged, v2: then the diff
    trigger = next(i for i, argv in enumerate(lines) if argv[:2] == ["isolate", "trigger"])
    pause = next(i for i, argv in enumerate(lines) if argv[:3] == ["isolate", "dags", "pause"])
    assert trigger < pause  # a paused DAG's run would wait, and the scheduler say nothing
    assert lines[0][:2] == ["isolate", "init"] and "--single-user" in lines[0]


@needs_root
def test_the_readme_tour_works_as_root(base: Path) -> None:
    tour = Tour(base, None, sys.executable, tour_env(base))
    check_tour(tour, "root")
    assert "allow_root_tasks = true" in (base / "home" / "isolate.toml").read_text()


def test_the_readme_tour_works_as_a_plain_user(base: Path) -> None:
    """As a test user run with runuser when the suite runs as root, else as its own user."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        check_plain_tour(Tour(base, None, sys.executable, tour_env(base)), me)
        return
    with os_users(unique("isotour")) as users:
        (name,) = users
        info = users[name]
        os.chown(base, info.pw_uid, info.pw_gid)
        tour = Tour(base, name, TOUR_PYTHON, tour_env(base))
        usable = tour.run(["isolate", "--help"])
        if usable.returncode != 0:
            pytest.skip(
                f"a plain user cannot run isolate with {TOUR_PYTHON} "
                f"({os.path.realpath(TOUR_PYTHON)}): {usable.stderr.strip()[-200:]}; "
                "set ISOLATE_TEST_TOUR_PYTHON to an interpreter every user may run that "
                "has isolate's dependencies (a venv built on /usr/bin/python3.11)"
            )
        check_plain_tour(tour, name)


def check_plain_tour(tour: Tour, user: str) -> None:
    check_tour(tour, user)
    home = tour.base / "home"
    assert home.stat().st_uid == pwd.getpwnam(user).pw_uid
    assert stat.S_IMODE(home.stat().st_mode) == 0o711
    # Nothing a root scheduler on this home would act on: its tasks run as their user.
    assert "allow_root_tasks = true" not in (home / "isolate.toml").read_text()


@needs_root
def test_as_root_without_single_user_the_tour_says_why_no_task_runs(base: Path) -> None:
    tour = Tour(base, None, sys.executable, tour_env(base))
    shutil.copytree(REPO / "examples" / "etl", base / "etl")
    home, folder = str(base / "home"), str(base / "etl")
    init = tour.run(["isolate", "init", "--home", home])
    assert init.returncode == 0, init.stderr
    assert "no tenant mapping at" in init.stderr and "isolate init --single-user" in init.stderr
    tour.env["ISOLATE_HOME"] = home
    pushed = tour.run(["isolate", "push", folder])
    assert pushed.returncode == 0, pushed.stderr
    run = tour.run(["isolate", "trigger", "example.etl"])
    assert run.returncode == 0, run.stderr
    ran = tour.run(["isolate", "scheduler", "--until-idle"])
    assert ran.returncode == 0, ran.stderr
    assert "not started: could not start: no tenant mapping at" in ran.stderr, ran.stderr
    shown = tour.run(["isolate", "runs", "show", triggered(run)])
    assert "no tenant mapping" in shown.stdout, shown.stdout
    again = tour.run(["isolate", "init", "--home", home, "--single-user"])
    assert again.returncode == 5 and "does not set allow_root_tasks" in again.stderr


def test_single_user_as_a_plain_user_writes_nothing_a_root_scheduler_would_act_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(tmp_path / "no-tenants.toml"))
    home = tmp_path / "home"
    if os.geteuid() == 0:  # be a plain user who owns the home
        for path in (home, *(home / name for name in DIRECTORIES)):
            path.mkdir()
            os.chown(path, 4321, 4321)
        monkeypatch.setattr(os, "geteuid", lambda: 4321)
    result = CliRunner().invoke(isolate, ["init", "--home", str(home), "--single-user"])
    assert result.exit_code == 0, result.output
    assert "single-user home: every task runs as the scheduler's user" in result.stdout
    assert "allow_root_tasks" not in result.stdout
    text = (home / "isolate.toml").read_text()
    assert "# A single-user home" in text and "allow_root_tasks = true" not in text
    assert load_config(home).settings.allow_root_tasks is False
    again = CliRunner().invoke(isolate, ["init", "--home", str(home), "--single-user"])
    assert again.exit_code == 0 and "checked isolate home" in again.stdout


@needs_root
def test_single_user_as_root_says_what_it_means_and_allows_root_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(tmp_path / "no-tenants.toml"))
    home = tmp_path / "home"
    result = CliRunner().invoke(isolate, ["init", "--home", str(home), "--single-user"])
    assert result.exit_code == 0, result.output
    assert (
        "single-user home: every task runs as the scheduler's user, root here "
        "(allow_root_tasks = true), with no isolation between DAGs" in result.stdout
    )
    assert result.stderr == ""  # no warning: its tasks will run
    assert load_config(home).settings.allow_root_tasks is True
    again = CliRunner().invoke(isolate, ["init", "--home", str(home), "--single-user"])
    assert again.exit_code == 0, again.output  # idempotent


def test_single_user_where_the_node_has_a_mapping_says_it_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_isolate_env(monkeypatch)
    mapping = tmp_path / "tenants.toml"
    mapping.write_text("")
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(mapping))
    result = CliRunner().invoke(
        isolate, ["init", "--home", str(tmp_path / "home"), "--single-user"]
    )
    assert result.exit_code == 0, result.output
    assert f"the tenant mapping {mapping} applies to this home too" in result.stderr
