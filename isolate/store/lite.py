"""Quick reads of a SQLite store with the standard library, for commands that only list.

Importing SQLAlchemy costs about five times a bare ``python -c 'import click'`` on the
machines isolate runs on, which is most of what ``isolate dags list`` and the completion of
a DAG id take. For a SQLite store at the head revision these reads go through :mod:`sqlite3`
instead; anything else (another backend, a URL with options, a missing file, a schema that
is not at head, any database error) returns None, and the caller opens the real
:class:`~isolate.store.Store`, which reads the same rows or says what is wrong. Only
SELECTs are run, on a connection that cannot create the file. The queries mirror the
store's: a test compares them, row for row, on the same database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from isolate.store.records import DagSummary
from isolate.store.revision import HEAD_REVISION

BUSY_TIMEOUT_SECONDS = 5.0
_SQLITE_PREFIX = "sqlite:///"

_REVISION = "SELECT version_num FROM alembic_version"  # Alembic's table
_LIST_DAGS = """
SELECT d.dag_id, d.is_paused, v.version, v.spec_hash, v.pushed_by, v.pushed_at
FROM dags AS d
LEFT OUTER JOIN (
    SELECT dag_id, max(version) AS version FROM dag_versions GROUP BY dag_id
) AS latest ON latest.dag_id = d.dag_id
LEFT OUTER JOIN dag_versions AS v
    ON v.dag_id = latest.dag_id AND v.version = latest.version
ORDER BY d.dag_id
"""


def sqlite_file(url: str) -> Path | None:
    """The database file of a plain ``sqlite:///PATH`` URL (no driver, no options), if it
    exists; None for anything else."""
    if not url.startswith(_SQLITE_PREFIX) or "?" in url or "%" in url:
        return None
    name = url[len(_SQLITE_PREFIX) :]
    if not name or name == ":memory:":
        return None
    path = Path(name)
    return path if path.is_file() else None


@contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection | None]:
    """A connection to ``path`` whose schema is at head, or None."""
    try:
        conn = sqlite3.connect(
            f"file:{quote(str(path.absolute()))}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_SECONDS
        )
    except sqlite3.Error:
        yield None
        return
    with closing(conn):
        try:
            revisions = conn.execute(_REVISION).fetchall()
        except sqlite3.Error:
            yield None
            return
        yield conn if revisions == [(HEAD_REVISION,)] else None


def _timestamp(value: str | None) -> datetime | None:
    # SQLAlchemy stores a naive UTC datetime as ISO text on SQLite (UTCDateTime).
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def list_dags(url: str) -> list[DagSummary] | None:
    """:meth:`Store.list_dags` for a SQLite store at head; None where the store must answer."""
    path = sqlite_file(url)
    if path is None:
        return None
    with _reading(path) as conn:
        if conn is None:
            return None
        try:
            rows = conn.execute(_LIST_DAGS).fetchall()
        except sqlite3.Error:
            return None
    return [
        DagSummary(
            dag_id=dag_id,
            is_paused=bool(paused),
            latest_version=version,
            spec_hash=spec_hash,
            pushed_by=pushed_by,
            pushed_at=_timestamp(pushed_at),
        )
        for dag_id, paused, version, spec_hash, pushed_by, pushed_at in rows
    ]
