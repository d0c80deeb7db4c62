"""Builders of valid serialized DAG documents (format 1) for tests.

Every builder returns a fresh dict, so a test may mutate what it gets. ``minimal_doc`` has
only the required fields; ``full_doc`` sets every optional field at least once.
"""

from __future__ import annotations

import json
from typing import Any

from isolate.validate import lock_digest

LOCK = "six==1.16.0 \\\n    --hash=sha256:" + "1" * 64 + "\n"
BUNDLE_HASH = "sha256:" + "b" * 64


def environment(lock: str = LOCK, lockfile: str = "requirements.txt") -> dict[str, Any]:
    """An ``environment`` section whose ``lock_hash`` matches ``lock``."""
    return {"lockfile": lockfile, "lock": lock, "lock_hash": lock_digest(lock)}


def python_task(task_id: str, callable: str = "etl.jobs:run", **fields: Any) -> dict[str, Any]:
    return {"task_id": task_id, "kind": "python", "callable": callable, **fields}


def command_task(task_id: str, command: list[str] | str, **fields: Any) -> dict[str, Any]:
    return {"task_id": task_id, "kind": "command", "command": command, **fields}


def doc_with(tasks: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A minimal document with these tasks and top-level fields."""
    return {
        "format_version": 1,
        "dag_id": "etl",
        "tasks": tasks,
        "environment": environment(),
        "bundle": {"hash": BUNDLE_HASH},
        **fields,
    }


def minimal_doc() -> dict[str, Any]:
    """Only the required fields: one python task ``a``."""
    return doc_with([python_task("a")])


def full_doc() -> dict[str, Any]:
    """Every optional field set: a scheduled DAG with python and command tasks.

    Tasks: ``extract`` (python) -> ``load`` (python, takes extract's XCom) -> ``report``
    (command argv) and ``cleanup`` (shell string, runs after both).
    """
    return doc_with(
        [
            python_task(
                "load",
                "etl.jobs:load",
                doc="Load rows into the warehouse.",
                upstream=["extract"],
                args=[{"$xcom": "extract"}, "{{ ds }}"],
                kwargs={"table": "{{ params.table }}", "opts": {"batch": 500, "dry": False}},
                trigger_rule="all_success",
                env={"LOAD_MODE": "fast", "DAY": "{{ ds }}"},
                limits={"memory": "2G", "processes": 64, "cpu_time": 3600, "open_files": 1024},
                retry={
                    "retries": 5,
                    "retry_delay": 10.5,
                    "retry_exponential_backoff": True,
                    "max_retry_delay": 600,
                    "execution_timeout": 7200,
                },
                callbacks={"on_failure": "etl.alerts:page", "on_retry": "etl.alerts:note"},
                priority_weight=10,
            ),
            python_task("extract", "etl.jobs:extract", kwargs={"source": "s3"}),
            command_task(
                "report",
                ["python", "-m", "etl.report", "--day", "{{ ds }}"],
                upstream=["load"],
                trigger_rule="none_failed_min_one_success",
            ),
            command_task(
                "cleanup",
                "rm -rf /tmp/etl-{{ ds_nodash }}",
                upstream=["report", "load"],
                trigger_rule="all_done",
                limits={"memory": 1048576},
            ),
        ],
        description="Nightly extract-load-report.",
        fileloc="dags/etl.py",
        schedule="0 3 * * *",
        timezone="Europe/Amsterdam",
        start_date="2024-01-01T00:00:00+01:00",
        end_date="2030-01-01T00:00:00Z",
        catchup=True,
        max_active_runs=2,
        max_active_tasks=4,
        params={"table": "events", "limit": 1000, "ratio": 0.5, "nested": {"list": [1, None]}},
        tags=["team-a", "etl", "nightly"],
        defaults={
            "retries": 2,
            "retry_delay": 60,
            "retry_exponential_backoff": False,
            "max_retry_delay": None,
            "execution_timeout": 3600.0,
            "callbacks": {"on_failure": "etl.alerts:notify", "on_success": None},
        },
    )


def dumps(doc: Any) -> str:
    """Plain JSON text of a document (not canonical: the input side of the loader)."""
    return json.dumps(doc)
