"""One local user against the push socket: it keeps serving everyone else, for real.

Real sockets and threads: a frame nested 200,000 deep, a client that trickles its request,
one user holding connections open, faults injected in a connection's handling and in the
accept loop, and tasks (a mimic, and a real task of the scheduler) trying to push.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import pwd
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isolate.config import load_config
from isolate.model import Limits
from isolate.services.dagfile import FolderSnapshot, load_folder
from isolate.services.pushclient import push_via_server
from isolate.services.pushwire import INTERNAL_ERROR, LATE, encode_request
from isolate.services.triggering import trigger
from localexec.cgroups import AttemptCgroup, detect, release
from localexec.pushserver import PushServer
from localexec.scheduler import Scheduler
from tests.conftest import write_folder
from tests.osusers import os_users
from tests.test_push_server import AUTHOR, DAG, ROBOT, USERS, as_user, running_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users")

_LENGTH = struct.Struct(">I")


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    with os_users(*USERS) as made:
        yield made


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[PushServer]:
    with running_server(monkeypatch, timeout=10) as running:
        yield running


def folder(tmp_path: Path, dag_id: str) -> FolderSnapshot:
    return load_folder(write_folder(tmp_path / dag_id, {"dag.py": DAG.format(dag_id=dag_id)}))


def push_as(user: pwd.struct_passwd, server: PushServer, snapshot: FolderSnapshot) -> Any:
    """``user``'s push of ``snapshot`` (a forked child): its result or error."""
    return as_user(user, lambda: len(push_via_server(server.path, snapshot, None)))


def connect(server: PushServer) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(str(server.path))
    return conn


def read_reply(conn: socket.socket) -> dict[str, Any]:
    """The reply, read to EOF; {} if none came (a reset after it counts as its end: the
    server does not read what it refuses)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            data += chunk
    reply: dict[str, Any] = json.loads(data[_LENGTH.size :]) if data else {}
    return reply


def send_raw(server: PushServer, payload: bytes) -> dict[str, Any]:
    """Send ``payload`` as the whole request; the server's reply ({} if it sent none)."""
    with connect(server) as conn:
        # The server may close it first (a refusal, a fault): what it said is still there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
        return read_reply(conn)


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_frame_nested_200000_deep_is_refused_and_the_server_goes_on(
    server: PushServer, users: dict[str, pwd.struct_passwd], tmp_path: Path
) -> None:
    for body, why in (
        (b"[" * 200_000, "nested deeper than 64 levels"),
        (b'{"version": NaN}', "NaN is not a JSON number"),
        (b'{"version": 1e999}', "out of range"),
    ):
        reply = send_raw(server, _LENGTH.pack(len(body)) + body)
        assert reply["ok"] is False and why in reply["error"], reply
    assert push_as(users[AUTHOR], server, folder(tmp_path, "team.after")) == {"ok": 1}
    health = server.health()
    assert health["alive"] and health["internal_errors"] == 0 and health["restarts"] == 0
    assert health["failed"] == 3 and health["served"] == 1


def test_a_client_trickling_its_request_is_cut_off_while_another_pushes(
    monkeypatch: pytest.MonkeyPatch, users: dict[str, pwd.struct_passwd], tmp_path: Path
) -> None:
    request = encode_request(folder(tmp_path, "team.slow"), None)
    seen: dict[str, Any] = {}

    def trickle(conn: socket.socket) -> None:
        """A byte every 0.3 s until the server answers: it never finishes on its own."""
        began = time.monotonic()
        for byte in request[:40]:
            conn.sendall(bytes([byte]))
            if select.select([conn], [], [], 0.3)[0]:
                break
        seen["after"], seen["reply"] = time.monotonic() - began, read_reply(conn)

    with running_server(monkeypatch, timeout=1.0) as server:
        conn = connect(server)
        slow = threading.Thread(target=trickle, args=(conn,))
        slow.start()
        wait_for(lambda: server.health()["active"] == 1)
        pushed = push_as(users[AUTHOR], server, folder(tmp_path, "team.fast"))
        pushed_while_slow_was_on = "reply" not in seen
        slow.join(timeout=10)
        conn.close()
        assert pushed == {"ok": 1} and pushed_while_slow_was_on
        assert seen["reply"] == {"ok": False, "error": LATE}
        assert 0.9 <= seen["after"] < 2.5, seen  # the whole request's deadline, not per read
        assert server.store.get_version("team.fast").pushed_by == AUTHOR


def test_one_user_holds_at_most_two_connections(
    server: PushServer, users: dict[str, pwd.struct_passwd], tmp_path: Path
) -> None:
    held = [connect(server), connect(server)]  # root's, sending nothing
    try:
        wait_for(lambda: server.health()["active"] == 2)
        with connect(server) as third:
            assert read_reply(third) == {
                "ok": False,
                "error": "too many connections from root at once (at most 2): "
                "wait for your other pushes to finish",
            }
        # Another user is not held up by root's connections.
        assert push_as(users[AUTHOR], server, folder(tmp_path, "team.other")) == {"ok": 1}
    finally:
        for conn in held:
            conn.close()
    wait_for(lambda: server.health()["active"] == 0)
    assert len(push_via_server(server.path, folder(tmp_path, "team.root"), None)) == 1
    assert server.health()["refused"] == 1


def test_stopping_cuts_off_clients_still_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(monkeypatch, timeout=30) as server, connect(server) as conn:
        conn.sendall(b"\x00\x00")  # half a length prefix, then nothing for 30 s
        wait_for(lambda: server.health()["active"] == 1)
        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < 2 and not server.health()["alive"]
        assert read_reply(conn) == {}  # cut off, not answered


