"""The versioned datastore: SQLite by default, MariaDB/MySQL or PostgreSQL by SQLAlchemy URL.

``Store`` loads and saves the records below; ``isolate.store.migrate`` creates and upgrades the
schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isolate.store.records import (
    AuditRecord,
    DagRecord,
    DagSummary,
    NewVersion,
    PushOutcome,
    RunRecord,
    TaskInstanceRecord,
    VersionEnvRecord,
    VersionRecord,
)

if TYPE_CHECKING:
    from isolate.store.rows import content_hash
    from isolate.store.store import Store


def __getattr__(name: str) -> Any:
    """``Store`` and ``content_hash`` load SQLAlchemy: only when asked for, so that what
    imports the records alone (a command that never opens the store) stays light."""
    if name == "Store":
        from isolate.store.store import Store

        return Store
    if name == "content_hash":
        from isolate.store.rows import content_hash

        return content_hash
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuditRecord",
    "DagRecord",
    "DagSummary",
    "NewVersion",
    "PushOutcome",
    "RunRecord",
    "Store",
    "TaskInstanceRecord",
    "VersionEnvRecord",
    "VersionRecord",
    "content_hash",
]
