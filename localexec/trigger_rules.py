"""When a task may run, given its upstream tasks' states: Airflow's trigger rules. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import StrEnum

from isolate.states import FINISHED_TASK_STATES, TaskState


class Verdict(StrEnum):
    RUN = "run"  # schedule it now
    WAIT = "wait"  # not yet decidable
    SKIP = "skip"  # the task becomes skipped
    UPSTREAM_FAILED = "upstream_failed"  # the task becomes upstream_failed


_FAILED = (TaskState.FAILED, TaskState.UPSTREAM_FAILED)


def evaluate(rule: str, upstream: Iterable[TaskState]) -> Verdict:
    """The verdict of ``rule`` (a format trigger rule name) over the upstream states."""
    states = Counter(upstream)
    total = sum(states.values())
    if total == 0:
        return Verdict.RUN
    done = sum(n for state, n in states.items() if state in FINISHED_TASK_STATES)
    success = states[TaskState.SUCCESS]
    failed = sum(states[s] for s in _FAILED)
    skipped = states[TaskState.SKIPPED]
    all_done = done == total
    if rule == "all_success":
        if failed:
            return Verdict.UPSTREAM_FAILED
        if skipped:
            return Verdict.SKIP
        return Verdict.RUN if success == total else Verdict.WAIT
    if rule == "all_failed":
        if success or skipped:
            return Verdict.SKIP
        return Verdict.RUN if failed == total else Verdict.WAIT
    if rule == "all_done":
        return Verdict.RUN if all_done else Verdict.WAIT
    if rule == "one_success":
        if success:
            return Verdict.RUN
        if not all_done:
            return Verdict.WAIT
        return Verdict.UPSTREAM_FAILED if failed else Verdict.SKIP
    if rule == "one_failed":
        if failed:
            return Verdict.RUN
        return Verdict.SKIP if all_done else Verdict.WAIT
    if rule == "none_failed":
        if failed:
            return Verdict.UPSTREAM_FAILED
        return Verdict.RUN if all_done else Verdict.WAIT
    if rule == "none_failed_min_one_success":
        if failed:
            return Verdict.UPSTREAM_FAILED
        if not all_done:
            return Verdict.WAIT
        return Verdict.RUN if success else Verdict.SKIP
    raise ValueError(f"unknown trigger rule {rule!r}")
