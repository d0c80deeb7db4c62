"""Pushing a DAG folder: serialize every DAG in the author's process, then store new versions.

Everything is loaded and validated before anything is written, and with ``build_on_push``
each version's env is built first too: a bad folder or an unbuildable lock stores nothing.
Each version is stored with its env key and parsed lock on this node's basis, so that no
launch of its tasks parses the lock again (see :mod:`isolate.services.environments`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from isolate.config import Config
from isolate.services.dagfile import FolderSnapshot, load_folder
from isolate.services.environments import EnvResolver
from isolate.store import NewVersion

if TYPE_CHECKING:
    from isolate.store import Store


@dataclass(frozen=True)
class PushResult:
    """What one push did to one DAG."""

    dag_id: str
    version: int
    created: bool
    spec_hash: str
    tasks: int
    env_key: str | None
    env_built: bool


def push_folder(
    store: Store,
    path: Path,
    *,
    config: Config,
    pushed_by: str,
    message: str | None = None,
    build: bool | None = None,
    building: Callable[[str, str], AbstractContextManager[object]] | None = None,
) -> list[PushResult]:
    """Push every DAG found at ``path``; unchanged DAGs get no new version.

    ``build`` (default: the ``build_on_push`` setting) builds each version's env before it is
    stored; a build that is not a cache hit runs inside ``building(dag_id, key)`` (e.g. to
    show progress).
    """
    snapshot = load_folder(path, settings=config.settings)
    return commit_snapshot(
        store,
        snapshot,
        config=config,
        pushed_by=pushed_by,
        message=message,
        build=build,
        building=building,
    )


def commit_snapshot(
    store: Store,
    snapshot: FolderSnapshot,
    *,
    config: Config,
    pushed_by: str,
    message: str | None = None,
    build: bool | None = None,
    building: Callable[[str, str], AbstractContextManager[object]] | None = None,
) -> list[PushResult]:
    """Store the DAGs of a loaded folder (here, or received by the push server)."""
    build = config.settings.build_on_push if build is None else build
    resolver = EnvResolver(config)
    # Every lock parsed and checked for the node's interpreter before anything is built.
    derived = {dag.spec.dag_id: resolver.derive(dag.spec) for dag in snapshot.dags}
    keys: dict[str, str | None] = {dag.spec.dag_id: None for dag in snapshot.dags}
    built: dict[str, bool] = {}
    if build:
        for dag in snapshot.dags:
            key = resolver.key(dag.spec)
            hit = resolver.cache.get(key) is not None
            around = nullcontext() if building is None or hit else building(dag.spec.dag_id, key)
            with around:
                ensured = resolver.ensure(dag.spec)
            keys[dag.spec.dag_id], built[dag.spec.dag_id] = ensured.key, ensured.built
    results = []
    for dag in snapshot.dags:
        outcome = store.add_version(
            NewVersion(
                dag_id=dag.spec.dag_id,
                spec_hash=dag.spec_hash,
                spec_json=dag.canonical,
                bundle_hash=snapshot.bundle.hash,
                bundle=snapshot.bundle.data,
                lock_hash=dag.spec.lockfile.lock_hash,
                lock=dag.lock,
                env=resolver.record(derived[dag.spec.dag_id]),
            ),
            pushed_by=pushed_by,
            message=message,
            paused_at_creation=config.settings.paused_at_creation,
        )
        results.append(
            PushResult(
                dag_id=dag.spec.dag_id,
                version=outcome.version.version,
                created=outcome.created,
                spec_hash=dag.spec_hash,
                tasks=len(dag.spec.tasks),
                env_key=keys[dag.spec.dag_id],
                env_built=built.get(dag.spec.dag_id, False),
            )
        )
    return results
