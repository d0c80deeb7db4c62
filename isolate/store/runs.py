"""DAG runs in the store: created pinned to a version, moved through guarded states.

The scheduler and ``isolate trigger`` create runs; gc asks which versions active runs pin.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from isolate.errors import NotFoundError, UsageError
from isolate.states import ACTIVE_RUN_STATES, RunState, check_run
from isolate.store import rows
from isolate.store import tables as t
from isolate.store.records import RunRecord
from isolate.store.tasks import insert_for_run
from isolate.store.transactions import reading, write


def run_record(row: Row[Any]) -> RunRecord:
    return RunRecord(
        dag_id=row.dag_id,
        run_id=row.run_id,
        version=row.version,
        run_type=row.run_type,
        logical_date=row.logical_date,
        state=RunState(row.state),
        conf=json.loads(row.conf),
        created_by=row.created_by,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


class Runs:
    """The ``dag_runs`` table. Reached as ``Store.runs``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        dag_id: str,
        *,
        run_id: str,
        run_type: str,
        logical_date: datetime,
        conf: dict[str, Any],
        created_by: str,
        version: int | None = None,
        task_ids: Sequence[str] = (),
    ) -> RunRecord:
        """A queued run of ``version`` (default: the latest), audited as a trigger, with a task
        instance (state ``none``) for each of ``task_ids``, all in one transaction."""

        def work(conn: Connection) -> RunRecord:
            now = rows.utcnow()
            if rows.lock_dag(conn, dag_id) is None:
                raise NotFoundError(f"no DAG {dag_id!r}")
            v = t.dag_versions.c
            latest = conn.execute(sa.select(sa.func.max(v.version)).where(v.dag_id == dag_id))
            pinned = version if version is not None else latest.scalar_one()
            exists = conn.execute(
                sa.select(v.version).where(v.dag_id == dag_id, v.version == pinned)
            ).first()
            if exists is None:
                raise NotFoundError(f"DAG {dag_id!r} has no version {pinned}")
            r = t.dag_runs.c
            taken = conn.execute(
                sa.select(r.id).where(r.dag_id == dag_id, r.run_id == run_id)
            ).first()
            if taken is not None:
                raise UsageError(f"DAG {dag_id!r} already has a run {run_id!r}")
            values = {
                "dag_id": dag_id,
                "run_id": run_id,
                "version": pinned,
                "run_type": run_type,
                "logical_date": logical_date,
                "state": RunState.QUEUED.value,
                "conf": json.dumps(conf, sort_keys=True),
                "created_by": created_by,
                "created_at": now,
                "started_at": None,
                "ended_at": None,
            }
            conn.execute(t.dag_runs.insert().values(**values))
            insert_for_run(conn, dag_id, run_id, list(task_ids))
            details = {"run_id": run_id, "version": pinned, "run_type": run_type}
            rows.insert_audit(conn, now, created_by, "trigger", dag_id, "ok", details)
            return _select_one(conn, dag_id, run_id)

        return write(self.engine, f"create a run of {dag_id!r}", work)

    def get(self, dag_id: str, run_id: str) -> RunRecord:
        with reading(self.engine) as conn:
            return _select_one(conn, dag_id, run_id)

    def list(
        self,
        dag_id: str | None = None,
        *,
        states: set[RunState] | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs, newest logical date first; only of ``dag_id`` and in ``states`` if given,
        the ``limit`` newest if given."""
        r = t.dag_runs.c
        query = sa.select(t.dag_runs).order_by(r.logical_date.desc(), r.id.desc())
        if dag_id is not None:
            query = query.where(r.dag_id == dag_id)
        if states is not None:
            query = query.where(r.state.in_([s.value for s in states]))
        if limit is not None:
            query = query.limit(limit)
        with reading(self.engine) as conn:
            return [run_record(row) for row in conn.execute(query)]

    def set_state(self, dag_id: str, run_id: str, state: RunState) -> RunRecord:
        """Move a run to ``state`` (a guarded transition), stamping start and end times."""

        def work(conn: Connection) -> RunRecord:
            r = t.dag_runs.c
            where = (r.dag_id == dag_id) & (r.run_id == run_id)
            row = conn.execute(sa.select(t.dag_runs).where(where).with_for_update()).first()
            if row is None:
                raise NotFoundError(f"DAG {dag_id!r} has no run {run_id!r}")
            check_run(RunState(row.state), state)
            now = rows.utcnow()
            changes: dict[str, Any] = {"state": state.value}
            if state is RunState.RUNNING:
                changes["started_at"] = now
            elif state is RunState.QUEUED:
                changes["ended_at"] = None
            else:
                changes["ended_at"] = now
            conn.execute(t.dag_runs.update().where(where).values(**changes))
            return _select_one(conn, dag_id, run_id)

        return write(self.engine, f"change the state of run {run_id!r}", work)

    # "builtins.list": inside the class, "list" is the method above.
    def find(self, run_id: str, dag_id: str | None = None) -> builtins.list[RunRecord]:
        """Runs with this id (one per DAG at most), of ``dag_id`` only if given."""
        r = t.dag_runs.c
        query = sa.select(t.dag_runs).where(r.run_id == run_id).order_by(r.dag_id)
        if dag_id is not None:
            query = query.where(r.dag_id == dag_id)
        with reading(self.engine) as conn:
            return [run_record(row) for row in conn.execute(query)]

    def last_logical_date(self, dag_id: str, run_type: str) -> datetime | None:
        """The newest logical date of the DAG's runs of ``run_type`` (None: no such run)."""
        r = t.dag_runs.c
        query = (
            sa.select(r.logical_date)
            .where(r.dag_id == dag_id, r.run_type == run_type)
            .order_by(r.logical_date.desc())
            .limit(1)
        )
        with reading(self.engine) as conn:
            value: datetime | None = conn.execute(query).scalar_one_or_none()
        return value

    def active_versions(self) -> set[tuple[str, int]]:
        """(dag_id, version) of every queued or running run: their envs must stay."""
        r = t.dag_runs.c
        query = (
            sa.select(r.dag_id, r.version)
            .where(r.state.in_([s.value for s in ACTIVE_RUN_STATES]))
            .distinct()
        )
        with reading(self.engine) as conn:
            return {(row.dag_id, row.version) for row in conn.execute(query)}


def _select_one(conn: Connection, dag_id: str, run_id: str) -> RunRecord:
    r = t.dag_runs.c
    row = conn.execute(sa.select(t.dag_runs).where(r.dag_id == dag_id, r.run_id == run_id)).first()
    if row is None:
        raise NotFoundError(f"DAG {dag_id!r} has no run {run_id!r}")
    return run_record(row)
