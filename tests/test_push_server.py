"""Authenticated push: authors push through the scheduler's socket, identified by the kernel."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import socket
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from isolate.config import Settings, load_config
from isolate.errors import IsolateError
from isolate.services.dagfile import load_folder
from isolate.services.home import init_home, open_store, upgrade_database
from isolate.services.pushclient import NoPushServerError, push_via_server, socket_path
from isolate.services.pushwire import decode_snapshot
from localexec.pushserver import PushServer
from tests.conftest import PYTHON, write_folder
from tests.osusers import clear_isolate_env, os_users, unique

AUTHOR, OUTSIDER, RUNNER = unique("isops-author"), unique("isops-outsider"), unique("isops-runner")
ROBOT = unique("isops-robot")
USERS = (AUTHOR, OUTSIDER, RUNNER, ROBOT)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users")

# The robot tenant's user may push its DAGs, and its tasks run as that user too.
MAPPING = textwrap.dedent(
    f"""
    [[tenant]]
    name = "team"
    dags = ["team.*"]
    pushers = ["{AUTHOR}"]
    run_as = "{RUNNER}"

    [[tenant]]
    name = "robot"
    dags = ["robot.*"]
    pushers = ["{ROBOT}"]
    run_as = "{ROBOT}"
    """
)


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    with os_users(*USERS) as made:
        yield made


@contextmanager
def running_server(monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[PushServer]:
    """A fresh home, its tenant mapping and a started push server (``options`` are its)."""
    base = Path(tempfile.mkdtemp(prefix="isolate-push-"))
    os.chmod(base, 0o711)
    (base / "etc").mkdir(mode=0o755)
    mapping = base / "etc" / "tenants.toml"
    mapping.write_text(MAPPING)
    os.chmod(mapping, 0o644)
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_OFFLINE", "true")
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", PYTHON)
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(mapping))
    config = load_config(base / "home")
    init_home(config)
    upgrade_database(config)
    store = open_store(config)
    running = PushServer(config, store, **options)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        store.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[PushServer]:
    with running_server(monkeypatch, timeout=10) as running:
        yield running


def as_user(
    user: pwd.struct_passwd,
    action: Callable[[], Any],
    *,
    before: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``action()`` in a forked child that has become ``user`` (after ``before()``, run
    as root); its JSON result or error."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            if before is not None:
                before()
            os.setgroups([user.pw_gid])
            os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
            os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
            try:
                result = {"ok": action()}
            except Exception as exc:  # reported to the parent
                result = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write, json.dumps(result, default=str).encode())
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parsed: dict[str, Any] = json.loads(data)
    return parsed


DAG = (
    "from isolate import DAG, CommandTask\n"
    'with DAG("{dag_id}"):\n'
    '    CommandTask("t", command=["true"])\n'
)


def test_a_mapped_author_pushes_through_the_socket_as_themselves(
    server: PushServer, users: dict[str, pwd.struct_passwd], tmp_path: Path
) -> None:
    snapshot = load_folder(
        write_folder(tmp_path / "team", {"dag.py": DAG.format(dag_id="team.etl")})
    )
    pushed = as_user(
        users[AUTHOR],
        lambda: [r.__dict__ for r in push_via_server(server.path, snapshot, "from the author")],
    )
    assert "error" not in pushed, pushed
    assert pushed["ok"][0]["dag_id"] == "team.etl" and pushed["ok"][0]["version"] == 1
    record = server.store.get_version("team.etl")
    assert record.pushed_by == AUTHOR and record.message == "from the author"
    again = as_user(
        users[AUTHOR], lambda: [r.created for r in push_via_server(server.path, snapshot, None)]
    )
    assert again == {"ok": [False]}


def test_others_are_refused_and_audited(
    server: PushServer, users: dict[str, pwd.struct_passwd], tmp_path: Path
) -> None:
    team = load_folder(write_folder(tmp_path / "team", {"dag.py": DAG.format(dag_id="team.x")}))
    stray = load_folder(write_folder(tmp_path / "stray", {"dag.py": DAG.format(dag_id="stray")}))
    refused = as_user(users[OUTSIDER], lambda: push_via_server(server.path, team, None))
    assert refused["error"] == f"PushDeniedError: push server: {OUTSIDER} may not push DAG 'team.x'"
    unowned = as_user(users[AUTHOR], lambda: push_via_server(server.path, stray, None))
    assert "no tenant owns DAG 'stray'" in unowned["error"]
    denied = [(a.actor, a.target) for a in server.store.list_audit() if a.outcome == "denied"]
    assert (OUTSIDER, "team.x") in denied and (AUTHOR, "stray") in denied
    assert server.store.list_dags() == []


def test_hostile_requests_get_an_error_and_the_server_keeps_serving(
    server: PushServer, users: dict[str, pwd.struct_passwd], tmp_path: Path
) -> None:
    for payload in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x05hello", b"\x00\x00\x00\x02{}"):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(server.path))
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        reply = conn.recv(65536)
        conn.close()
        assert b'"ok": false' in reply
    good = load_folder(write_folder(tmp_path / "ok", {"dag.py": DAG.format(dag_id="team.ok")}))
    tampered = good.__class__(
        bundle=good.bundle.__class__(
            data=good.bundle.data + b"\0" * 512, hash=good.bundle.hash, files=good.bundle.files
        ),
        dags=good.dags,
    )
    bad = as_user(users[AUTHOR], lambda: push_via_server(server.path, tampered, None))
    assert "bundle hash is not the sent bundle's" in bad["error"]
    assert as_user(users[AUTHOR], lambda: len(push_via_server(server.path, good, None))) == {
        "ok": 1
    }
    assert os.stat(socket_path(server.config)).st_mode & 0o777 == 0o666


def test_a_push_with_no_scheduler_serving_exits_with_its_own_code(tmp_path: Path) -> None:
    snapshot = load_folder(write_folder(tmp_path / "dags", {"dag.py": DAG.format(dag_id="x")}))
    with pytest.raises(NoPushServerError, match="no scheduler is serving pushes") as raised:
        push_via_server(tmp_path / "push.sock", snapshot, None)
    assert raised.value.exit_code == 9


def test_the_server_applies_the_bundle_file_cap_to_what_it_receives(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "dags", {"dag.py": DAG.format(dag_id="many")})
    for index in range(4):
        (folder / f"extra{index}.txt").write_text("x")
    snapshot = load_folder(folder)
    specs = [dag.canonical for dag in snapshot.dags]
    tight = dataclasses.replace(Settings(), max_bundle_files=3)
    with pytest.raises(IsolateError, match="over the cap of 3 .setting max_bundle_files"):
        decode_snapshot(specs, snapshot.bundle.data, tight)
    assert decode_snapshot(specs, snapshot.bundle.data, Settings()).dags
