"""Task instances in the store: one row per task of a run, moved through guarded states.

Every change is a transition checked by :mod:`isolate.states`, made under a row lock; a
caller that says which state it expects (``expect=``) loses cleanly, with
:class:`StaleStateError`, to a concurrent change instead of overwriting it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from isolate.errors import NotFoundError, UsageError
from isolate.states import TaskState, TransitionError, check_task
from isolate.store import rows
from isolate.store import tables as t
from isolate.store.records import TaskInstanceRecord
from isolate.store.transactions import reading, write

# Columns a transition may set besides the state.
_FIELDS = frozenset(
    {
        "try_number",
        "next_try_at",
        "started_at",
        "ended_at",
        "pid",
        "pid_started",
        "run_as",
        "env_key",
        "outcome",
        "xcom",
    }
)


# Ids per IN (...) list: well under every backend's limit on bound parameters.
_IN_BATCH = 500


class StaleStateError(TransitionError):
    """The task instance was not in the state the caller expected: someone else moved it."""


def task_record(row: Row[Any]) -> TaskInstanceRecord:
    return TaskInstanceRecord(
        dag_id=row.dag_id,
        run_id=row.run_id,
        task_id=row.task_id,
        state=TaskState(row.state),
        try_number=row.try_number,
        next_try_at=row.next_try_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        pid=row.pid,
        pid_started=row.pid_started,
        run_as=row.run_as,
        env_key=row.env_key,
        outcome=row.outcome,
        xcom=None if getattr(row, "xcom", None) is None else json.loads(row.xcom),
        updated_at=row.updated_at,
    )


def insert_for_run(conn: Connection, dag_id: str, run_id: str, task_ids: list[str]) -> None:
    """Create the run's task instances (state ``none``, no attempt yet)."""
    now = rows.utcnow()
    if task_ids:
        conn.execute(
            t.task_instances.insert(),
            [
                {
                    "dag_id": dag_id,
                    "run_id": run_id,
                    "task_id": task_id,
                    "state": TaskState.NONE.value,
                    "try_number": 0,
                    "updated_at": now,
                }
                for task_id in task_ids
            ],
        )


