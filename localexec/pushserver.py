"""The scheduler's push socket: authors who cannot write the store push through it.

The caller is identified by the kernel (``SO_PEERCRED``), never by anything it sends. An
admin (root, or the home's owner) may push any DAG; anyone else only the DAGs the tenant
mapping lets them push, and every refusal is audited. A task of the scheduler may not push
at all, whoever it runs as.

The socket is open to every local user and every byte is hostile, so no one user can stop
it serving the others: a request is size-capped, its JSON finite and at most 64 levels
deep, and it must arrive within one deadline (not one per read); connections are served
at once by a few workers, at most two per user; a fault in one connection is answered and
logged, and the accept loop, should it ever fail, is restarted (:meth:`PushServer.health`
says how it is doing). Specs and bundle are validated as at a direct push before anything
is stored; nothing in them is imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import pwd
import re
import socket
import stat
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from envcache.errors import EnvCacheError
from isolate.config import Config
from isolate.errors import IsolateError
from isolate.services.push import commit_snapshot
from isolate.services.pushclient import PushDeniedError, socket_path
from isolate.services.pushwire import error_reply, frame, internal_error_reply, read_request
from isolate.store import Store
from isolate.tenancy import user_groups
from localexec.tenants import TenantWatch

log = logging.getLogger("isolate.pushserver")

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_ACCEPT_POLL = 0.2  # how soon the accept loop sees a stop
# Accept failures that say "not now" (out of descriptors or memory), not "broken".
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}
_TRANSIENT_PAUSE = 0.1
_FIRST_RESTART_PAUSE = 0.05
_MAX_RESTART_PAUSE = 5.0
# An attempt's cgroup is <parent>/<attempt> with the parent named isolate-<12 hex digits>
# (localexec/cgroups.py), in each hierarchy a node uses.
_ATTEMPT_CGROUP = re.compile(r"(?:^|/)isolate-[0-9a-f]{12}/[^/]")
_TRACE_TRIES = 3


@dataclasses.dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, as the kernel reported it."""

    pid: int
    uid: int
    user: str


@dataclasses.dataclass
class _Stats:
    accepted: int = 0
    served: int = 0
    refused: int = 0
    failed: int = 0
    internal_errors: int = 0
    restarts: int = 0
    last_error: str | None = None


