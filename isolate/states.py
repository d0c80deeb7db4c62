"""Run and task instance states, and the transitions allowed between them.

A leaf module: it imports only the error base. Every state change in the store goes through
:func:`check_run` / :func:`check_task`, so an impossible transition (a finished run becoming
running again, a task succeeding without having run) is an error, not a silent overwrite.
"""

from __future__ import annotations

from enum import StrEnum

from isolate.errors import IsolateError


class TransitionError(IsolateError):
    """A state change that the state machine does not allow."""


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


class TaskState(StrEnum):
    NONE = "none"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UP_FOR_RETRY = "up_for_retry"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"


# A run that pins a version's env: gc keeps the envs of runs in these states.
ACTIVE_RUN_STATES = frozenset({RunState.QUEUED, RunState.RUNNING})
FINISHED_TASK_STATES = frozenset(
    {TaskState.SUCCESS, TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.SKIPPED}
)

_RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.SUCCESS, RunState.FAILED}),
    # Clearing a task of a finished run runs it again.
    RunState.SUCCESS: frozenset({RunState.QUEUED}),
    RunState.FAILED: frozenset({RunState.QUEUED}),
}

_TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.NONE: frozenset({TaskState.SCHEDULED, TaskState.UPSTREAM_FAILED, TaskState.SKIPPED}),
    TaskState.SCHEDULED: frozenset({TaskState.QUEUED, TaskState.NONE}),
    # A queued attempt that could not start (e.g. its env failed to build) fails or retries.
    TaskState.QUEUED: frozenset(
        {TaskState.RUNNING, TaskState.SCHEDULED, TaskState.FAILED, TaskState.UP_FOR_RETRY}
    ),
    TaskState.RUNNING: frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.UP_FOR_RETRY}),
    TaskState.UP_FOR_RETRY: frozenset({TaskState.SCHEDULED, TaskState.NONE}),
    # Finished states change only when an operator clears the task.
    TaskState.SUCCESS: frozenset({TaskState.NONE}),
    TaskState.FAILED: frozenset({TaskState.NONE}),
    TaskState.UPSTREAM_FAILED: frozenset({TaskState.NONE}),
    TaskState.SKIPPED: frozenset({TaskState.NONE}),
}


def check_run(old: RunState, new: RunState) -> None:
    """Raise :class:`TransitionError` unless a run may go from ``old`` to ``new``."""
    if new not in _RUN_TRANSITIONS[old]:
        raise TransitionError(f"a {old.value} run cannot become {new.value}")


def check_task(old: TaskState, new: TaskState) -> None:
    """Raise :class:`TransitionError` unless a task instance may go from ``old`` to ``new``."""
    if new not in _TASK_TRANSITIONS[old]:
        raise TransitionError(f"a {old.value} task cannot become {new.value}")
