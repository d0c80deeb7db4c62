"""The DAG model: plain frozen dataclasses for one validated, canonical DAG version.

Instances are built only by :mod:`isolate.format` from a validated document, and
``DagSpec.to_document()`` gives that canonical document back. Nothing here touches
disk, database or DAG code.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

TRIGGER_RULES = (
    "all_success",
    "all_failed",
    "all_done",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
)

XCOM_REF_KEY = "$xcom"

# Airflow's names and defaults: tasks of a DAG running at once (across its runs), and a
# task's priority among the ready tasks of its DAG (Airflow's "absolute" weight rule).
DEFAULT_MAX_ACTIVE_TASKS = 16
DEFAULT_PRIORITY_WEIGHT = 1
MIN_PRIORITY_WEIGHT, MAX_PRIORITY_WEIGHT = -(2**31), 2**31 - 1

# Fields added to format 1 after documents of it were stored, with their defaults. The
# canonical document has them only when they differ from the default, so a document written
# before they existed keeps its canonical bytes and its spec hash (an unchanged DAG pushed
# again is still unchanged), and isolate releases that predate them still read it.
LATER_DAG_FIELDS: Mapping[str, Any] = {"max_active_tasks": DEFAULT_MAX_ACTIVE_TASKS}
LATER_TASK_FIELDS: Mapping[str, Any] = {"priority_weight": DEFAULT_PRIORITY_WEIGHT}


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed attempt is retried; durations in seconds."""

    retries: int = 0
    retry_delay: float = 300
    retry_exponential_backoff: bool = False
    max_retry_delay: float | None = None
    execution_timeout: float | None = None


@dataclass(frozen=True)
class RetryOverrides:
    """A task's overrides of the DAG's retry policy; ``None`` inherits."""

    retries: int | None = None
    retry_delay: float | None = None
    retry_exponential_backoff: bool | None = None
    max_retry_delay: float | None = None
    execution_timeout: float | None = None

    def apply(self, base: RetryPolicy) -> RetryPolicy:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        kept = {name: value for name, value in values.items() if value is not None}
        return RetryPolicy(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **kept})


@dataclass(frozen=True)
class Callbacks:
    """Import paths (``module:attr``) called in the DAG's own env; ``None`` for none/inherit."""

    on_failure: str | None = None
    on_success: str | None = None
    on_retry: str | None = None

    def over(self, base: Callbacks) -> Callbacks:
        return Callbacks(
            on_failure=self.on_failure or base.on_failure,
            on_success=self.on_success or base.on_success,
            on_retry=self.on_retry or base.on_retry,
        )


@dataclass(frozen=True)
class Limits:
    """Resource limits of one task attempt: bytes, processes, CPU seconds, open files."""

    memory: int | None = None
    processes: int | None = None
    cpu_time: int | None = None
    open_files: int | None = None


@dataclass(frozen=True)
class Defaults:
    """DAG-wide defaults that every task inherits unless it overrides them."""

    retry: RetryPolicy
    callbacks: Callbacks


@dataclass(frozen=True)
class TaskSpec:
    """One task. ``kind`` is ``python`` (callable + args/kwargs) or ``command``."""

    task_id: str
    kind: str
    upstream: tuple[str, ...]
    trigger_rule: str
    env: Mapping[str, str]
    limits: Limits
    retry: RetryOverrides
    callbacks: Callbacks
    doc: str | None = None
    callable: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None
    command: tuple[str, ...] | str | None = None
    priority_weight: int = DEFAULT_PRIORITY_WEIGHT

    def effective_retry(self, defaults: Defaults) -> RetryPolicy:
        return self.retry.apply(defaults.retry)

    def effective_callbacks(self, defaults: Defaults) -> Callbacks:
        return self.callbacks.over(defaults.callbacks)

    def xcom_sources(self) -> list[str]:
        """Task ids whose XCom this task's arguments take (TaskFlow references)."""
        found: list[str] = []
        _collect_refs(list(self.args), found)
        _collect_refs(dict(self.kwargs or {}), found)
        return sorted(set(found))


