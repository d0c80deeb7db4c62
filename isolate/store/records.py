"""The records the store loads and saves: plain frozen dataclasses, no database behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from isolate.states import RunState, TaskState

# A push message's characters: it must fit every backend's column (64 KiB on MySQL).
MAX_MESSAGE = 10_000


@dataclass(frozen=True)
class DagRecord:
    """One DAG id known to the store, and whether it is paused."""

    dag_id: str
    is_paused: bool
    created_at: datetime


@dataclass(frozen=True)
class DagSummary:
    """A DAG and its latest version, as ``isolate dags list`` shows it."""

    dag_id: str
    is_paused: bool
    latest_version: int | None
    spec_hash: str | None
    pushed_by: str | None
    pushed_at: datetime | None


@dataclass(frozen=True)
class VersionRecord:
    """One immutable version of a DAG. ``spec_json`` is the canonical JSON document, as pushed."""

    dag_id: str
    version: int
    spec_hash: str
    spec_json: str
    bundle_hash: str
    lock_hash: str
    pushed_by: str
    pushed_at: datetime
    message: str | None


@dataclass(frozen=True)
class VersionEnvRecord:
    """A version's env as derived on one ``basis``: derived data, not part of the version.

    ``basis`` fingerprints what the key was computed for (the node's interpreter, builder and
    key format); ``lock_json`` is the parsed lock as a JSON document. The store treats all
    three as opaque text; isolate/services/environments.py makes and reads them.
    """

    basis: str
    env_key: str
    lock_json: str


@dataclass(frozen=True)
class AuditRecord:
    """One line of the append-only audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str
    details: dict[str, Any]


@dataclass(frozen=True)
class NewVersion:
    """What a push hands to the store: the serialized spec and the blobs it refers to.

    The hashes are ``"sha256:<hex>"``; the store checks ``bundle_hash`` and ``lock_hash`` against
    the bytes. ``spec_hash`` is the pusher's hash of ``spec_json`` and is stored as given: the
    store treats the spec as opaque text.
    """

    dag_id: str
    spec_hash: str
    spec_json: str
    bundle_hash: str
    bundle: bytes
    lock_hash: str
    lock: bytes
    env: VersionEnvRecord | None = None
    """The version's env as derived at push, stored with whichever version the push results
    in (a new one, or the unchanged latest) unless that version has one for its basis."""


@dataclass(frozen=True)
class PushOutcome:
    """The version a push resulted in; ``created`` is False when the push changed nothing."""

    version: VersionRecord
    created: bool


@dataclass(frozen=True)
class RunRecord:
    """One DAG run, pinned to ``version`` for its whole life."""

    dag_id: str
    run_id: str
    version: int
    run_type: str
    logical_date: datetime
    state: RunState
    conf: dict[str, Any]
    created_by: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class TaskInstanceRecord:
    """One task of one run: its state and its current (or last) attempt."""

    dag_id: str
    run_id: str
    task_id: str
    state: TaskState
    try_number: int
    next_try_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    pid: int | None
    pid_started: float | None
    run_as: str | None
    env_key: str | None
    outcome: str | None
    xcom: Any
    updated_at: datetime
