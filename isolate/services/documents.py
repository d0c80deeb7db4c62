"""The JSON documents of stored records: what ``--json`` prints, one shape per resource.

Each function turns a record of :mod:`isolate.store.records` into a plain dict (datetimes
stay datetimes; the printer formats them), so that every command showing a resource shows
it the same way, and other front ends can serve the same documents.
"""

from __future__ import annotations

from typing import Any

from isolate.store.records import (
    AuditRecord,
    DagSummary,
    RunRecord,
    TaskInstanceRecord,
    VersionRecord,
)


def dag_summary(summary: DagSummary) -> dict[str, Any]:
    return {
        "dag_id": summary.dag_id,
        "paused": summary.is_paused,
        "latest_version": summary.latest_version,
        "spec_hash": summary.spec_hash,
        "pushed_by": summary.pushed_by,
        "pushed_at": summary.pushed_at,
    }


def version(record: VersionRecord) -> dict[str, Any]:
    return {
        "dag_id": record.dag_id,
        "version": record.version,
        "spec_hash": record.spec_hash,
        "bundle_hash": record.bundle_hash,
        "lock_hash": record.lock_hash,
        "pushed_by": record.pushed_by,
        "pushed_at": record.pushed_at,
        "message": record.message,
    }


def run(record: RunRecord) -> dict[str, Any]:
    return {
        "dag_id": record.dag_id,
        "run_id": record.run_id,
        "version": record.version,
        "run_type": record.run_type,
        "logical_date": record.logical_date,
        "state": record.state.value,
        "conf": record.conf,
        "created_by": record.created_by,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
    }


def task_instance(ti: TaskInstanceRecord) -> dict[str, Any]:
    """A task of a run, with its latest try's duration in seconds (None until it ended)."""
    duration = (
        (ti.ended_at - ti.started_at).total_seconds() if ti.ended_at and ti.started_at else None
    )
    return {
        "task_id": ti.task_id,
        "state": ti.state.value,
        "try_number": ti.try_number,
        "duration": duration,
        "run_as": ti.run_as,
        "env_key": ti.env_key,
        "outcome": ti.outcome,
        "xcom": ti.xcom,
    }


def audit_event(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "at": record.at,
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "outcome": record.outcome,
        "details": record.details,
    }
