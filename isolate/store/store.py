"""The versioned store: DAGs, their immutable versions, content-addressed blobs, the audit log.

The store loads and saves records (``isolate.store.records``); it never imports DAG code and
treats a spec as opaque text. Every write is one transaction: on SQLite it begins with
``BEGIN IMMEDIATE``, on the servers it locks the DAG's row with ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from isolate.errors import NotFoundError, UsageError
from isolate.store import rows
from isolate.store import tables as t
from isolate.store.engine import make_engine
from isolate.store.records import (
    MAX_MESSAGE,
    AuditRecord,
    DagRecord,
    DagSummary,
    NewVersion,
    PushOutcome,
    VersionRecord,
)
from isolate.store.runs import Runs
from isolate.store.schema import check_at_head
from isolate.store.tasks import TaskInstances
from isolate.store.transactions import reading, write
from isolate.store.version_envs import VersionEnvs, insert_missing


class Store:
    """The datastore behind every isolate process. Thread-safe; one per process is enough.

    ``Store(engine)`` takes ownership of the engine: ``close()`` disposes of it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.runs = Runs(engine)
        self.tasks = TaskInstances(engine)
        self.version_envs = VersionEnvs(engine)

    @classmethod
    def open(cls, url: str | URL, *, check_schema: bool = True) -> Store:
        """Open the store at ``url``; unless told otherwise, refuse a schema not at head."""
        engine = make_engine(url)
        if check_schema:
            try:
                check_at_head(engine)
            except BaseException:
                engine.dispose()
                raise
        return cls(engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- DAGs and versions ----------------------------------------------------------------

    def add_version(
        self,
        new: NewVersion,
        *,
        pushed_by: str,
        message: str | None,
        paused_at_creation: bool = False,
    ) -> PushOutcome:
        """Record a push: a new version, unless it equals the latest one (``created=False``).

        Equal means same spec, bundle and lock hashes. A push equal to an older version (a
        revert) is a new version. The blobs are checked against their hashes before anything is
        written (``UsageError`` if they differ). A DAG seen for the first time is created, paused
        if ``paused_at_creation``. Audited as "push", outcome "ok" or "unchanged". A message
        is at most ``MAX_MESSAGE`` characters (it must fit every backend's column). The
        push's ``new.env``, if any, is stored with the resulting version, new or unchanged,
        unless that version has one on its basis already.
        """
        if message is not None and len(message) > MAX_MESSAGE:
            raise UsageError(
                f"the push message has {len(message)} characters; at most {MAX_MESSAGE}"
            )
        for kind, declared, data in (
            ("bundle", new.bundle_hash, new.bundle),
            ("lock", new.lock_hash, new.lock),
        ):
            actual = rows.content_hash(data)
            if declared != actual:
                raise UsageError(
                    f"{kind} of DAG {new.dag_id!r} does not match its hash: "
                    f"declared {declared}, content is {actual}"
                )

        def work(conn: Connection) -> PushOutcome:
            now = rows.utcnow()
            if rows.lock_dag(conn, new.dag_id) is None:
                conn.execute(
                    t.dags.insert().values(
                        dag_id=new.dag_id, is_paused=paused_at_creation, created_at=now
                    )
                )
            rows.insert_blob(conn, "bundle", new.bundle, new.bundle_hash, now)
            rows.insert_blob(conn, "lock", new.lock, new.lock_hash, now)
            # A locking read too: under MySQL's REPEATABLE READ a plain read could see a
            # snapshot older than the row lock just taken.
            found = conn.execute(
                sa.select(*rows.VERSION_COLUMNS)
                .where(t.dag_versions.c.dag_id == new.dag_id)
                .order_by(t.dag_versions.c.version.desc())
                .limit(1)
                .with_for_update()
            ).first()
            latest = rows.version_record(found) if found is not None else None
            if latest is not None and _same_content(latest, new):
                details = {"version": latest.version, "spec_hash": new.spec_hash}
                rows.insert_audit(conn, now, pushed_by, "push", new.dag_id, "unchanged", details)
                if new.env is not None:
                    insert_missing(conn, new.dag_id, latest.version, new.env, now)
                return PushOutcome(version=latest, created=False)
            record = VersionRecord(
                dag_id=new.dag_id,
                version=1 if latest is None else latest.version + 1,
                spec_hash=new.spec_hash,
                spec_json=new.spec_json,
                bundle_hash=new.bundle_hash,
                lock_hash=new.lock_hash,
                pushed_by=pushed_by,
                pushed_at=now,
                message=message,
            )
            conn.execute(t.dag_versions.insert().values(**rows.version_values(record)))
            if new.env is not None:
                insert_missing(conn, new.dag_id, record.version, new.env, now)
            details = {"version": record.version, "spec_hash": new.spec_hash}
            rows.insert_audit(conn, now, pushed_by, "push", new.dag_id, "ok", details)
            return PushOutcome(version=record, created=True)

        return write(self.engine, f"push DAG {new.dag_id!r}", work)

    def get_dag(self, dag_id: str) -> DagRecord:
        """The DAG ``dag_id``; ``NotFoundError`` if it was never pushed."""
        with reading(self.engine) as conn:
            row = conn.execute(sa.select(t.dags).where(t.dags.c.dag_id == dag_id)).first()
        if row is None:
            raise NotFoundError(f"no DAG {dag_id!r}")
        return DagRecord(
            dag_id=row.dag_id, is_paused=bool(row.is_paused), created_at=row.created_at
        )

    def list_dags(self) -> list[DagSummary]:
        """Every DAG with its latest version, ordered by dag_id, in one query."""
        v = t.dag_versions
        latest = (
            sa.select(v.c.dag_id, sa.func.max(v.c.version).label("version"))
            .group_by(v.c.dag_id)
            .subquery("latest")
        )
        query = (
            sa.select(
                t.dags.c.dag_id,
                t.dags.c.is_paused,
                v.c.version,
                v.c.spec_hash,
                v.c.pushed_by,
                v.c.pushed_at,
            )
            .select_from(t.dags)
            .outerjoin(latest, latest.c.dag_id == t.dags.c.dag_id)
            .outerjoin(v, sa.and_(v.c.dag_id == latest.c.dag_id, v.c.version == latest.c.version))
            .order_by(t.dags.c.dag_id)
        )
        with reading(self.engine) as conn:
            found = conn.execute(query).all()
        return [
            DagSummary(
                dag_id=row.dag_id,
                is_paused=bool(row.is_paused),
                latest_version=row.version,
                spec_hash=row.spec_hash,
                pushed_by=row.pushed_by,
                pushed_at=row.pushed_at,
            )
            for row in found
        ]

    def set_paused(self, dag_id: str, paused: bool, *, actor: str) -> bool:
        """Pause or unpause ``dag_id``; True if that changed anything. Audited either way."""
        action = "pause" if paused else "unpause"

        def work(conn: Connection) -> bool:
            current = rows.lock_dag(conn, dag_id)
            if current is None:
                raise NotFoundError(f"no DAG {dag_id!r}")
            changed = current != paused
            if changed:
                conn.execute(
                    t.dags.update().where(t.dags.c.dag_id == dag_id).values(is_paused=paused)
                )
            outcome = "ok" if changed else "unchanged"
            rows.insert_audit(conn, rows.utcnow(), actor, action, dag_id, outcome, {})
            return changed

        return write(self.engine, f"{action} DAG {dag_id!r}", work)

    def get_version(self, dag_id: str, version: int | None = None) -> VersionRecord:
        """A version of ``dag_id`` (None: the latest); ``NotFoundError`` says which exist."""
        v = t.dag_versions
        query = sa.select(*rows.VERSION_COLUMNS).where(v.c.dag_id == dag_id)
        if version is None:
            query = query.order_by(v.c.version.desc()).limit(1)
        else:
            query = query.where(v.c.version == version)
        with reading(self.engine) as conn:
            found = conn.execute(query).first()
            if found is not None:
                return rows.version_record(found)
            low, high = conn.execute(
                sa.select(sa.func.min(v.c.version), sa.func.max(v.c.version)).where(
                    v.c.dag_id == dag_id
                )
            ).one()
            known = conn.execute(sa.select(t.dags.c.dag_id).where(t.dags.c.dag_id == dag_id))
            exists = known.first() is not None
        if not exists:
            raise NotFoundError(f"no DAG {dag_id!r}")
        if high is None:
            raise NotFoundError(f"DAG {dag_id!r} has no versions")
        available = f"version {low}" if low == high else f"versions {low} to {high}"
        raise NotFoundError(f"DAG {dag_id!r} has no version {version} (it has {available})")

    def list_versions(self, dag_id: str) -> list[VersionRecord]:
        """Every version of ``dag_id``, oldest first (empty if the DAG is unknown)."""
        query = (
            sa.select(*rows.VERSION_COLUMNS)
            .where(t.dag_versions.c.dag_id == dag_id)
            .order_by(t.dag_versions.c.version)
        )
        with reading(self.engine) as conn:
            return [rows.version_record(row) for row in conn.execute(query)]

    # -- blobs ----------------------------------------------------------------------------

    def put_blob(self, kind: str, data: bytes) -> str:
        """Store ``data`` once under its content hash, and return that hash."""
        if kind not in t.BLOB_KINDS:
            raise UsageError(f"unknown blob kind {kind!r} (expected one of {t.BLOB_KINDS})")
        digest = rows.content_hash(data)

        def work(conn: Connection) -> str:
            rows.insert_blob(conn, kind, data, digest, rows.utcnow())
            return digest

        return write(self.engine, f"store {kind} {digest}", work)

    def get_blob(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; ``NotFoundError`` if there are none."""
        with reading(self.engine) as conn:
            data = rows.read_blob(conn, digest)
        if data is None:
            raise NotFoundError(f"no blob {digest}")
        return data

    def has_blob(self, digest: str) -> bool:
        """Whether a blob is stored under ``digest``."""
        with reading(self.engine) as conn:
            return rows.has_blob(conn, digest)

    # -- audit ----------------------------------------------------------------------------

    def audit(
        self,
        actor: str,
        action: str,
        target: str | None,
        *,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one record to the audit log, in a transaction of its own."""
        if outcome not in t.OUTCOMES:
            raise UsageError(f"unknown audit outcome {outcome!r} (expected one of {t.OUTCOMES})")

        def work(conn: Connection) -> None:
            rows.insert_audit(conn, rows.utcnow(), actor, action, target, outcome, details or {})

        write(self.engine, f"record {action!r} in the audit log", work)

    def list_audit(self, *, target: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """The latest ``limit`` audit records, newest first; only about ``target`` if given."""
        a = t.audit_log
        query = sa.select(a).order_by(a.c.id.desc()).limit(limit)
        if target is not None:
            query = query.where(a.c.target == target)
        with reading(self.engine) as conn:
            return [rows.audit_record(row) for row in conn.execute(query)]


def _same_content(latest: VersionRecord, new: NewVersion) -> bool:
    # The bundle and the lock are part of what runs: a push that changes only them is a change.
    return (latest.spec_hash, latest.bundle_hash, latest.lock_hash) == (
        new.spec_hash,
        new.bundle_hash,
        new.lock_hash,
    )