class TaskInstances:
    """The ``task_instances`` table. Reached as ``Store.tasks``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def list(self, dag_id: str, run_id: str, *, xcoms: bool = True) -> list[TaskInstanceRecord]:
        """The run's task instances, by task id; with ``xcoms=False`` without their XComs
        (``xcom`` is None): the scheduler's every pass must not read and parse them all."""
        ti = t.task_instances.c
        columns = t.task_instances.c if xcoms else [c for c in ti if c.name != "xcom"]
        query = (
            sa.select(*columns).where(ti.dag_id == dag_id, ti.run_id == run_id).order_by(ti.task_id)
        )
        with reading(self.engine) as conn:
            return [task_record(row) for row in conn.execute(query)]

    def xcoms(self, dag_id: str, run_id: str, task_ids: Iterable[str]) -> dict[str, Any]:
        """The XComs of ``task_ids`` of the run that have one (what a launch hands over)."""
        wanted = sorted(set(task_ids))
        if not wanted:
            return {}
        ti = t.task_instances.c
        query = sa.select(ti.task_id, ti.xcom).where(
            ti.dag_id == dag_id, ti.run_id == run_id, ti.task_id.in_(wanted), ti.xcom.is_not(None)
        )
        with reading(self.engine) as conn:
            return {row.task_id: json.loads(row.xcom) for row in conn.execute(query)}

    def move_many(
        self,
        dag_id: str,
        run_id: str,
        task_ids: Iterable[str],
        state: TaskState,
        *,
        expect: TaskState,
        **fields: Any,
    ) -> int:
        """Move every task of ``task_ids`` that is still ``expect`` to ``state``, in one
        statement (a failure settling a long chain is one write, not one per task).
        Returns how many moved: fewer than asked means another writer changed some."""
        _check_fields(fields)
        check_task(expect, state)
        wanted = sorted(set(task_ids))
        if not wanted:
            return 0
        ti = t.task_instances.c

        def work(conn: Connection) -> int:
            moved = 0
            for start in range(0, len(wanted), _IN_BATCH):
                batch = wanted[start : start + _IN_BATCH]
                result = conn.execute(
                    t.task_instances.update()
                    .where(
                        ti.dag_id == dag_id,
                        ti.run_id == run_id,
                        ti.task_id.in_(batch),
                        ti.state == expect.value,
                    )
                    .values(state=state.value, updated_at=rows.utcnow(), **fields)
                )
                moved += result.rowcount
            return moved

        return write(self.engine, f"move {len(wanted)} tasks to {state.value}", work)

    def get(self, dag_id: str, run_id: str, task_id: str) -> TaskInstanceRecord:
        with reading(self.engine) as conn:
            return _select_one(conn, dag_id, run_id, task_id, lock=False)

    def transition(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: TaskState,
        *,
        expect: TaskState | None = None,
        **fields: Any,
    ) -> TaskInstanceRecord:
        """Move a task instance to ``state`` and set ``fields`` in one guarded update."""
        _check_fields(fields)
        if "xcom" in fields and fields["xcom"] is not None:
            fields["xcom"] = json.dumps(fields["xcom"], sort_keys=True)

        def work(conn: Connection) -> TaskInstanceRecord:
            current = _select_one(conn, dag_id, run_id, task_id, lock=True)
            if expect is not None and current.state is not expect:
                raise StaleStateError(
                    f"task {task_id} of run {run_id} is {current.state.value}, "
                    f"not {expect.value}: it changed meanwhile"
                )
            return _update(conn, current, state, fields)

        return write(self.engine, f"change the state of task {task_id!r}", work)

    def claim(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: TaskState,
        *,
        expect: TaskState,
        **fields: Any,
    ) -> TaskInstanceRecord | None:
        """Like :meth:`transition`, for the scheduler taking work: None, without waiting, if
        another transaction holds the row (a ``runs clear`` or ``mark`` under way) or it is
        no longer ``expect``; the caller tries again at its next pass."""
        _check_fields(fields)

        def work(conn: Connection) -> TaskInstanceRecord | None:
            current = _select_unlocked(conn, dag_id, run_id, task_id)
            if current is None or current.state is not expect:
                return None
            return _update(conn, current, state, fields)

        return write(self.engine, f"claim task {task_id!r}", work)


def _check_fields(fields: dict[str, Any]) -> None:
    unknown = set(fields) - _FIELDS
    if unknown:
        raise UsageError(f"cannot set {sorted(unknown)} on a task instance")


def _update(
    conn: Connection, current: TaskInstanceRecord, state: TaskState, fields: dict[str, Any]
) -> TaskInstanceRecord:
    """Move the locked row ``current`` to ``state`` with ``fields``; the row as it is now."""
    check_task(current.state, state)
    ti = t.task_instances.c
    dag_id, run_id, task_id = current.dag_id, current.run_id, current.task_id
    conn.execute(
        t.task_instances.update()
        .where(ti.dag_id == dag_id, ti.run_id == run_id, ti.task_id == task_id)
        .values(state=state.value, updated_at=rows.utcnow(), **fields)
    )
    return _select_one(conn, dag_id, run_id, task_id, lock=False)


def _select_one(
    conn: Connection, dag_id: str, run_id: str, task_id: str, *, lock: bool
) -> TaskInstanceRecord:
    ti = t.task_instances.c
    query = sa.select(t.task_instances).where(
        ti.dag_id == dag_id, ti.run_id == run_id, ti.task_id == task_id
    )
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFoundError(f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
    return task_record(row)


def _select_unlocked(
    conn: Connection, dag_id: str, run_id: str, task_id: str
) -> TaskInstanceRecord | None:
    """The row, locked for this transaction, or None if another transaction holds it
    (``FOR UPDATE SKIP LOCKED``: PostgreSQL, MySQL 8, MariaDB 10.6; SQLite has no row
    locks, its writers take turns: ``BEGIN IMMEDIATE``)."""
    ti = t.task_instances.c
    query = sa.select(t.task_instances).where(
        ti.dag_id == dag_id, ti.run_id == run_id, ti.task_id == task_id
    )
    row = conn.execute(query.with_for_update(skip_locked=True)).first()
    return None if row is None else task_record(row)
