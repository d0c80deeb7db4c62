"""The fair-share policy: which ready tasks get the free slots (localexec/fairshare.py)."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localexec.fairshare import Candidate, Running, Share, choose

START = datetime(2020, 1, 1, tzinfo=UTC)


def cand(
    tenant: str | None,
    dag_id: str,
    *,
    day: int = 0,
    task_id: str = "t",
    priority: int = 1,
    cap: int = 16,
    run_id: str | None = None,
) -> Candidate[str]:
    date = START + timedelta(days=day)
    run = run_id or f"scheduled__{date.isoformat()}"
    return Candidate(
        tenant=tenant,
        dag_id=dag_id,
        dag_max_active_tasks=cap,
        priority_weight=priority,
        logical_date=date,
        run_id=run,
        task_id=task_id,
        payload=f"{dag_id}/{run}/{task_id}",
    )


def backlog(tenant: str, dag_id: str, runs: int, **fields: Any) -> list[Candidate[str]]:
    return [cand(tenant, dag_id, day=day, **fields) for day in range(runs)]


def tenants_of(chosen: list[Candidate[str]]) -> list[str | None]:
    return [c.tenant for c in chosen]


NONE = Running()


def test_two_tenants_of_equal_weight_share_the_slots() -> None:
    candidates = backlog("a", "a.etl", 50) + backlog("b", "b.etl", 50)
    chosen = choose(candidates, NONE, 4, {})
    assert tenants_of(chosen) == ["a", "b", "a", "b"]
    # What already runs counts: b has 2 running, so a gets the first two slots, then the
    # tie at 2 goes to a by name.
    chosen = choose(candidates, Running({"b": 2}, {"b.etl": 2}), 4, {})
    assert tenants_of(chosen) == ["a", "a", "a", "b"]


def test_weights_three_to_one() -> None:
    candidates = backlog("a", "a.etl", 100, cap=100) + backlog("b", "b.etl", 100, cap=100)
    shares = {"a": Share(weight=3), "b": Share(weight=1)}
    chosen = choose(candidates, NONE, 40, shares)
    assert Counter(tenants_of(chosen)) == {"a": 30, "b": 10}
    # Over time too: one slot frees at a time, and the running counts follow.
    running: Counter[str | None] = Counter()
    for _ in range(40):
        (pick,) = choose(candidates, Running(dict(running), {}), 1, shares)
        running[pick.tenant] += 1
    assert running == {"a": 30, "b": 10}


def test_a_tenant_cap_holds() -> None:
    candidates = backlog("a", "a.etl", 20) + backlog("b", "b.etl", 20)
    shares = {"a": Share(weight=10, max_active_tasks=3)}
    chosen = choose(candidates, NONE, 10, shares)
    assert Counter(tenants_of(chosen)) == {"a": 3, "b": 7}
    # Already at its cap: nothing more for a, even with slots left over.
    chosen = choose(backlog("a", "a.etl", 20), Running({"a": 3}, {"a.etl": 3}), 10, shares)
    assert chosen == []


def test_a_dag_cap_holds_across_its_runs() -> None:
    candidates = backlog("a", "a.catchup", 100, cap=2)
    assert len(choose(candidates, NONE, 10, {})) == 2
    assert choose(candidates, Running({"a": 2}, {"a.catchup": 2}), 10, {}) == []
    # The tenant's other DAGs take the rest; within the tenant the DAG with fewer running
    # tasks goes first.
    candidates += backlog("a", "a.other", 100)
    chosen = choose(candidates, Running({"a": 1}, {"a.catchup": 1}), 10, {})
    assert Counter(c.dag_id for c in chosen) == {"a.catchup": 1, "a.other": 9}
    assert chosen[0].dag_id == "a.other"


def test_within_a_tenant_dags_alternate_by_their_running_tasks() -> None:
    candidates = backlog("a", "a.x", 10) + backlog("a", "a.y", 10)
    chosen = choose(candidates, Running({"a": 2}, {"a.x": 2}), 4, {})
    assert [c.dag_id for c in chosen] == ["a.y", "a.y", "a.x", "a.y"]


def test_priority_within_a_dag_then_the_oldest_run() -> None:
    candidates = [
        cand("a", "a.etl", day=0, task_id="low", priority=-5),
        cand("a", "a.etl", day=3, task_id="urgent", priority=100),
        cand("a", "a.etl", day=1, task_id="plain"),
        cand("a", "a.etl", day=0, task_id="plain"),
        cand("a", "a.etl", day=0, task_id="also"),
    ]
    chosen = choose(candidates, NONE, 5, {})
    assert [(c.task_id, c.logical_date.day) for c in chosen] == [
        ("urgent", 4),
        ("also", 1),
        ("plain", 1),
        ("plain", 2),
        ("low", 1),
    ]


def test_priority_does_not_cross_tenants() -> None:
    """A tenant cannot outbid another with priority_weight: it orders its own tasks only."""
    candidates = [*backlog("a", "a.etl", 10, priority=2**31 - 1), cand("b", "b.etl")]
    assert tenants_of(choose(candidates, Running({"a": 1}), 1, {})) == ["b"]


def test_a_catchup_backlog_does_not_delay_another_tenants_task() -> None:
    """The incident: 2,384 catchup runs of one DAG kept a manual run waiting for 756."""
    catchup = backlog("a", "a.history", 2384, cap=10_000)
    manual = cand("b", "b.report", day=5000, run_id="manual__2026-01-01T00:00:00+00:00")
    chosen = choose([*catchup, manual], Running({"a": 3}, {"a.history": 3}), 1, {})
    assert chosen == [manual]
    # Even when b already runs more than a: it is b's turn as soon as its ratio is lowest.
    chosen = choose([*catchup, manual], Running({"a": 3, "b": 4}, {"b.report": 4}), 4, {})
    assert tenants_of(chosen) == ["a", "a", "b", "a"] and chosen[2] is manual


def test_unowned_dags_form_one_group_after_the_named_tenants_on_ties() -> None:
    candidates = [
        *backlog(None, "x", 5),
        *backlog(None, "y", 5),
        *backlog("a", "a.etl", 5),
    ]
    chosen = choose(candidates, NONE, 4, {})
    assert tenants_of(chosen) == ["a", None, "a", None]
    assert [c.dag_id for c in chosen if c.tenant is None] == ["x", "y"]


def test_free_slots_bound_the_picks() -> None:
    candidates = backlog("a", "a.etl", 3)
    assert choose(candidates, NONE, 0, {}) == []
    assert choose(candidates, NONE, -1, {}) == []
    assert len(choose(candidates, NONE, 10, {})) == 3
    assert choose([], NONE, 10, {}) == []


def test_the_choice_is_deterministic_whatever_the_input_order() -> None:
    rng = random.Random(3)
    candidates = [
        cand(
            rng.choice(["a", "b", "c", None]),
            f"d{rng.randrange(6)}",
            day=rng.randrange(30),
            task_id=f"t{rng.randrange(4)}",
            priority=rng.randrange(-2, 3),
        )
        for _ in range(500)
    ]
    # One dag_id belongs to one tenant, as the mapping guarantees.
    candidates = list({(c.dag_id, c.run_id, c.task_id): c for c in candidates}.values())
    owner = {c.dag_id: c.tenant for c in candidates}
    candidates = [c for c in candidates if owner[c.dag_id] == c.tenant]
    shares = {"a": Share(2), "b": Share(1, max_active_tasks=5)}
    first = choose(candidates, NONE, 60, shares)
    for _ in range(5):
        rng.shuffle(candidates)
        assert choose(candidates, NONE, 60, shares) == first


def test_payloads_come_back_untouched() -> None:
    class Opaque:  # neither comparable nor hashable by value
        __eq__ = None  # type: ignore[assignment]

    payload = Opaque()
    twice = [
        Candidate("a", "a.etl", 16, 1, START, "r", "t", payload),
        Candidate("a", "a.etl", 16, 1, START, "r", "t", payload),
    ]
    chosen = choose(twice, NONE, 2, {})
    assert [c.payload for c in chosen] == [payload, payload]


def test_running_counts_from_pairs() -> None:
    running = Running.count([("a", "a.x"), ("a", "a.y"), (None, "z"), ("a", "a.x")])
    assert running.tenants == {"a": 3, None: 1}
    assert running.dags == {"a.x": 2, "a.y": 1, "z": 1}


@pytest.mark.parametrize("share", [{"weight": 0}, {"weight": True}, {"max_active_tasks": 0}])
def test_a_share_must_be_positive(share: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be a positive integer"):
        Share(**share)


def test_a_hostile_backlog_is_chosen_from_quickly() -> None:
    """100,000 ready tasks over 1,000 DAGs and 50 tenants: no quadratic behaviour."""
    candidates = [
        cand(f"t{i % 50}", f"d{i % 1000}", day=i // 1000, task_id=f"task{i % 7}")
        for i in range(100_000)
    ]
    started = time.perf_counter()
    chosen = choose(candidates, NONE, 1000, {})
    elapsed = time.perf_counter() - started
    assert len(chosen) == 1000
    assert Counter(tenants_of(chosen)) == {f"t{i}": 20 for i in range(50)}
    assert elapsed < 5, elapsed
