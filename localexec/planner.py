"""What the scheduler should do next for one run, from its tasks' states. Pure.

Given the pinned spec and each task instance's state, :func:`plan_run` says which tasks
become scheduled, skipped or upstream_failed, which retries are due, and whether the run
has finished (and how). The scheduler applies the decisions; nothing here touches the
store or a process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from isolate.model import DagSpec
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


def plan_run(spec: DagSpec, tasks: Mapping[str, TaskView], now: datetime) -> RunPlan:
    """Decisions for one run. Settling a task may settle its downstream tasks in the same
    plan (a failure cascades to every dependent as upstream_failed at once)."""
    plan = RunPlan()
    states = {task_id: view.state for task_id, view in tasks.items()}
    changed = True
    while changed:
        changed = False
        for task in spec.tasks:
            if states.get(task.task_id) is not TaskState.NONE:
                continue
            verdict = evaluate(task.trigger_rule, [states[up] for up in task.upstream])
            if verdict is Verdict.RUN:
                states[task.task_id] = TaskState.SCHEDULED
                plan.schedule.append(task.task_id)
            elif verdict in _VERDICT_STATE:
                states[task.task_id] = _VERDICT_STATE[verdict]
                (plan.skip if verdict is Verdict.SKIP else plan.upstream_failed).append(
                    task.task_id
                )
                changed = True
    for task_id, view in tasks.items():
        if view.state is TaskState.UP_FOR_RETRY and (
            view.next_try_at is None or view.next_try_at <= now
        ):
            plan.retry_now.append(task_id)
    if all(state in FINISHED_TASK_STATES for state in states.values()):
        failed = any(s in (TaskState.FAILED, TaskState.UPSTREAM_FAILED) for s in states.values())
        plan.finished = RunState.FAILED if failed else RunState.SUCCESS
    return plan
