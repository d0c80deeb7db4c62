"""What the scheduler should do next for one run, from its tasks' states. Pure.

Given the pinned spec and each task instance's state, :func:`plan_run` says which tasks
become scheduled, skipped or upstream_failed, which retries are due, and whether the run
has finished (and how). The scheduler applies the decisions; nothing here touches the
store or a process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from isolate.model import DagSpec, TaskSpec
from isolate.states import FINISHED_TASK_STATES, RunState, TaskState
from localexec.trigger_rules import Verdict, evaluate


@dataclass(frozen=True)
class TaskView:
    """What the planner needs of a task instance."""

    state: TaskState
    next_try_at: datetime | None = None


@dataclass
class RunPlan:
    schedule: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    upstream_failed: list[str] = field(default_factory=list)
    retry_now: list[str] = field(default_factory=list)
    finished: RunState | None = None


_VERDICT_STATE = {
    Verdict.SKIP: TaskState.SKIPPED,
    Verdict.UPSTREAM_FAILED: TaskState.UPSTREAM_FAILED,
}


def topological(spec: DagSpec) -> list[TaskSpec]:
    """The tasks, every one after all of its upstream tasks (Kahn; the spec is acyclic, as
    validated at push; ties keep the spec's order)."""
    waiting = {task.task_id: len(set(task.upstream)) for task in spec.tasks}
    downstream: dict[str, list[str]] = {task.task_id: [] for task in spec.tasks}
    for task in spec.tasks:
        for up in set(task.upstream):
            downstream[up].append(task.task_id)
    ready = deque(task.task_id for task in spec.tasks if waiting[task.task_id] == 0)
    order: list[TaskSpec] = []
    while ready:
        task_id = ready.popleft()
        order.append(spec.task(task_id))
        for down in downstream[task_id]:
            waiting[down] -= 1
            if waiting[down] == 0:
                ready.append(down)
    if len(order) != len(spec.tasks):
        raise ValueError(f"DAG {spec.dag_id} has a cycle")  # refused at push: not stored
    return order


def plan_run(spec: DagSpec, tasks: Mapping[str, TaskView], now: datetime) -> RunPlan:
    """Decisions for one run. Settling a task may settle its downstream tasks in the same
    plan (a failure cascades to every dependent as upstream_failed at once). One pass in
    topological order: linear in the run's tasks and edges, however long its chains."""
    plan = RunPlan()
    states = {task_id: view.state for task_id, view in tasks.items()}
    for task in topological(spec):
        if states.get(task.task_id) is not TaskState.NONE:
            continue
        verdict = evaluate(task.trigger_rule, [states[up] for up in task.upstream])
        if verdict is Verdict.RUN:
            states[task.task_id] = TaskState.SCHEDULED
            plan.schedule.append(task.task_id)
        elif verdict in _VERDICT_STATE:
            states[task.task_id] = _VERDICT_STATE[verdict]
            (plan.skip if verdict is Verdict.SKIP else plan.upstream_failed).append(task.task_id)
    for task_id, view in tasks.items():
        if view.state is TaskState.UP_FOR_RETRY and (
            view.next_try_at is None or view.next_try_at <= now
        ):
            plan.retry_now.append(task_id)
    if all(state in FINISHED_TASK_STATES for state in states.values()):
        failed = any(s in (TaskState.FAILED, TaskState.UPSTREAM_FAILED) for s in states.values())
        plan.finished = RunState.FAILED if failed else RunState.SUCCESS
    return plan
