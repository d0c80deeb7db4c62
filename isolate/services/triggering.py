"""Creating runs: ``isolate trigger`` (manual) and the ids of scheduled runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from isolate.errors import UsageError
from isolate.services.catalog import stored_version
from isolate.store import RunRecord, Store


def scheduled_run_id(logical_date: datetime) -> str:
    return f"scheduled__{logical_date.astimezone(UTC).isoformat()}"


def manual_run_id(now: datetime) -> str:
    return f"manual__{now.astimezone(UTC).isoformat(timespec='microseconds')}"


def trigger(
    store: Store,
    dag_id: str,
    *,
    actor: str,
    conf: dict[str, Any] | None = None,
    version: int | None = None,
    logical_date: datetime | None = None,
) -> RunRecord:
    """A queued manual run of ``version`` (default: the latest), pinned to it for good."""
    if conf is not None and not isinstance(conf, dict):
        raise UsageError("--conf must be a JSON object")
    pinned = stored_version(store, dag_id, version)
    now = datetime.now(UTC)
    return store.runs.create(
        dag_id,
        run_id=manual_run_id(now),
        run_type="manual",
        logical_date=logical_date or now,
        conf=conf or {},
        created_by=actor,
        version=pinned.record.version,
        task_ids=list(pinned.spec.task_ids),
    )