class PushServer:
    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        timeout: float = 60.0,
        max_connections: int = 8,
        max_per_user: int = 2,
    ) -> None:
        """``timeout``: seconds a client has, from its connection being accepted, to send
        its whole request. ``max_connections`` are served at once, at most ``max_per_user``
        of them from one uid; a connection over either cap gets a one-line refusal."""
        self.config = config
        self.store = store
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_per_user = max_per_user
        self.path: Path = socket_path(config)
        self.tenants = TenantWatch(config, store)
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # guards what follows, and the stats
        self._per_uid: dict[int, int] = {}
        self._open: set[socket.socket] = set()
        self._stats = _Stats()
        self._tenants_lock = threading.Lock()  # TenantWatch reloads are not thread-safe
        # Two pushes of one DAG at once would race for its next version number, and env
        # builds for the same lock for its directory: commits go one at a time (reading
        # requests, the slow and hostile part, does not).
        self._commit_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on the socket (replacing a stale one) and serve in background threads."""
        self._stop.clear()
        self._listen()
        self._pool = ThreadPoolExecutor(self.max_connections, thread_name_prefix="push-conn")
        self._thread = threading.Thread(target=self._supervise, name="push-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, cut off clients still sending, wait for commits under way."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._sock is not None:
            self._sock.close()
            self.path.unlink(missing_ok=True)

    def health(self) -> dict[str, Any]:
        """How the server is doing, for the admin: whether it accepts connections, how
        often its accept loop was restarted, connections open now, served (pushes stored
        or found unchanged), refused (over a cap, or denied), failed (bad or late requests,
        internal errors), internal errors, and the last internal error."""
        with self._lock:
            stats = dataclasses.asdict(self._stats)
            active = sum(self._per_uid.values())
        thread = self._thread
        alive = thread is not None and thread.is_alive() and not self._stop.is_set()
        return {"alive": alive, "active": active, **stats}

    def _listen(self) -> None:
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
        sock.settimeout(_ACCEPT_POLL)
        self._sock = sock

    # -- the accept loop and its supervisor -------------------------------------------------

    def _supervise(self) -> None:
        """Run the accept loop; if it fails, log why and run it again, pausing longer after
        each failure that came before any connection was accepted (a persistent fault)."""
        failures = 0
        while not self._stop.is_set():
            accepted = self._stats.accepted
            try:
                self._serve()
                return
            except Exception as exc:
                log.exception("the push server's accept loop failed; restarting it")
                with self._lock:
                    self._stats.restarts += 1
                    self._stats.last_error = _one_line(exc)
            failures = 0 if self._stats.accepted > accepted else failures + 1
            self._stop.wait(min(_MAX_RESTART_PAUSE, _FIRST_RESTART_PAUSE * 2**failures))
            if self._sock is None or self._sock.fileno() == -1:
                self._listen()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                if exc.errno not in _TRANSIENT:
                    raise
                log.warning("push server cannot accept a connection now: %s", exc)
                self._stop.wait(_TRANSIENT_PAUSE)
                continue
            with self._lock:
                self._stats.accepted += 1
            try:
                self._admit(conn, deadline=time.monotonic() + self.timeout)
            except BaseException:
                conn.close()
                raise

    def _admit(self, conn: socket.socket, *, deadline: float) -> None:
        """Hand ``conn`` to a worker, or refuse it at once if a cap is reached."""
        try:
            peer = peer_of(conn)
        except OSError:
            conn.close()  # gone already
            return
        refusal = self._reserve(conn, peer.uid)
        if refusal is not None:
            self._turn_away(conn, peer, refusal)
            return
        assert self._pool is not None
        try:
            self._pool.submit(self._work, conn, peer, deadline)
        except RuntimeError:  # the pool is shut down: we are stopping
            self._release(conn, peer.uid)
            conn.close()

    def _reserve(self, conn: socket.socket, uid: int) -> str | None:
        """Count ``conn``, of ``uid``, in (from now on stop() cuts it off, even before a
        worker picks it up); why not, if a cap is reached."""
        with self._lock:
            if sum(self._per_uid.values()) >= self.max_connections:
                return "the push server is busy: try again shortly"
            if self._per_uid.get(uid, 0) >= self.max_per_user:
                return (
                    f"too many connections from {_name(uid)} at once (at most "
                    f"{self.max_per_user}): wait for your other pushes to finish"
                )
            self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
            self._open.add(conn)
            return None

    def _release(self, conn: socket.socket, uid: int) -> None:
        with self._lock:
            self._open.discard(conn)
            left = self._per_uid.get(uid, 1) - 1
            if left > 0:
                self._per_uid[uid] = left
            else:
                self._per_uid.pop(uid, None)

    def _turn_away(self, conn: socket.socket, peer: Peer, reason: str) -> None:
        """Refuse over a cap without ever blocking the accept loop: one small write."""
        log.info("push connection from %s (uid %d) refused: %s", peer.user, peer.uid, reason)
        with self._lock:
            self._stats.refused += 1
        with conn:
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.send(frame(error_reply(IsolateError(reason))))

    # -- one connection ---------------------------------------------------------------------

    def _work(self, conn: socket.socket, peer: Peer, deadline: float) -> None:
        """A worker's whole job for one connection: nothing in it escapes, and its slot
        is given back whatever happens."""
        try:
            self.handle(conn, peer, deadline=deadline)
        except Exception as exc:
            log.exception("push from %s (pid %d): internal error", peer.user, peer.pid)
            with self._lock:
                self._stats.internal_errors += 1
                self._stats.failed += 1
                self._stats.last_error = _one_line(exc)
            self._reply(conn, internal_error_reply())
        finally:
            self._release(conn, peer.uid)  # before closing: stop() shuts down only open ones
            conn.close()

    def handle(self, conn: socket.socket, peer: Peer, *, deadline: float) -> None:
        """Serve one request from ``peer``, read by ``deadline`` (``time.monotonic()``);
        every expected failure becomes a one-line reply. Raises only on a fault of the
        server's own, which the caller answers as an internal error."""
        try:
            self.refuse_tasks(peer)
            try:
                request = read_request(conn, self.config.settings, deadline=deadline)
            except OSError as exc:  # the client's connection failed: nobody to answer
                log.info("push from %s: the connection failed: %s", peer.user, exc)
                self._count("failed")
                return
            self.authorize(peer.user, peer.uid, [dag.spec.dag_id for dag in request.snapshot.dags])
            with self._commit_lock:
                results = commit_snapshot(
                    self.store,
                    request.snapshot,
                    config=self.config,
                    pushed_by=peer.user,
                    message=request.message,
                )
            reply = {"ok": True, "results": [dataclasses.asdict(r) for r in results]}
            self._count("served")
        except PushDeniedError as exc:
            log.warning("push from %s (pid %d) denied: %s", peer.user, peer.pid, exc)
            reply = {**error_reply(exc), "denied": True}
            self._count("refused")
        except (IsolateError, EnvCacheError) as exc:
            log.info("push from %s failed: %s", peer.user, _one_line(exc))
            reply = error_reply(IsolateError(str(exc)))
            self._count("failed")
        self._reply(conn, reply)

    def refuse_tasks(self, peer: Peer) -> None:
        """Refuse (and audit) a peer that is, or may be, a task of this scheduler."""
        reason = task_reason(peer.pid, server=os.getpid())
        if reason is not None:
            self.store.audit(peer.user, "push", "-", outcome="denied", details={"reason": reason})
            raise PushDeniedError(reason)

    def authorize(self, user: str, uid: int, dag_ids: list[str]) -> None:
        """Admins push anything; others what the mapping allows them. Refusals are audited."""
        if uid == 0 or uid == os.stat(self.config.home).st_uid:
            return
        with self._tenants_lock:
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

    def _reply(self, conn: socket.socket, reply: dict[str, Any]) -> None:
        try:
            conn.settimeout(self.timeout)
            conn.sendall(frame(reply))
        except OSError:
            pass  # the client went away; its push was stored or refused all the same

    def _count(self, outcome: str) -> None:
        with self._lock:
            setattr(self._stats, outcome, getattr(self._stats, outcome) + 1)


