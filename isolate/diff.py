"""What changed between two versions of a DAG. Pure: compares two validated specs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from isolate.model import (
    LATER_DAG_FIELDS,
    LATER_TASK_FIELDS,
    DagSpec,
    TaskSpec,
    task_document,
    with_later_defaults,
)

Change = tuple[Any, Any]

# Fields compared elsewhere (tasks, edges, environment, bundle) or that are not the DAG's
# behaviour (format_version is upgraded on load).
_NOT_DAG_FIELDS = {"tasks", "environment", "bundle", "format_version"}


@dataclass(frozen=True)
class SpecDiff:
    """Differences from ``old`` to ``new``; empty collections mean "no change"."""

    dag_id: str
    dag_fields: dict[str, Change] = field(default_factory=dict)
    tasks_added: list[str] = field(default_factory=list)
    tasks_removed: list[str] = field(default_factory=list)
    tasks_changed: dict[str, dict[str, Change]] = field(default_factory=dict)
    edges_added: list[tuple[str, str]] = field(default_factory=list)
    edges_removed: list[tuple[str, str]] = field(default_factory=list)
    lock_hash: Change | None = None
    """The lockfile's hash before and after (shown as the spec's ``environment``)."""
    bundle: Change | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.dag_fields
            or self.tasks_added
            or self.tasks_removed
            or self.tasks_changed
            or self.edges_added
            or self.edges_removed
            or self.lock_hash
            or self.bundle
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "dag_fields": {k: {"old": a, "new": b} for k, (a, b) in self.dag_fields.items()},
            "tasks_added": self.tasks_added,
            "tasks_removed": self.tasks_removed,
            "tasks_changed": {
                t: {k: {"old": a, "new": b} for k, (a, b) in changes.items()}
                for t, changes in self.tasks_changed.items()
            },
            "edges_added": [list(e) for e in self.edges_added],
            "edges_removed": [list(e) for e in self.edges_removed],
            "environment": _pair(self.lock_hash),
            "bundle": _pair(self.bundle),
        }


def _pair(change: Change | None) -> dict[str, Any] | None:
    return None if change is None else {"old": change[0], "new": change[1]}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"retry": {"retries": 1}}`` -> ``{"retry.retries": 1}``; lists stay whole."""
    if not isinstance(value, dict) or (prefix and not value):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return out


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Change]:
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    }


def diff_specs(old: DagSpec, new: DagSpec) -> SpecDiff:
    """Tasks added/removed/changed, edges added/removed, DAG fields, env and bundle changes."""
    # Fields the canonical form omits at their default are compared with it filled in.
    old_doc = with_later_defaults(old.to_document(), LATER_DAG_FIELDS)
    new_doc = with_later_defaults(new.to_document(), LATER_DAG_FIELDS)
    dag_fields = _changes(
        flatten({k: v for k, v in old_doc.items() if k not in _NOT_DAG_FIELDS}),
        flatten({k: v for k, v in new_doc.items() if k not in _NOT_DAG_FIELDS}),
    )
    old_tasks = {t.task_id: t for t in old.tasks}
    new_tasks = {t.task_id: t for t in new.tasks}
    changed: dict[str, dict[str, Change]] = {}
    for task_id in sorted(set(old_tasks) & set(new_tasks)):
        # Upstream changes are reported once, as edges.
        before = flatten(
            {k: v for k, v in _task_fields(old_tasks[task_id]).items() if k != "upstream"}
        )
        after = flatten(
            {k: v for k, v in _task_fields(new_tasks[task_id]).items() if k != "upstream"}
        )
        if delta := _changes(before, after):
            changed[task_id] = delta
    old_lock, new_lock = old.lockfile.lock_hash, new.lockfile.lock_hash
    return SpecDiff(
        dag_id=new.dag_id,
        dag_fields=dag_fields,
        tasks_added=sorted(set(new_tasks) - set(old_tasks)),
        tasks_removed=sorted(set(old_tasks) - set(new_tasks)),
        tasks_changed=changed,
        edges_added=sorted(new.edges() - old.edges()),
        edges_removed=sorted(old.edges() - new.edges()),
        lock_hash=(old_lock, new_lock) if old_lock != new_lock else None,
        bundle=(old.bundle_hash, new.bundle_hash) if old.bundle_hash != new.bundle_hash else None,
    )


def _task_fields(task: TaskSpec) -> dict[str, Any]:
    return with_later_defaults(task_document(task), LATER_TASK_FIELDS)
