"""Private PostgreSQL and MariaDB servers for tests that stop and start their database.

Each server is the test's own: a fresh data directory in a unique temporary directory, trust
(password-less) authentication, listening only on 127.0.0.1 on a free port, its unix socket in
that directory too, and a ``test`` database. The machine's own database servers are never
touched. Whatever happens in the test, leaving the context manager kills the server (its whole
process group) and removes its directory.

As root, the servers run as their usual unprivileged OS users (``postgres``, ``mysql``): they
refuse to run as root. Otherwise they run as the current user. Missing binaries or users skip
the test, saying which.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
MARIADB_INSTALL_DB = "mariadb-install-db"
MARIADBD = "/usr/sbin/mariadbd"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class _Account:
    """Who a server runs as: an OS user when we are root, else ourselves (``None``)."""

    user: pwd.struct_passwd | None

    @classmethod
    def for_service(cls, name: str, what: str) -> _Account:
        if os.geteuid() != 0:
            return cls(None)
        try:
            return cls(pwd.getpwnam(name))
        except KeyError:
            pytest.skip(f"{what} refuses to run as root and there is no {name!r} user to run it as")

    @property
    def name(self) -> str:
        return self.user.pw_name if self.user else pwd.getpwuid(os.geteuid()).pw_name

    def own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def as_user(self) -> dict[str, Any]:
        """``subprocess`` arguments running a child as this account."""
        if self.user is None:
            return {}
        # No supplementary groups: root's must not follow the server.
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}


@dataclass
class PrivateServer:
    """A database server of the test's own; ``stop()`` and ``start()`` restart it."""

    backend: str
    port: int
    url: str
    directory: Path
    _argv: Sequence[str]
    _account: _Account
    _ready: Callable[[], bool]
    _stop_signal: signal.Signals
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts connections (no-op if it runs)."""
        if self.running():
            return
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=_server_env(self.directory),
                start_new_session=True,  # its own process group, killed as one at the end
                **self._account.as_user(),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"private {self.backend} exited with {self._process.returncode}:\n"
                    + self._log_tail()
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"private {self.backend} did not start:\n" + self._log_tail())
            time.sleep(0.1)

    def stop(self) -> None:
        """Shut the server down cleanly (its clients' connections break) and wait for it."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(self._stop_signal)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(
                f"private {self.backend} did not stop:\n" + self._log_tail()
            ) from None

    def kill(self) -> None:
        """Kill the server and whatever it started, at once (teardown)."""
        process = self._process
        # Only while its leader is not reaped yet: until then its group id cannot be reused.
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _server_env(directory: Path) -> dict[str, str]:
    """A minimal environment: nothing of ours (PG*, MYSQL_*, ISOLATE_*) leaks into a server."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(directory), "LANG": "C"}


def _run(argv: Sequence[str], account: _Account, directory: Path, what: str) -> None:
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=directory,
        env=_server_env(directory),
        timeout=START_TIMEOUT,
        check=False,
        **account.as_user(),
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{output[-3000:]}")


@contextlib.contextmanager
def _workspace(prefix: str, account: _Account) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        account.own(directory)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _running(server: PrivateServer) -> Iterator[PrivateServer]:
    try:
        server.start()
        yield server
    finally:
        server.kill()


# -- PostgreSQL --------------------------------------------------------------------------


def _postgres_ready(port: int) -> Callable[[], bool]:
    import psycopg

    def ready() -> bool:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            return False

    return ready


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivateServer]:
    """A PostgreSQL server of the test's own, with a ``test`` database, as ``postgres``."""
    initdb, postgres = POSTGRES_BIN / "initdb", POSTGRES_BIN / "postgres"
    if not (os.access(initdb, os.X_OK) and os.access(postgres, os.X_OK)):
        pytest.skip(f"no PostgreSQL server binaries ({initdb}, {postgres}) to start one's own")
    pytest.importorskip("psycopg", reason="no psycopg driver to reach PostgreSQL")
    account = _Account.for_service("postgres", "PostgreSQL")
    with _workspace("isolate-test-postgres-", account) as directory:
        data = directory / "data"
        _run(
            [
                str(initdb),
                "--pgdata",
                str(data),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            account,
            directory,
            "initdb",
        )
        port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(directory),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "50",
            "logging_collector": "off",
        }
        server = PrivateServer(
            backend="postgresql",
            port=port,
            url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/test",
            directory=directory,
            _argv=[str(postgres), "-D", str(data)]
            + [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")],
            _account=account,
            _ready=_postgres_ready(port),
            _stop_signal=signal.SIGINT,  # "fast" shutdown: sessions are ended, not waited for
        )
        with _running(server):
            import psycopg

            with psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
            ) as admin:
                admin.execute("CREATE DATABASE test")
            yield server


# -- MariaDB -----------------------------------------------------------------------------


def _mariadb_ready(port: int) -> Callable[[], bool]:
    import pymysql

    def ready() -> bool:
        try:
            pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=2).close()
        except pymysql.err.OperationalError:
            return False
        return True

    return ready


@contextlib.contextmanager
def private_mariadb() -> Iterator[PrivateServer]:
    """A MariaDB server of the test's own, with a ``test`` database, as ``mysql``."""
    install_db = shutil.which(MARIADB_INSTALL_DB)
    if install_db is None or not os.access(MARIADBD, os.X_OK):
        pytest.skip(
            f"no MariaDB server binaries ({MARIADB_INSTALL_DB}, {MARIADBD}) to start one's own"
        )
    pytest.importorskip("pymysql", reason="no PyMySQL driver to reach MariaDB")
    account = _Account.for_service("mysql", "MariaDB")
    with _workspace("isolate-test-mariadb-", account) as directory:
        data, tmp = directory / "data", directory / "tmp"
        for path in (data, tmp):
            path.mkdir()
            account.own(path)
        common = [
            "--no-defaults",  # never the machine's server configuration
            f"--datadir={data}",
            f"--tmpdir={tmp}",
            f"--user={account.name}",  # as root: mariadbd switches to it; else, ignored
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=16M",
        ]
        _run(
            [
                install_db,
                *common,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            account,
            directory,
            "mariadb-install-db",
        )
        port = free_port()
        server = PrivateServer(
            backend="mysql",
            port=port,
            url=f"mysql+pymysql://root@127.0.0.1:{port}/test",
            directory=directory,
            _argv=[
                MARIADBD,
                *common,
                f"--port={port}",
                "--bind-address=127.0.0.1",
                f"--socket={directory / 'mariadb.sock'}",
                f"--pid-file={directory / 'mariadb.pid'}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--max-connections=50",
            ],
            _account=account,
            _ready=_mariadb_ready(port),
            _stop_signal=signal.SIGTERM,  # a clean shutdown
        )
        with _running(server):
            import pymysql

            admin = pymysql.connect(host="127.0.0.1", port=port, user="root")
            try:
                with admin.cursor() as cursor:
                    cursor.execute("CREATE DATABASE test")
            finally:
                admin.close()
            yield server
