"""``isolate gc`` of the node's env cache, and which envs its DAG versions need.

The plan and its application are envcache's (:mod:`envcache.gc`); this module knows which
envs are roots, and runs a collection (:func:`collect_envs`: plan, remove unless a dry run,
audit). The roots are those of each DAG's latest ``keep_versions`` versions, of versions
pinned by queued or running runs, and admin pins. Each version's key is the one stored with
it on this node's basis (see :mod:`isolate.services.environments`); only a version without
one has its spec read and its lock parsed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from envcache import gc as envgc
from isolate.config import Config
from isolate.services.catalog import stored_records
from isolate.services.environments import EnvResolver
from isolate.store import Store


def version_keys(store: Store, resolver: EnvResolver) -> dict[str, list[tuple[str, int]]]:
    """Env key -> the (dag_id, version) pairs whose env it is, newest version first."""
    used: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for pair, key in resolver.version_keys(store, list(stored_records(store))).items():
        used[key].append(pair)
    for pairs in used.values():
        pairs.sort(key=lambda pair: (pair[0], -pair[1]))
    return dict(used)


def gc_roots(
    store: Store,
    resolver: EnvResolver,
    *,
    keep_versions: int,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Env key -> why gc must keep it: a recent version of a DAG, the version of a queued or
    running run (whatever its age), or an admin pin."""
    roots: dict[str, str] = dict(extra or {})
    active = [
        store.get_version(dag_id, version)
        for dag_id, version in sorted(store.runs.active_versions())
    ]
    recent = list(stored_records(store, newest=keep_versions))
    keys = resolver.version_keys(store, active + recent)
    for record in active:
        at = (record.dag_id, record.version)
        roots.setdefault(
            keys[at], f"{record.dag_id} v{record.version} (has a queued or running run)"
        )
    seen: set[str] = set()
    for record in recent:
        rank = f"one of the latest {keep_versions}" if record.dag_id in seen else "latest"
        seen.add(record.dag_id)
        at = (record.dag_id, record.version)
        roots.setdefault(keys[at], f"{record.dag_id} v{record.version} ({rank} version)")
    for key, reason in resolver.cache.pins().items():
        roots[key] = f"pinned: {reason}" if reason else "pinned"
    return roots


@dataclass(frozen=True)
class Collection:
    """What ``isolate gc`` decided, and (unless a dry run) what it did."""

    plan: envgc.GcPlan
    report: envgc.GcReport | None

    def to_json(self) -> dict[str, object]:
        def decisions(found: list[envgc.Decision]) -> list[dict[str, object]]:
            return [{"key": d.key, "reason": d.reason, "size": d.size} for d in found]

        report = self.report
        return {
            "dry_run": report is None,
            "keep": decisions(self.plan.keep),
            "remove": decisions(self.plan.remove),
            # Planned for removal, but a running task held them: skipped, left for later.
            "in_use": decisions(report.in_use) if report else [],
            "bytes_freed": report.bytes_freed if report else 0,
        }


def collect_envs(
    config: Config,
    store: Store,
    *,
    keep_versions: int,
    older_than: timedelta | None,
    dry_run: bool,
    actor: str,
) -> Collection:
    """Plan which envs to remove (none that a root needs, nor one used or built within
    ``older_than``), then, unless ``dry_run``, remove them and audit it as ``actor``."""
    resolver = EnvResolver(config)
    roots = gc_roots(store, resolver, keep_versions=keep_versions)
    plan = envgc.plan(
        envgc.facts(resolver.cache), roots, now=datetime.now(UTC), older_than=older_than
    )
    if dry_run:
        return Collection(plan, None)
    report = envgc.collect(resolver.cache, plan)
    store.audit(
        actor,
        "gc",
        "",
        details={
            "removed": [d.key for d in report.removed],
            "in_use": [d.key for d in report.in_use],
            "bytes_freed": report.bytes_freed,
        },
    )
    return Collection(plan, report)
