"""The scheduler's push socket: authors who cannot write the store push through it.

The caller is identified by the kernel (``SO_PEERCRED``), never by anything it sends. An
admin (root, or the home's owner) may push any DAG; anyone else only the DAGs the tenant
mapping lets them push, and every refusal is audited. The request is hostile input: it is
size-capped, and its specs and bundle are validated as at a direct push before anything is
stored; nothing in it is imported.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import socket
import stat
import struct
import threading
from pathlib import Path

from envcache.errors import EnvCacheError
from isolate.config import Config
from isolate.errors import IsolateError
from isolate.push import commit_snapshot
from isolate.pushclient import PushDeniedError, socket_path
from isolate.pushwire import error_reply, frame, read_request
from isolate.store import Store
from isolate.tenancy import user_groups
from localexec.tenants import TenantWatch

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class PushServer:
    def __init__(self, config: Config, store: Store, *, timeout: float = 60.0) -> None:
        self.config = config
        self.store = store
        self.timeout = timeout
        self.path: Path = socket_path(config)
        self.tenants = TenantWatch(config, store)
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen on the socket (replacing a stale one) and serve in a background thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self.path.unlink()  # left by a scheduler that was killed
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        # Anyone may connect: who they are is the kernel's answer, checked per request.
        os.chmod(self.path, 0o666)  # noqa: S103
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="push-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._sock is not None:
            self._sock.close()
            self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        """Serve one request; every failure becomes a one-line reply, never a crash."""
        conn.settimeout(self.timeout)
        try:
            _pid, uid, _gid = _UCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
            user = _name(uid)
            request = read_request(conn, self.config.settings)
            self.authorize(user, uid, [dag.spec.dag_id for dag in request.snapshot.dags])
            results = commit_snapshot(
                self.store,
                request.snapshot,
                config=self.config,
                pushed_by=user,
                message=request.message,
            )
            reply = {"ok": True, "results": [dataclasses.asdict(r) for r in results]}
        except PushDeniedError as exc:
            reply = {**error_reply(exc), "denied": True}
        except (IsolateError, EnvCacheError) as exc:
            reply = error_reply(IsolateError(str(exc)))
        except (OSError, ValueError, struct.error) as exc:
            reply = error_reply(exc)
        try:
            conn.sendall(frame(reply))
        except OSError:
            pass  # the client went away; its push was stored or refused all the same

    def authorize(self, user: str, uid: int, dag_ids: list[str]) -> None:
        """Admins push anything; others what the mapping allows them. Refusals are audited."""
        if uid == 0 or uid == os.stat(self.config.home).st_uid:
            return
        mapping = self.tenants.current()
        groups = user_groups(user) if mapping is not None else frozenset()
        for dag_id in dag_ids:
            if mapping is None:
                reason = "this node has no tenant mapping: only admins push"
            elif mapping.owner(dag_id) is None:
                reason = f"no tenant owns DAG {dag_id!r}"
            elif not mapping.may_push(user, groups, dag_id):
                reason = f"{user} may not push DAG {dag_id!r}"
            else:
                continue
            self.store.audit(user, "push", dag_id, outcome="denied", details={"reason": reason})
            raise PushDeniedError(reason)


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
