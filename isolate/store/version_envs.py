"""Versions' envs as derived on a basis: derived data kept beside the immutable versions.

A push stores its version's (``Store.add_version``); the versions pushed before revision 0005,
and those of a basis no one computed yet, get theirs on demand (:meth:`VersionEnvs.save`).
Rows are only ever added: a version's row for one basis never changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from isolate.errors import NotFoundError
from isolate.store import rows
from isolate.store import tables as t
from isolate.store.records import VersionEnvRecord
from isolate.store.transactions import reading, write


def insert_missing(
    conn: Connection, dag_id: str, version: int, env: VersionEnvRecord, now: datetime
) -> bool:
    """Store ``env`` for the version unless it has one for that basis; True if it was added.

    A concurrent writer adding the same row makes this an ``IntegrityError``; the write
    transaction is then retried and finds the row (as for blobs, ``rows.insert_blob``).
    """
    e = t.dag_version_envs
    # A locking read: under MySQL's REPEATABLE READ a plain one could miss a committed row.
    found = conn.execute(
        sa.select(e.c.env_key)
        .where(e.c.dag_id == dag_id, e.c.version == version, e.c.basis == env.basis)
        .with_for_update()
    ).first()
    if found is not None:
        return False
    conn.execute(
        e.insert().values(
            dag_id=dag_id,
            version=version,
            basis=env.basis,
            env_key=env.env_key,
            lock_json=env.lock_json,
            created_at=now,
        )
    )
    return True


class VersionEnvs:
    """The ``dag_version_envs`` table. Reached as ``Store.version_envs``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, dag_id: str, version: int, basis: str) -> VersionEnvRecord | None:
        """The version's env derived on ``basis``, or None if none was stored."""
        e = t.dag_version_envs
        query = sa.select(e.c.basis, e.c.env_key, e.c.lock_json).where(
            e.c.dag_id == dag_id, e.c.version == version, e.c.basis == basis
        )
        with reading(self.engine) as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return VersionEnvRecord(basis=row.basis, env_key=row.env_key, lock_json=row.lock_json)

    def keys(self, basis: str) -> dict[tuple[str, int], str]:
        """Env key by (dag_id, version) of every version that has one on ``basis``."""
        e = t.dag_version_envs
        query = sa.select(e.c.dag_id, e.c.version, e.c.env_key).where(e.c.basis == basis)
        with reading(self.engine) as conn:
            return {(row.dag_id, row.version): row.env_key for row in conn.execute(query)}

    def save(self, envs: Iterable[tuple[str, int, VersionEnvRecord]]) -> int:
        """Store each (dag_id, version, env) whose version has none on that basis yet, in one
        transaction; how many were added. ``NotFoundError`` for a version that does not exist."""
        wanted = list(envs)
        if not wanted:
            return 0

        def work(conn: Connection) -> int:
            now = rows.utcnow()
            added = 0
            for dag_id, version, env in wanted:
                v = t.dag_versions
                exists = conn.execute(
                    sa.select(v.c.version).where(v.c.dag_id == dag_id, v.c.version == version)
                ).first()
                if exists is None:
                    raise NotFoundError(f"DAG {dag_id!r} has no version {version}")
                added += insert_missing(conn, dag_id, version, env, now)
            return added

        return write(self.engine, "store the envs of DAG versions", work)