def peer_of(conn: socket.socket) -> Peer:
    """The connecting process, from the kernel's record of it (``SO_PEERCRED``)."""
    pid, uid, _gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return Peer(pid=pid, uid=uid, user=_name(uid))


def task_reason(pid: int, *, server: int) -> str | None:
    """Why process ``pid`` may not push as a task of the scheduler whose process is
    ``server`` (or as a process nobody can vouch for); None if it is not one.

    A task lives in an attempt cgroup, where the node has them, and nothing it starts can
    leave it. Everywhere, it descends from the scheduler: cold starts and spares are forked
    by it. A process that has already exited is refused: its pid may be another's soon."""
    if pid <= 0:
        return "the client's process is not visible to the push server"
    try:
        group = attempt_cgroup(pid)
        if group is not None:
            return f"a task may not push (pid {pid} is in the attempt cgroup {group})"
        if _started_by(pid, server):
            return f"a task may not push (pid {pid} was started by the scheduler)"
    except _Untraceable:
        return f"the client's process (pid {pid}) could not be traced"
    except OSError:
        return f"the client's process (pid {pid}) could not be inspected"
    return None


def attempt_cgroup(pid: int) -> str | None:
    """The attempt cgroup process ``pid`` is in, in any hierarchy, or None."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        path = line.split(":", 2)[-1]
        if _ATTEMPT_CGROUP.search(path):
            return path
    return None


@dataclasses.dataclass(frozen=True)
class _Stat:
    ppid: int
    session: int
    start: int  # clock ticks since boot


class _Untraceable(Exception):
    """The chain of parents kept changing while it was read."""


def _stat(pid: int) -> _Stat:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    fields = text[text.rindex(")") + 2 :].split()
    return _Stat(ppid=int(fields[1]), session=int(fields[3]), start=int(fields[19]))


def _started_by(pid: int, server: int) -> bool:
    """Whether ``pid`` descends from process ``server`` and has left its session.

    Every task calls ``setsid`` before any of its code runs, and no process can rejoin a
    session, so every process a task starts is outside the scheduler's session; a
    descendant still in it is not a task (a test forks its pushers from the server's own
    process). An ancestor that exits while the chain is read makes it retry."""
    for _ in range(_TRACE_TRIES):
        try:
            return _descends(pid, server)
        except _Vanished:
            continue
    raise _Untraceable


class _Vanished(Exception):
    """An ancestor exited (or its pid was reused) while the chain was read."""


def _descends(pid: int, server: int) -> bool:
    child = _stat(pid)  # OSError: the peer itself is gone
    if pid == server or child.session == os.getsid(server):
        return False
    while True:
        if child.ppid == server:
            return True
        if child.ppid <= 1:
            return False
        try:
            parent = _stat(child.ppid)
        except OSError:
            raise _Vanished from None
        if parent.start > child.start:
            raise _Vanished  # a newer process has the pid: the real parent is gone
        child = parent


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
