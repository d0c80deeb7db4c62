"""Clearing tasks of a run so that the scheduler runs them again."""

from __future__ import annotations

from isolate.errors import UsageError
from isolate.services.catalog import stored_version
from isolate.states import FINISHED_TASK_STATES, RunState, TaskState
from isolate.store import RunRecord, Store


def clear_tasks(
    store: Store, run: RunRecord, task_id: str, *, downstream: bool, actor: str
) -> list[str]:
    """Reset ``task_id`` (and, with ``downstream``, its dependents) to ``none``; re-queue the run.

    Only finished tasks (or ones waiting for a retry) can be cleared: a running attempt is
    left alone. Tries keep counting, so logs of earlier tries stay.
    """
    spec = stored_version(store, run.dag_id, run.version).spec
    if task_id not in spec.task_ids:
        raise UsageError(f"version {run.version} of {run.dag_id} has no task {task_id!r}")
    chosen = {task_id}
    if downstream:
        edges = spec.edges()
        frontier = [task_id]
        while frontier:
            current = frontier.pop()
            for up, down in edges:
                if up == current and down not in chosen:
                    chosen.add(down)
                    frontier.append(down)
    tis = {ti.task_id: ti for ti in store.tasks.list(run.dag_id, run.run_id)}
    busy = sorted(
        t
        for t in chosen
        if tis[t].state not in FINISHED_TASK_STATES | {TaskState.NONE, TaskState.UP_FOR_RETRY}
    )
    if busy:
        raise UsageError(f"cannot clear {', '.join(busy)}: still scheduled, queued or running")
    for name in sorted(chosen):
        if tis[name].state is not TaskState.NONE:
            store.tasks.transition(run.dag_id, run.run_id, name, TaskState.NONE, next_try_at=None)
    if run.state in (RunState.SUCCESS, RunState.FAILED):
        store.runs.set_state(run.dag_id, run.run_id, RunState.QUEUED)
    store.audit(actor, "clear", run.dag_id, details={"run_id": run.run_id, "tasks": sorted(chosen)})
    return sorted(chosen)
