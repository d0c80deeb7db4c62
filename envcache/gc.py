"""Garbage collection of envs: a pure plan from facts and roots, then a separate apply step.

Roots are what must stay (the caller decides: e.g. the envs of each DAG's latest versions,
of running tasks, and admin pins). An env that is not a root is removed unless it was used
or built more recently than ``older_than``. An env in use by a task is never removed: the
apply step takes each env's use lock exclusively and skips what it cannot take. Then the
package trees and files envs shared (objects/) that no remaining env uses are pruned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from envcache import trees
from envcache.cache import EnvCache
from envcache.errors import CorruptEnvError


@dataclass(frozen=True)
class EnvFacts:
    """What gc knows of one env; ``size`` and ``created`` are None if its manifest is bad."""

    key: str
    size: int | None
    created: datetime | None
    last_used: datetime | None

    @property
    def last_activity(self) -> datetime | None:
        times = [t for t in (self.created, self.last_used) if t is not None]
        return max(times) if times else None


@dataclass(frozen=True)
class Decision:
    key: str
    reason: str
    size: int | None


@dataclass(frozen=True)
class GcPlan:
    remove: list[Decision] = field(default_factory=list)
    keep: list[Decision] = field(default_factory=list)


@dataclass(frozen=True)
class GcReport:
    removed: list[Decision]
    in_use: list[Decision]
    bytes_freed: int
    trees_removed: int = 0
    """Shared package trees no env links to any more, removed after the envs."""
    shared_pruned: bool = True
    """False if builds in progress kept gc from pruning shared trees and files this time."""


def facts(cache: EnvCache) -> list[EnvFacts]:
    """The facts of every env directory in ``cache`` (a damaged one included)."""
    found = []
    for key in cache.keys():  # noqa: SIM118 - EnvCache.keys(), not a dict
        try:
            env = cache.get(key)
        except CorruptEnvError:
            env = None
        found.append(
            EnvFacts(
                key=key,
                size=env.manifest.total_size if env else None,
                created=datetime.fromisoformat(env.manifest.created) if env else None,
                last_used=cache.last_used(key),
            )
        )
    return found


def plan(
    envs: Sequence[EnvFacts],
    roots: Mapping[str, str],
    *,
    now: datetime,
    older_than: timedelta | None = None,
) -> GcPlan:
    """Which envs to remove and which to keep, each with its reason. Pure."""
    result = GcPlan()
    for env in sorted(envs, key=lambda e: e.key):
        activity = env.last_activity
        if env.key in roots:
            result.keep.append(Decision(env.key, roots[env.key], env.size))
        elif older_than is not None and activity is not None and now - activity < older_than:
            result.keep.append(
                Decision(env.key, f"used or built since {activity:%Y-%m-%d %H:%M}", env.size)
            )
        elif env.size is None:
            result.remove.append(Decision(env.key, "damaged manifest, not a root", None))
        else:
            result.remove.append(Decision(env.key, "not a root", env.size))
    return result


def collect(cache: EnvCache, decided: GcPlan, *, prune_tool_cache: bool = True) -> GcReport:
    """Apply ``decided``: remove its envs (skipping those in use), then unused shared files and,
    if asked, the build tool's cache entries no env needs. Reports bytes actually freed."""
    before = disk_usage(cache.root)
    removed: list[Decision] = []
    in_use: list[Decision] = []
    for decision in decided.remove:
        (removed if cache.remove(decision.key) else in_use).append(decision)
    trees_removed = prune_shared(cache)
    if prune_tool_cache and removed:
        cache.builder.prune_cache(cache.tool_cache_dir)
    return GcReport(
        removed=removed,
        in_use=in_use,
        bytes_freed=max(0, before - disk_usage(cache.root)),
        trees_removed=trees_removed or 0,
        shared_pruned=trees_removed is not None,
    )


def prune_shared(cache: EnvCache) -> int | None:
    """Remove the shared trees no env links to, then the shared files no env links to.

    Returns how many trees were removed, or None if a build in progress holds the gc lock:
    a build links trees (and files) before its env, which names them, is in ``envs/``, so
    nothing is pruned while one runs; the next gc prunes what this one left.
    """
    if not cache.locks_dir.is_dir():
        return 0  # nothing was ever built
    with cache.gc_lock().try_exclusive() as taken:
        if not taken:
            return None
        removed = cache.trees.prune(referenced_trees(cache))
        cache.objects.prune()  # after the trees: their files' links to objects are gone
    return removed


def referenced_trees(cache: EnvCache) -> set[str]:
    """Digests of the trees some env in ``envs/`` links to, from the env manifests (or, for an
    env whose manifest is unreadable, from its symlinks)."""
    found: set[str] = set()
    for key in cache.keys():  # noqa: SIM118 - EnvCache.keys(), not a dict
        try:
            env = cache.get(key)
        except CorruptEnvError:
            env = None
        if env is not None:
            found.update(env.manifest.trees.values())
        else:
            found.update(trees.linked_from(cache.envs_dir / key))
    return found


def disk_usage(root: os.PathLike[str] | str) -> int:
    """Bytes of the distinct files under ``root`` (each hardlinked inode counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total
