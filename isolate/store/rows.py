"""Statements the store's operations share, and conversions between rows and records."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from isolate.errors import StoreError
from isolate.store import tables as t
from isolate.store.records import AuditRecord, VersionRecord

VERSION_COLUMNS = (
    t.dag_versions.c.dag_id,
    t.dag_versions.c.version,
    t.dag_versions.c.spec_hash,
    t.dag_versions.c.spec_json,
    t.dag_versions.c.bundle_hash,
    t.dag_versions.c.lock_hash,
    t.dag_versions.c.pushed_by,
    t.dag_versions.c.pushed_at,
    t.dag_versions.c.message,
)


def content_hash(data: bytes) -> str:
    """The store's address for ``data``: ``"sha256:<hex>"``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def utcnow() -> datetime:
    """Now, timezone-aware UTC, as every timestamp in the store."""
    return datetime.now(UTC)


def lock_dag(conn: Connection, dag_id: str) -> bool | None:
    """Lock the DAG's row until the transaction ends; its ``is_paused``, or None if absent.

    ``FOR UPDATE`` is left out on SQLite, whose write transactions hold the database lock anyway.
    """
    paused = conn.execute(
        sa.select(t.dags.c.is_paused).where(t.dags.c.dag_id == dag_id).with_for_update()
    ).scalar_one_or_none()
    return None if paused is None else bool(paused)


def has_blob(conn: Connection, digest: str) -> bool:
    """Whether a blob is stored under ``digest``."""
    found = conn.execute(sa.select(t.blobs.c.hash).where(t.blobs.c.hash == digest)).first()
    return found is not None


def insert_blob(conn: Connection, kind: str, data: bytes, digest: str, now: datetime) -> None:
    """Store ``data`` under ``digest`` unless it is there already.

    A concurrent writer inserting the same blob makes this an ``IntegrityError``; the write
    transaction is then retried and finds the blob.
    """
    if not has_blob(conn, digest):
        conn.execute(
            t.blobs.insert().values(
                hash=digest, kind=kind, size=len(data), data=None, created_at=now
            )
        )
        step = t.BLOB_CHUNK_BYTES
        for seq, start in enumerate(range(0, len(data), step)):
            conn.execute(
                t.blob_chunks.insert().values(hash=digest, seq=seq, data=data[start : start + step])
            )


def read_blob(conn: Connection, digest: str) -> bytes | None:
    """The bytes stored under ``digest`` (None if absent), checked against their hash."""
    row = conn.execute(
        sa.select(t.blobs.c.data, t.blobs.c.size).where(t.blobs.c.hash == digest)
    ).first()
    if row is None:
        return None
    if row.data is not None:
        data = bytes(row.data)  # written before chunks existed
    else:
        parts = conn.execute(
            sa.select(t.blob_chunks.c.data)
            .where(t.blob_chunks.c.hash == digest)
            .order_by(t.blob_chunks.c.seq)
        )
        data = b"".join(bytes(part) for (part,) in parts)
    if len(data) != row.size or content_hash(data) != digest:
        raise StoreError(f"blob {digest} is damaged in the database: restore it from a backup")
    return data


def insert_audit(
    conn: Connection,
    at: datetime,
    actor: str,
    action: str,
    target: str | None,
    outcome: str,
    details: dict[str, Any],
) -> None:
    """Append one audit record; ``details`` is stored as JSON text."""
    conn.execute(
        t.audit_log.insert().values(
            at=at,
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            details=json.dumps(details, sort_keys=True),
        )
    )


def version_record(row: Row[*tuple[Any, ...]]) -> VersionRecord:
    """A version from a row selected with ``VERSION_COLUMNS``."""
    return VersionRecord(
        dag_id=row.dag_id,
        version=row.version,
        spec_hash=row.spec_hash,
        spec_json=row.spec_json,
        bundle_hash=row.bundle_hash,
        lock_hash=row.lock_hash,
        pushed_by=row.pushed_by,
        pushed_at=row.pushed_at,
        message=row.message,
    )


def version_values(record: VersionRecord) -> dict[str, Any]:
    """The column values that insert ``record`` into ``dag_versions``."""
    return {column.name: getattr(record, column.name) for column in VERSION_COLUMNS}


def audit_record(row: Row[*tuple[Any, ...]]) -> AuditRecord:
    """An audit record from a row of ``audit_log``."""
    return AuditRecord(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        details=json.loads(row.details),
    )
