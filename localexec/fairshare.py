"""Which ready tasks get the node's free slots: fair share between tenants. Pure.

Ordering every ready task by logical date across all DAGs lets one DAG's catchup (thousands
of runs, all older than anything else) hold every slot until its backlog is done. Instead,
each free slot goes, one pick at a time, to:

1. **the tenant** with the lowest ``running / weight`` among the tenants that have a runnable
   task and are below their ``max_active_tasks`` cap (ties: by name; DAGs that no tenant owns
   form one group, after the named tenants on ties). This is the fair-share rule of Slurm's
   fair-share factor (usage measured against shares) and of YARN's fair scheduler (the most
   under-served queue relative to its weight goes first), with "usage" being the tasks
   running right now: no decay, no history, so nothing a tenant did yesterday counts today;
2. **within that tenant, the DAG** with the fewest running tasks among its DAGs below their
   own ``max_active_tasks`` (Airflow's name and default, 16: tasks of the DAG running at once,
   across all its runs), ties by dag id: a tenant's catchup DAG does not starve its other DAGs;
3. **within that DAG, the task** with the highest ``priority_weight`` (Airflow's absolute
   weight rule), then the oldest logical date, then run id and task id.

Every pick counts at once: the chosen task's tenant and DAG have one more running task for
the next pick. So 4 free slots between two tenants of equal weight go 2 and 2, and between
weights 3 and 1 they go 3 to 1 over time; a tenant with one ready task gets a slot at the first
pick where its ratio is lowest, however long another tenant's backlog is.

Cost: grouping and heapifying the candidates is linear in their number; each pick pops and
pushes one tenant (a heap over tenants) and one DAG (a heap over the tenant's DAGs) and pops
one task (a heap over the DAG's tasks): O(candidates + free * log(candidates)) in all, for a
hostile backlog of 100,000 tasks as for ten.

Nothing here reads the store or starts a process: the scheduler builds the candidates (every
task instance ready to start) and the running counts, calls :func:`choose` with its free slot
count, and launches what comes back, in order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Generic, TypeVar

P = TypeVar("P")

# Airflow's default for a DAG's max_active_tasks (isolate.format fills in the same).
DEFAULT_DAG_MAX_ACTIVE_TASKS = 16


@dataclass(frozen=True)
class Share:
    """A tenant's share of the node: its ``weight`` (≥ 1) against other tenants', and an
    optional cap on its tasks running at once (None: only the node's parallelism)."""

    weight: int = 1
    max_active_tasks: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or self.weight < 1:
            raise ValueError(f"a tenant's weight must be a positive integer, got {self.weight!r}")
        cap = self.max_active_tasks
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"a tenant's max_active_tasks must be a positive integer, got {cap!r}")


@dataclass(frozen=True)
class Candidate(Generic[P]):
    """One task instance ready to start. ``payload`` is the scheduler's own, never read here.

    ``dag_max_active_tasks`` is the DAG's cap (its spec's ``max_active_tasks``); candidates of
    one DAG should carry the same one (the scheduler passes its latest version's): if they
    differ, the smallest applies to the DAG.
    """

    tenant: str | None
    dag_id: str
    dag_max_active_tasks: int
    priority_weight: int
    logical_date: datetime
    run_id: str
    task_id: str
    payload: P


@dataclass(frozen=True)
class Running:
    """Tasks running now, per tenant (None: DAGs no tenant owns) and per dag_id."""

    tenants: Mapping[str | None, int] = field(default_factory=dict)
    dags: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def count(cls, tasks: Iterable[tuple[str | None, str]]) -> Running:
        """The counts of running tasks given as ``(tenant, dag_id)`` pairs."""
        tenants: dict[str | None, int] = {}
        dags: dict[str, int] = {}
        for tenant, dag_id in tasks:
            tenants[tenant] = tenants.get(tenant, 0) + 1
            dags[dag_id] = dags.get(dag_id, 0) + 1
        return cls(tenants, dags)


# A task's place in its DAG's heap: highest priority first, then oldest, then by ids; the
# index keeps the order total (and never compares payloads) if a task is given twice.
_TaskKey = tuple[int, datetime, str, str, int]


class _Dag:
    __slots__ = ("cap", "dag_id", "running", "tasks")

    def __init__(self, dag_id: str, cap: int, running: int) -> None:
        self.dag_id = dag_id
        self.cap = cap
        self.running = running
        self.tasks: list[_TaskKey] = []

    def open(self) -> bool:
        return bool(self.tasks) and self.running < self.cap


class _Group:
    """One tenant (or the unowned DAGs) while picking: its counts and a heap of its DAGs."""

    __slots__ = ("cap", "dags", "heap", "name", "running", "weight")

    def __init__(self, name: str | None, share: Share, running: int) -> None:
        self.name = name
        self.weight = share.weight
        self.cap = share.max_active_tasks
        self.running = running
        self.dags: dict[str, _Dag] = {}
        self.heap: list[tuple[int, str]] = []  # (running, dag_id) of its open DAGs

    def key(self) -> tuple[Fraction, bool, str]:
        return (Fraction(self.running, self.weight), self.name is None, self.name or "")

    def open(self) -> bool:
        return bool(self.heap) and (self.cap is None or self.running < self.cap)


def choose(
    candidates: Sequence[Candidate[P]],
    running: Running,
    free: int,
    tenants: Mapping[str, Share],
) -> list[Candidate[P]]:
    """The candidates to start in ``free`` slots, in the order to start them (at most
    ``free``; fewer when caps leave the rest waiting). ``tenants`` gives each tenant's share
    (a tenant absent from it, and the group of unowned DAGs, has weight 1 and no cap).
    Deterministic: the same arguments give the same list."""
    if free <= 0 or not candidates:
        return []
    groups: dict[str | None, _Group] = {}
    for index, candidate in enumerate(candidates):
        group = groups.get(candidate.tenant)
        if group is None:
            share = Share() if candidate.tenant is None else tenants.get(candidate.tenant, Share())
            group = _Group(candidate.tenant, share, running.tenants.get(candidate.tenant, 0))
            groups[candidate.tenant] = group
        dag = group.dags.get(candidate.dag_id)
        if dag is None:
            dag = _Dag(
                candidate.dag_id,
                candidate.dag_max_active_tasks,
                running.dags.get(candidate.dag_id, 0),
            )
            group.dags[candidate.dag_id] = dag
        else:
            dag.cap = min(dag.cap, candidate.dag_max_active_tasks)
        dag.tasks.append(
            (
                -candidate.priority_weight,
                candidate.logical_date,
                candidate.run_id,
                candidate.task_id,
                index,
            )
        )
    tenant_heap: list[tuple[tuple[Fraction, bool, str], _Group]] = []
    for group in groups.values():
        for dag in group.dags.values():
            heapq.heapify(dag.tasks)
            if dag.open():
                group.heap.append((dag.running, dag.dag_id))
        heapq.heapify(group.heap)
        if group.open():
            tenant_heap.append((group.key(), group))
    # Keys are unique (one per group name), so the heap never compares two _Group objects.
    heapq.heapify(tenant_heap)
    chosen: list[Candidate[P]] = []
    while tenant_heap and len(chosen) < free:
        _, group = heapq.heappop(tenant_heap)
        _, dag_id = heapq.heappop(group.heap)
        dag = group.dags[dag_id]
        chosen.append(candidates[heapq.heappop(dag.tasks)[-1]])
        dag.running += 1
        group.running += 1
        if dag.open():
            heapq.heappush(group.heap, (dag.running, dag.dag_id))
        if group.open():
            heapq.heappush(tenant_heap, (group.key(), group))
    return chosen
