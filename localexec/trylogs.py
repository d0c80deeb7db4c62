"""Reading a try's log (``isolate tasks logs``): which file, why there is none, following it.

The supervisor writes the log (:mod:`localexec.logs`); readers find it by the try's ids
(:meth:`~localexec.workspace.Workspace.log_file`), and follow it while the store says the
try is still queued or running. The footer is written before the state changes, so one
last read after the state changed gets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import BinaryIO

from isolate.config import Config
from isolate.errors import NotFoundError
from isolate.states import TaskState
from isolate.store import RunRecord, Store
from localexec.workspace import Workspace

CHUNK = 65536
FOLLOW_POLL = 0.2


def open_try_log(
    config: Config, store: Store, run: RunRecord, task_id: str, try_number: int | None
) -> tuple[BinaryIO, int]:
    """The open log of a try (default: the latest) and its number; a try that never ran, or
    a log that is gone, is a :class:`NotFoundError` that says why."""
    ti = store.tasks.get(run.dag_id, run.run_id, task_id)
    number = try_number or ti.try_number
    if number < 1:
        if ti.state in (TaskState.UPSTREAM_FAILED, TaskState.SKIPPED):
            why = (
                "an upstream task failed"
                if ti.state is TaskState.UPSTREAM_FAILED
                else "its trigger rule skipped it"
            )
            raise NotFoundError(
                f"task {task_id} of run {run.run_id} is {ti.state.value}: it never ran, so it "
                f"has no log ({why})"
            )
        raise NotFoundError(f"task {task_id} of run {run.run_id} has not started yet")
    path = Workspace.log_file(config, run.dag_id, run.run_id, task_id, number)
    try:
        return path.open("rb"), number
    except FileNotFoundError:
        raise NotFoundError(f"no log for try {number} of {task_id} in run {run.run_id}") from None


def still_writing(store: Store, run: RunRecord, task_id: str, try_number: int) -> bool:
    """Whether the try may still add to its log: it is the latest and queued or running."""
    ti = store.tasks.get(run.dag_id, run.run_id, task_id)
    return ti.try_number == try_number and ti.state in (TaskState.QUEUED, TaskState.RUNNING)


def copy_log(
    handle: BinaryIO,
    write: Callable[[bytes], None],
    *,
    writing: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Copy what the log holds to ``write``; with ``writing``, keep copying while it says the
    try is still writing, then once more for the footer."""
    _copy_available(handle, write)
    if writing is None:
        return
    while writing():
        sleep(FOLLOW_POLL)
        _copy_available(handle, write)
    _copy_available(handle, write)


def _copy_available(handle: BinaryIO, write: Callable[[bytes], None]) -> None:
    while chunk := handle.read(CHUNK):
        write(chunk)
