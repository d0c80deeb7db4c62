"""SQLAlchemy engines for the store, and database failures turned into one-line ``StoreError``s.

SQLite is the default backend and several processes share one file (CLI commands, the
scheduler, the push server), so its connections are set up to wait rather than fail:

- WAL journal, so readers never block the writer and the writer never blocks readers;
- a 30 s busy timeout, so a writer waits for the one before it;
- write transactions start with ``BEGIN IMMEDIATE``. A deferred transaction that reads and then
  writes has to upgrade its lock, and SQLite answers "database is locked" at once, without waiting
  for the busy timeout, when another connection wrote in between
  (https://www.sqlite.org/lang_transaction.html, "BEGIN IMMEDIATE"). Taking the write lock up front
  makes the busy timeout apply. The sqlite3 module's own BEGIN handling is switched off for this,
  following SQLAlchemy's recipe ("Enabling Non-Legacy SQLite Transactional Modes", sqlite dialect).

Mark a connection or engine as a writer with ``execution_options(**WRITE)``; other backends ignore
the option and rely on row locks (``SELECT ... FOR UPDATE``) in the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, NoSuchModuleError
from sqlalchemy.exc import OperationalError as SAOperationalError

from isolate.errors import StoreError

BUSY_TIMEOUT_SECONDS = 30.0
WRITE_OPTION = "isolate_write"
WRITE: dict[str, Any] = {WRITE_OPTION: True}
"""Execution options for a write transaction: ``engine.execution_options(**WRITE)``."""


def parse_url(url: str | URL) -> URL:
    """Parse a database URL; ``StoreError``, which does not echo the URL, if it is invalid."""
    if isinstance(url, URL):
        return url
    try:
        return sa.make_url(url)
    except ArgumentError:
        # The message would repeat the URL, password included.
        raise StoreError(
            "not a valid database URL (expected e.g. sqlite:////path/isolate.db, "
            "postgresql+psycopg://user@host/db or mysql+pymysql://user@host/db)"
        ) from None


def display_url(url: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    return parse_url(url).render_as_string(hide_password=True)


def make_engine(url: str | URL) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout, foreign keys and IMMEDIATE writes.

    Creating the directory of a SQLite file is the caller's job. Nothing connects yet: an
    unreachable server shows up as ``StoreError`` on first use, through ``database_errors``.
    """
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {}
    if backend == "sqlite":
        options["connect_args"] = {"timeout": BUSY_TIMEOUT_SECONDS}
    else:
        # A scheduler holds connections for days; servers drop idle ones.
        options["pool_pre_ping"] = True
        options["pool_recycle"] = 3600
    try:
        engine = sa.create_engine(parsed, **options)
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"cannot use database {display_url(parsed)}: its Python driver "
            f"{exc.name!r} is not installed (install it, or name an installed driver in the URL, "
            "e.g. postgresql+psycopg:// or mysql+pymysql://)"
        ) from None
    except (NoSuchModuleError, ArgumentError):
        raise StoreError(
            f"cannot use database {display_url(parsed)}: unsupported database type {backend!r}"
        ) from None
    if backend == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    busy_ms = int(BUSY_TIMEOUT_SECONDS * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop sqlite3 from emitting BEGIN itself; _on_begin does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            # Persistent in the file; a no-op for in-memory databases.
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def store_error(exc: DBAPIError, url: str | URL) -> StoreError:
    """One line for a database failure: which database (password masked) and the driver's reason."""
    safe = display_url(url)
    reason = _first_line(str(exc.orig) if exc.orig is not None else str(exc))
    password = parse_url(url).password
    if password:
        reason = reason.replace(str(password), "***")
    if exc.statement is None or exc.connection_invalidated:
        return StoreError(f"cannot connect to database {safe}: {reason}")
    return StoreError(f"database error on {safe}: {reason}")


@contextmanager
def database_errors(url: str | URL) -> Iterator[None]:
    """Turn connection failures and operational errors inside the block into ``StoreError``.

    Other database errors (integrity, programming) are bugs or races the caller handles, and
    propagate unchanged.
    """
    try:
        yield
    except (SAOperationalError, InterfaceError) as exc:
        raise store_error(exc, url) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise store_error(exc, url) from exc
        raise


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "unknown error"
