"""Which envs the node's DAG versions need: gc roots and "used by" for listings.

The plan and its application are envcache's (:mod:`envcache.gc`); this module only knows
which envs are roots: those of each DAG's latest ``keep_versions`` versions, of versions
pinned by queued or running runs, and admin pins.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from isolate.services.catalog import stored_specs, stored_version
from isolate.services.environments import EnvResolver
from isolate.store import Store


def version_keys(store: Store, resolver: EnvResolver) -> dict[str, list[tuple[str, int]]]:
    """Env key -> the (dag_id, version) pairs whose env it is, newest version first."""
    used: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for dag_id, version, spec in stored_specs(store):
        used[resolver.key(spec)].append((dag_id, version))
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
    for dag_id, version in sorted(store.runs.active_versions()):
        spec = stored_version(store, dag_id, version).spec
        roots.setdefault(resolver.key(spec), f"{dag_id} v{version} (has a queued or running run)")
    seen: set[str] = set()
    for dag_id, version, spec in stored_specs(store, newest=keep_versions):
        rank = f"one of the latest {keep_versions}" if dag_id in seen else "latest"
        seen.add(dag_id)
        roots.setdefault(resolver.key(spec), f"{dag_id} v{version} ({rank} version)")
    for key, reason in resolver.cache.pins().items():
        roots[key] = f"pinned: {reason}" if reason else "pinned"
    return roots
