"""``isolate demo``: the point of isolate in a minute, on a throwaway node.

Two teams' DAGs need incompatible versions of one library (``demolib`` 1.0 and 2.0, from the
wheelhouse shipped in ``cli/demo_files``, so nothing is downloaded). The demo locks and
pushes both, builds their envs, runs one run of each and shows what ran where: as root, as
two OS users it creates for the demo (and removes after), each mapped to its team in a
tenant mapping; otherwise as the current user, which it says. Everything it makes lives in
one temporary directory, removed at the end unless ``--keep``.

Two demos may run at once: each names its users after its pid (``isodemo-north-4242``) and
removes only the users it created. Whatever ends a demo (an error, Ctrl-C, SIGTERM, a closed
terminal), its tasks are killed, its users removed and its directory deleted (``--keep``
keeps only a demo that completed); a second signal during that cleanup waits for its end.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
import psutil

from cli.options import json_option
from cli.output import print_json, print_table
from envcache.tree import remove_tree
from isolate.config import Config, Settings, current_user
from isolate.errors import IsolateError
from isolate.services.home import init_home, open_store, upgrade_database
from isolate.services.locking import lock_folder
from isolate.services.push import push_folder
from isolate.services.triggering import trigger
from isolate.states import TaskState
from localexec.orphans import kill_if_alive
from localexec.scheduler import Scheduler

if TYPE_CHECKING:
    from isolate.store import Store

DEMO_FILES = Path(__file__).resolve().parent / "demo_files"
TEAMS = ("north", "south")
USER_PREFIX = "isodemo-"
# The node's parent when TMPDIR is private: the node itself is a fresh 0711 mkdtemp.
_SHARED_TMP = "/tmp"  # noqa: S108
# Signals that end a demo like Ctrl-C does (the default action would skip the cleanup), and
# that wait while it cleans up.
_STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Envs must be usable by the demo users: a world-executable interpreter.
_PYTHONS = ("/usr/bin/python3", "/usr/bin/python3.11", "/usr/local/bin/python3")


class DemoError(IsolateError):
    """The demo cannot run on this machine."""


@click.command()
@click.option(
    "--keep", is_flag=True, help="Keep the throwaway node (if the demo completes): say where."
)
@json_option
def demo(keep: bool, as_json: bool) -> None:
    """Run two teams' DAGs that need conflicting versions of one library, side by side.

    Creates a throwaway node, locks and pushes the two example DAGs (their library comes
    from a wheelhouse shipped with isolate: no network), builds their envs, runs them and
    prints what ran where: task, state, OS user, env, library version seen, duration. As
    root, the tasks run as two OS users created for the demo (named after its pid, so that
    demos may run at once) and removed after; otherwise as you. However it ends, it leaves
    no user and no directory behind. Takes a few seconds once isolate is installed.

    \b
    Example:
      isolate demo
    """

    def say(text: str) -> None:
        if not as_json:
            click.echo(text, err=True)

    with _signals_interrupt():
        base = Path(tempfile.mkdtemp(prefix="isolate-demo-", dir=_node_parent(say)))
        completed = False
        try:
            os.chmod(base, 0o711)  # noqa: S103 - the demo users traverse it to their work dirs
            say(f"demo: a throwaway node in {base}" + ("" if keep else " (removed at the end)"))
            with _demo_users(say) as users:
                rows, sandbox = _run(base, users, say)
            completed = True
        finally:
            if not (keep and completed):
                with _signals_held():
                    _remove_tree(base)
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


def _node_parent(say: Callable[[str], None]) -> str:
    """Where the throwaway node goes: the temporary directory, if the demo users (as root)
    can reach it (a TMPDIR under root's 0700 home is not), else /tmp."""
    tmp = tempfile.gettempdir()
    if os.geteuid() != 0 or _reachable(tmp):
        return tmp
    if _reachable(_SHARED_TMP):
        say(f"demo: the demo users cannot reach {tmp}: the node goes in {_SHARED_TMP}")
        return _SHARED_TMP
    raise DemoError(
        f"no temporary directory the demo users can reach ({tmp}, {_SHARED_TMP}): set TMPDIR"
    )


def _reachable(path: str) -> bool:
    """Whether every user may traverse ``path`` and every directory above it."""
    try:
        real = Path(path).resolve(strict=True)
        return all(os.stat(d).st_mode & 0o001 for d in (real, *real.parents))
    except OSError:
        return False


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the demo as Ctrl-C does, through its cleanup."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {signum: signal.signal(signum, interrupt) for signum in _STOPPING[1:]}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C (and the other stopping signals) wait until the block is done: a cleanup, or a
    user created and recorded, is never cut in half; what arrived is delivered after. They
    are blocked in this thread (and so in the commands it runs, userdel say, which a Ctrl-C
    at the terminal reaches too) and, for this process's other threads, deferred."""
    arrived: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {
            signum: signal.signal(signum, lambda got, _frame: arrived.append(got))
            for signum in _STOPPING
        }
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending one arrives now
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if arrived:
            signal.raise_signal(arrived[0])


def _remove_tree(base: Path) -> None:
    """Remove the node, read-only envs and bundles too (not root, its owner must make their
    directories writable first)."""
    for _ in range(3):  # a task killed a moment ago may still have been writing
        remove_tree(base)
        if not base.exists():
            return
        time.sleep(0.2)
    click.echo(f"demo: could not remove all of {base}: remove it yourself", err=True)


@contextlib.contextmanager
def _demo_users(say: Callable[[str], None]) -> Iterator[dict[str, str] | None]:
    """As root: one OS user per team, created now and removed after, whatever happens.

    Each is named after the team and this process (``isodemo-north-4242``), so that another
    demo running at the same time keeps its own; a name that is taken (a user this demo did
    not make) is left alone and the next free one is used. Only the users created here are
    removed, after their processes are killed."""
    if os.geteuid() != 0:
        say(f"demo: not root: the tasks run as you ({current_user()})")
        yield None
        return
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        raise DemoError("the demo runs as root and needs useradd and userdel to make its users")
    made: dict[str, pwd.struct_passwd] = {}
    try:
        for team in TEAMS:
            with _signals_held():
                made[team] = _add_user(team)
        names = [entry.pw_name for entry in made.values()]
        say(f"demo: root: the tasks run as two users made for the demo: {', '.join(names)}")
        yield {team: entry.pw_name for team, entry in made.items()}
    finally:
        if made:
            with _signals_held():
                _remove_users(list(made.values()), say)


def _add_user(team: str) -> pwd.struct_passwd:
    """A new login-less user for ``team``, under a name no other user has."""
    stem = f"{USER_PREFIX}{team}-{os.getpid()}"
    for attempt in range(10):
        name = stem if attempt == 0 else f"{stem}-{attempt}"
        done = _passwd_tool("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name)
        if done.returncode == 9:  # the name is in use: someone else's, not ours to touch
            continue
        if done.returncode != 0:
            raise DemoError(f"cannot create the demo user {name}: {done.stderr.strip()}")
        return pwd.getpwnam(name)
    raise DemoError(f"cannot create a demo user: the names {stem}, {stem}-1, ... are taken")


def _remove_users(users: list[pwd.struct_passwd], say: Callable[[str], None]) -> None:
    removed = []
    for user in users:
        try:
            if pwd.getpwnam(user.pw_name).pw_uid != user.pw_uid:
                continue  # no longer the user this demo made
        except KeyError:
            continue  # gone already
        _kill_processes(user.pw_uid)
        done = _passwd_tool("userdel", user.pw_name)
        if done.returncode == 0:
            removed.append(user.pw_name)
        else:
            click.echo(
                f"demo: could not remove the user {user.pw_name}: {done.stderr.strip()}; "
                f"remove it with `userdel {user.pw_name}`",
                err=True,
            )
    if removed:
        say(f"demo: removed the users {', '.join(removed)}")


def _kill_processes(uid: int) -> None:
    """Kill every process of ``uid`` (a demo user: its tasks, were the demo interrupted)
    and wait until they are gone, so that userdel finds none."""
    deadline = time.monotonic() + 5.0
    while True:
        left = False
        for process in psutil.process_iter(["uids", "status"]):
            uids = process.info["uids"]
            if uids is None or uid not in uids:
                continue
            left = True
            if process.info["status"] != psutil.STATUS_ZOMBIE:
                with contextlib.suppress(psutil.Error):
                    process.kill()
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _passwd_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    """useradd or userdel, again while another process holds /etc/passwd's lock (exit 10):
    another demo, or a test, changing users at the same moment."""
    deadline = time.monotonic() + 10.0
    while True:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 10 or time.monotonic() > deadline:
            return done
        time.sleep(0.1)


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
            try:
                scheduler.run(until_idle=True)
            except BaseException:
                with _signals_held():
                    _stop_attempts(store, run_ids)
                raise
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


def _stop_attempts(store: Store, run_ids: dict[str, str]) -> None:
    """Kill the attempts of an interrupted demo that are still running."""
    for dag_id, run_id in run_ids.items():
        with contextlib.suppress(Exception):
            for ti in store.tasks.list(dag_id, run_id):
                if ti.state is TaskState.RUNNING:
                    kill_if_alive(ti.pid, ti.pid_started)


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