@dataclass(frozen=True)
class Lockfile:
    """The lockfile the version's env is built from: its path in the bundle, its text and
    its hash (the format's ``environment`` section: ``lockfile``, ``lock``, ``lock_hash``)."""

    path: str
    text: str
    lock_hash: str

    def to_document(self) -> dict[str, str]:
        return {"lockfile": self.path, "lock": self.text, "lock_hash": self.lock_hash}

    @classmethod
    def from_document(cls, doc: Mapping[str, str]) -> Lockfile:
        return cls(path=doc["lockfile"], text=doc["lock"], lock_hash=doc["lock_hash"])


@dataclass(frozen=True)
class DagSpec:
    """One validated DAG version. Build with :func:`isolate.format.load_document`."""

    format_version: int
    dag_id: str
    description: str | None
    fileloc: str | None
    schedule: str | None
    timezone: str
    start_date: str | None
    end_date: str | None
    catchup: bool
    max_active_runs: int
    params: Mapping[str, Any]
    tags: tuple[str, ...]
    defaults: Defaults
    tasks: tuple[TaskSpec, ...]
    lockfile: Lockfile
    bundle_hash: str
    max_active_tasks: int = DEFAULT_MAX_ACTIVE_TASKS

    def task(self, task_id: str) -> TaskSpec:
        return self._tasks_by_id[task_id]

    @functools.cached_property
    def _tasks_by_id(self) -> dict[str, TaskSpec]:
        # cached_property writes the instance __dict__ directly, which a frozen dataclass allows.
        return {spec.task_id: spec for spec in self.tasks}

    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(t.task_id for t in self.tasks)

    def edges(self) -> set[tuple[str, str]]:
        """(upstream, downstream) pairs."""
        return {(up, t.task_id) for t in self.tasks for up in t.upstream}

    def to_document(self) -> dict[str, Any]:
        """The canonical document (the same dict the format module validated)."""
        doc: dict[str, Any] = {
            "format_version": self.format_version,
            "dag_id": self.dag_id,
            "description": self.description,
            "fileloc": self.fileloc,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "catchup": self.catchup,
            "max_active_runs": self.max_active_runs,
            "params": dict(self.params),
            "tags": list(self.tags),
            "defaults": {
                **_dataclass_dict(self.defaults.retry),
                "callbacks": _dataclass_dict(self.defaults.callbacks),
            },
            "tasks": [task_document(t) for t in self.tasks],
            "environment": self.lockfile.to_document(),
            "bundle": {"hash": self.bundle_hash},
        }
        doc.update(_unless_default(self, LATER_DAG_FIELDS))
        return doc


def task_document(task: TaskSpec) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "task_id": task.task_id,
        "kind": task.kind,
        "doc": task.doc,
        "upstream": list(task.upstream),
        "trigger_rule": task.trigger_rule,
        "env": dict(task.env),
        "limits": _dataclass_dict(task.limits),
        "retry": _dataclass_dict(task.retry),
        "callbacks": _dataclass_dict(task.callbacks),
    }
    if task.kind == "python":
        doc["callable"] = task.callable
        doc["args"] = list(task.args)
        doc["kwargs"] = dict(task.kwargs or {})
    else:
        doc["command"] = task.command if isinstance(task.command, str) else list(task.command or ())
    doc.update(_unless_default(task, LATER_TASK_FIELDS))
    return doc


def with_later_defaults(document: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical (DAG or task) document with the later fields it omits filled in: for
    showing and comparing versions, never for hashing."""
    return {**later, **document}


def _unless_default(obj: Any, later: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: value for name, default in later.items() if (value := getattr(obj, name)) != default
    }


def is_xcom_ref(value: Any) -> bool:
    """``{"$xcom": "task_id"}``: a TaskFlow hand-over of that task's return value."""
    return isinstance(value, dict) and len(value) == 1 and XCOM_REF_KEY in value


def _collect_refs(value: Any, found: list[str]) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if is_xcom_ref(item):
            found.append(str(item[XCOM_REF_KEY]))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _dataclass_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
