"""The versioned datastore: SQLite by default, MariaDB/MySQL or PostgreSQL by SQLAlchemy URL.

``Store`` loads and saves the records below; ``isolate.store.migrate`` creates and upgrades the
schema.
"""

from __future__ import annotations

from isolate.store.records import (
    AuditRecord,
    DagRecord,
    DagSummary,
    NewVersion,
    PushOutcome,
    RunRecord,
    TaskInstanceRecord,
    VersionRecord,
)
from isolate.store.rows import content_hash
from isolate.store.store import Store

__all__ = [
    "AuditRecord",
    "DagRecord",
    "DagSummary",
    "NewVersion",
    "PushOutcome",
    "RunRecord",
    "Store",
    "TaskInstanceRecord",
    "VersionRecord",
    "content_hash",
]