def fail_once(
    monkeypatch: pytest.MonkeyPatch, target: object, name: str, error: Exception
) -> list[int]:
    """Make ``target.name`` raise ``error`` on its first call only; the calls so far."""
    original = getattr(target, name)
    calls: list[int] = []

    def patched(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, patched)
    return calls


def test_a_fault_handling_one_connection_is_answered_and_logged(
    server: PushServer,
    users: dict[str, pwd.struct_passwd],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="isolate.pushserver")
    fail_once(monkeypatch, server, "handle", RuntimeError("injected fault"))
    snapshot = folder(tmp_path, "team.fault")
    failed = push_as(users[AUTHOR], server, snapshot)
    assert failed == {"error": f"IsolateError: push server: {INTERNAL_ERROR}"}
    assert push_as(users[AUTHOR], server, snapshot) == {"ok": 1}
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.name == "isolate.pushserver" and "internal error" in record.getMessage()
    assert record.exc_info is not None and str(record.exc_info[1]) == "injected fault"
    health = server.health()
    assert (health["internal_errors"], health["served"], health["restarts"]) == (1, 1, 0)
    assert health["last_error"] == "RuntimeError: injected fault"


def test_the_accept_loop_is_restarted_after_a_fault(
    server: PushServer,
    users: dict[str, pwd.struct_passwd],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="isolate.pushserver")
    fail_once(monkeypatch, server, "_admit", RuntimeError("accept loop fault"))
    assert send_raw(server, b"\x00") == {}  # its connection went with the loop
    wait_for(lambda: server.health()["restarts"] == 1)
    assert push_as(users[AUTHOR], server, folder(tmp_path, "team.again")) == {"ok": 1}
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "restarting it" in record.getMessage() and record.exc_info is not None
    health = server.health()
    assert health["alive"] and health["last_error"] == "RuntimeError: accept loop fault"


def denials(server: PushServer) -> list[tuple[str, str, str]]:
    return [
        (a.actor, a.target, str((a.details or {}).get("reason")))
        for a in server.store.list_audit()
        if a.outcome == "denied"
    ]


def test_a_process_that_left_the_schedulers_session_cannot_push(
    server: PushServer, users: dict[str, pwd.struct_passwd], tmp_path: Path
) -> None:
    """Like a task: forked by the server's process, then ``setsid`` (a task's first step)."""
    snapshot = folder(tmp_path, "team.mimic")
    refused = as_user(
        users[AUTHOR], lambda: push_via_server(server.path, snapshot, None), before=os.setsid
    )
    assert "PushDeniedError: push server: a task may not push (pid" in refused["error"]
    assert "was started by the scheduler" in refused["error"]
    [(actor, target, reason)] = denials(server)
    assert (actor, target) == (AUTHOR, "-") and reason.startswith("a task may not push")
    assert server.store.list_dags() == []


def test_a_process_in_an_attempt_cgroup_cannot_push(
    server: PushServer, users: dict[str, pwd.struct_passwd], tmp_path: Path
) -> None:
    """Even in the server's session: the cgroup, which no task can leave, is enough."""
    where, finding = detect(server.config.home)
    if where is None:
        pytest.skip(f"no cgroups for attempts here: {finding}")
    snapshot = folder(tmp_path, "team.cg")
    group = AttemptCgroup.create(where, "mimic", Limits())
    try:
        refused = as_user(
            users[AUTHOR], lambda: push_via_server(server.path, snapshot, None), before=group.join
        )
    finally:
        group.remove()
        release(where)
    assert "a task may not push" in refused["error"] and "attempt cgroup" in refused["error"]
    assert server.store.list_dags() == []


PUSHER = """
import base64
import socket

from isolate import DAG, task

with DAG("robot.pusher"):
    @task
    def push():
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect({path!r})
        conn.sendall(base64.b64decode({request!r}))
        conn.shutdown(socket.SHUT_WR)
        # One read: the reply is one small write. Reading on to EOF could get a reset
        # instead, as the server closes without reading a refused request.
        return conn.recv(65536)[4:].decode()

    push()
"""


def test_a_task_run_by_the_scheduler_cannot_push(
    server: PushServer,
    users: dict[str, pwd.struct_passwd],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """robot's task runs as robot's user, who may push robot's DAGs, but not from a task."""
    other = folder(tmp_path, "robot.other")
    request = base64.b64encode(encode_request(other, "from a task")).decode()
    source = PUSHER.format(path=str(server.path), request=request)
    pusher = load_folder(write_folder(tmp_path / "pusher", {"dag.py": source}))
    push_via_server(server.path, pusher, None)  # root: an admin
    run = trigger(server.store, "robot.pusher", actor="root")
    # Under bubblewrap the socket is not even there; without it, the server must refuse.
    monkeypatch.setenv("ISOLATE_BUBBLEWRAP", "off")
    config = load_config(server.config.home)
    with Scheduler(config, server.store, parallelism=1, poll_interval=0.02) as scheduler:
        scheduler.run(until_idle=True)
    [task] = server.store.tasks.list("robot.pusher", run.run_id)
    assert task.state.value == "success" and task.run_as == ROBOT, task.outcome
    reply = json.loads(task.xcom)
    assert reply["ok"] is False and reply["denied"] is True
    assert reply["error"].startswith("a task may not push (pid"), reply
    assert [(actor, target) for actor, target, _ in denials(server)] == [(ROBOT, "-")]
    assert [d.dag_id for d in server.store.list_dags()] == ["robot.pusher"]
    # The same request from robot's user outside a task is stored.
    assert push_as(users[ROBOT], server, other) == {"ok": 1}
