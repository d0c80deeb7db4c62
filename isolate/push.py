"""Pushing a DAG folder: serialize every DAG in the author's process, then store new versions.

Everything is loaded and validated before anything is written: a bad folder stores nothing.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from isolate.config import Settings
from isolate.dagfile import load_folder
from isolate.store import NewVersion, Store


@dataclass(frozen=True)
class PushResult:
    """What one push did to one DAG."""

    dag_id: str
    version: int
    created: bool
    spec_hash: str
    tasks: int


def current_user() -> str:
    """The effective OS user's name (its uid if it has no name)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def push_folder(
    store: Store,
    path: Path,
    *,
    settings: Settings,
    pushed_by: str,
    message: str | None = None,
) -> list[PushResult]:
    """Push every DAG found at ``path``; unchanged DAGs get no new version."""
    snapshot = load_folder(path, settings=settings)
    results = []
    for dag in snapshot.dags:
        outcome = store.add_version(
            NewVersion(
                dag_id=dag.spec.dag_id,
                spec_hash=dag.spec_hash,
                spec_json=dag.canonical,
                bundle_hash=snapshot.bundle.hash,
                bundle=snapshot.bundle.data,
                lock_hash=dag.spec.environment.lock_hash,
                lock=dag.lock,
            ),
            pushed_by=pushed_by,
            message=message,
            paused_at_creation=settings.paused_at_creation,
        )
        results.append(
            PushResult(
                dag_id=dag.spec.dag_id,
                version=outcome.version.version,
                created=outcome.created,
                spec_hash=dag.spec_hash,
                tasks=len(dag.spec.tasks),
            )
        )
    return results
