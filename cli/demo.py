"""``isolate demo``: the point of isolate in a minute, on a throwaway node.

Two teams' DAGs need incompatible versions of one library (``demolib`` 1.0 and 2.0, from the
wheelhouse shipped in ``cli/demo_files``, so nothing is downloaded). The demo locks and
pushes both, builds their envs, runs one run of each and shows what ran where: as root, as
two OS users it creates for the demo (and removes after), each mapped to its team in a
tenant mapping; otherwise as the current user, which it says. Everything it makes lives in
one temporary directory, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from cli.options import json_option
from cli.output import print_json, print_table
from isolate.config import Config, Settings
from isolate.errors import IsolateError
from isolate.home import init_home, open_store, upgrade_database
from isolate.locking import lock_folder
from isolate.push import current_user, push_folder
from isolate.states import TaskState
from isolate.triggering import trigger
from localexec.scheduler import Scheduler

DEMO_FILES = Path(__file__).resolve().parent / "demo_files"
TEAMS = ("north", "south")
USER_PREFIX = "isodemo-"
# Envs must be usable by the demo users: a world-executable interpreter.
_PYTHONS = ("/usr/bin/python3", "/usr/bin/python3.11", "/usr/local/bin/python3")


class DemoError(IsolateError):
    """The demo cannot run on this machine."""


@click.command()
@click.option("--keep", is_flag=True, help="Keep the throwaway node and print where it is.")
@json_option
def demo(keep: bool, as_json: bool) -> None:
    """Run two teams' DAGs that need conflicting versions of one library, side by side.

    Creates a throwaway node, locks and pushes the two example DAGs (their library comes
    from a wheelhouse shipped with isolate: no network), builds their envs, runs them and
    prints what ran where: task, state, OS user, env, library version seen, duration. As
    root, the tasks run as two OS users created for the demo and removed after; otherwise
    as you. Takes a few seconds once isolate is installed.

    \b
    Example:
      isolate demo
    """

    def say(text: str) -> None:
        if not as_json:
            click.echo(text, err=True)

    base = Path(tempfile.mkdtemp(prefix="isolate-demo-"))
    os.chmod(base, 0o711)  # noqa: S103 - the demo users traverse it to their work dirs
    say(f"demo: a throwaway node in {base}" + ("" if keep else " (removed at the end)"))
    try:
        with _demo_users(say) as users:
            rows, sandbox = _run(base, users, say)
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    if as_json:
        print_json({"node": str(base) if keep else None, "sandbox": sandbox, "tasks": rows})
        return
    click.echo()
    print_table(
        ["DAG", "TASK", "STATE", "OS USER", "ENV", "DEMOLIB", "DURATION"],
        [
            [
                row["dag_id"],
                row["task_id"],
                row["state"],
                row["user"],
                row["env_key"][:12],
                row["library"] or "-",
                f"{row['duration']:.2f}s" if row["duration"] is not None else "-",
            ]
            for row in rows
        ],
    )
    click.echo(
        f"\nEach DAG ran in its own env with its own demolib, as {_who(users)}; sandbox: {sandbox}."
    )
    if keep:
        click.echo(f"The node is kept: ISOLATE_HOME={base / 'home'} isolate runs list demo.north")


def _who(users: dict[str, str] | None) -> str:
    if users is None:
        return f"you ({current_user()}: not root, so no OS users of its own)"
    return "its team's OS user (" + ", ".join(users.values()) + ")"


@contextlib.contextmanager
def _demo_users(say: Callable[[str], None]) -> Iterator[dict[str, str] | None]:
    """As root: one OS user per team, created now and removed after, whatever happens."""
    if os.geteuid() != 0:
        say(f"demo: not root: the tasks run as you ({current_user()})")
        yield None
        return
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        raise DemoError("the demo runs as root and needs useradd and userdel to make its users")
    users = {team: USER_PREFIX + team for team in TEAMS}
    for name in users.values():  # a leftover of an interrupted demo
        subprocess.run(["userdel", name], capture_output=True, check=False)
    try:
        for name in users.values():
            subprocess.run(
                ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                capture_output=True,
                check=True,
            )
        say(
            f"demo: root: the tasks run as two users made for the demo: {', '.join(users.values())}"
        )
        yield users
    except subprocess.CalledProcessError as exc:
        raise DemoError(f"cannot create the demo users: {exc.stderr.decode().strip()}") from None
    finally:
        for name in users.values():
            subprocess.run(["userdel", name], capture_output=True, check=False)
        say(f"demo: removed the users {', '.join(users.values())}")


def _interpreter() -> str:
    for path in _PYTHONS:
        if os.access(path, os.X_OK) and os.stat(path).st_mode & 0o001:
            return path
    raise DemoError(f"no interpreter every user may run among {', '.join(_PYTHONS)}")


def _run(base: Path, users: dict[str, str] | None, say: Any) -> tuple[list[dict[str, Any]], str]:
    mapping = base / "etc" / "tenants.toml"
    config = Config(
        home=base / "home",
        settings=Settings(
            env_python=_interpreter(),
            find_links=(str(DEMO_FILES / "wheelhouse"),),
            offline=True,
            tenants_file=str(mapping),  # never the host's /etc/isolate/tenants.toml
        ),
    )
    init_home(config)
    upgrade_database(config)
    if users is not None:
        _write_mapping(mapping, users)
    started = time.monotonic()
    run_ids: dict[str, str] = {}
    with open_store(config) as store:
        for team in TEAMS:
            folder = base / "src" / team
            shutil.copytree(DEMO_FILES / team, folder)
            lock_folder(
                folder,
                python=config.settings.env_python,
                find_links=[DEMO_FILES / "wheelhouse"],
                no_index=True,
                offline=True,
                cache_dir=base / "uv-cache",
            )
            (result,) = push_folder(store, folder, config=config, pushed_by=current_user())
            say(f"demo: locked and pushed demo.{team} version {result.version}, env built")
            run_ids[f"demo.{team}"] = trigger(store, f"demo.{team}", actor="demo").run_id
        with Scheduler(config, store, parallelism=2, poll_interval=0.02) as scheduler:
            sandbox = scheduler.sandbox(None, Path(config.settings.env_python)).describe()
            scheduler.run(until_idle=True)
        say(f"demo: both runs done in {time.monotonic() - started:.1f}s")
        rows = []
        for dag_id, run_id in run_ids.items():
            for ti in store.tasks.list(dag_id, run_id):
                seen = ti.xcom if isinstance(ti.xcom, dict) else {}
                duration = None
                if ti.started_at is not None and ti.ended_at is not None:
                    duration = (ti.ended_at - ti.started_at).total_seconds()
                rows.append(
                    {
                        "dag_id": dag_id,
                        "task_id": ti.task_id,
                        "state": ti.state.value,
                        "user": ti.run_as or "-",
                        "env_key": ti.env_key or "",
                        "library": seen.get("library"),
                        "duration": duration,
                        "ok": ti.state is TaskState.SUCCESS,
                    }
                )
    return rows, sandbox


def _write_mapping(path: Path, users: dict[str, str]) -> None:
    path.parent.mkdir(mode=0o755)
    me = pwd.getpwuid(os.geteuid()).pw_name
    text = "".join(
        f'[[tenant]]\nname = "{team}"\ndags = ["demo.{team}"]\npushers = ["{me}"]\n'
        f'run_as = "{user}"\n\n'
        for team, user in users.items()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
