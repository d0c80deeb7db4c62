"""Callbacks of the housekeeping DAG. Each runs as its own short process, as the task's
user, in the task's env; what it prints goes to its own log beside the try's."""

from __future__ import annotations

from typing import Any


def alert(context: dict[str, Any]) -> None:
    print(f"ALERT: {context['task_id']} of {context['run_id']} failed for good")


def note_retry(context: dict[str, Any]) -> None:
    print(f"retrying {context['task_id']} after try {context['try_number']}")


def note_success(context: dict[str, Any]) -> None:
    print(f"{context['task_id']} done for {context['ds']}")
