"""The scheduler's pure rules: trigger rules, retry delays, due data intervals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from isolate.format import load_object
from isolate.model import DagSpec, RetryPolicy
from isolate.states import RunState
from isolate.states import TaskState as S
from localexec import planner
from localexec.planner import TaskView, plan_run, topological
from localexec.retries import DEFAULT_MAX_DELAY, next_attempt, retry_delay
from localexec.timetable import Interval, catchup_floor, count_due, due_intervals, next_tick
from localexec.trigger_rules import Verdict as V
from localexec.trigger_rules import evaluate
from tests.docs import doc_with, minimal_doc, python_task


@pytest.mark.parametrize(
    ("rule", "upstream", "verdict"),
    [
        ("all_success", [], V.RUN),
        ("all_success", [S.SUCCESS, S.SUCCESS], V.RUN),
        ("all_success", [S.SUCCESS, S.RUNNING], V.WAIT),
        ("all_success", [S.SUCCESS, S.FAILED], V.UPSTREAM_FAILED),
        ("all_success", [S.UPSTREAM_FAILED, S.RUNNING], V.UPSTREAM_FAILED),
        ("all_success", [S.SUCCESS, S.SKIPPED], V.SKIP),
        ("all_failed", [S.FAILED, S.UPSTREAM_FAILED], V.RUN),
        ("all_failed", [S.FAILED, S.SUCCESS], V.SKIP),
        ("all_failed", [S.FAILED, S.UP_FOR_RETRY], V.WAIT),
        ("all_done", [S.FAILED, S.SUCCESS, S.SKIPPED], V.RUN),
        ("all_done", [S.FAILED, S.UP_FOR_RETRY], V.WAIT),
        ("one_success", [S.SUCCESS, S.RUNNING], V.RUN),
        ("one_success", [S.FAILED, S.RUNNING], V.WAIT),
        ("one_success", [S.FAILED, S.SKIPPED], V.UPSTREAM_FAILED),
        ("one_success", [S.SKIPPED, S.SKIPPED], V.SKIP),
        ("one_failed", [S.FAILED, S.RUNNING], V.RUN),
        ("one_failed", [S.SUCCESS, S.RUNNING], V.WAIT),
        ("one_failed", [S.SUCCESS, S.SKIPPED], V.SKIP),
        ("none_failed", [S.SUCCESS, S.SKIPPED], V.RUN),
        ("none_failed", [S.SKIPPED, S.SKIPPED], V.RUN),
        ("none_failed", [S.SUCCESS, S.QUEUED], V.WAIT),
        ("none_failed", [S.SUCCESS, S.UPSTREAM_FAILED], V.UPSTREAM_FAILED),
        ("none_failed_min_one_success", [S.SUCCESS, S.SKIPPED], V.RUN),
        ("none_failed_min_one_success", [S.SKIPPED, S.SKIPPED], V.SKIP),
        ("none_failed_min_one_success", [S.SUCCESS, S.FAILED], V.UPSTREAM_FAILED),
        ("none_failed_min_one_success", [S.SUCCESS, S.SCHEDULED], V.WAIT),
    ],
)
def test_trigger_rules(rule: str, upstream: list[S], verdict: V) -> None:
    assert evaluate(rule, upstream) is verdict


def test_unknown_trigger_rule() -> None:
    with pytest.raises(ValueError, match="unknown trigger rule"):
        evaluate("sometimes", [S.SUCCESS])


def test_fixed_and_exponential_retry_delays() -> None:
    fixed = RetryPolicy(retries=3, retry_delay=60)
    assert [retry_delay(fixed, n) for n in (1, 2, 3)] == [timedelta(seconds=60)] * 3
    grow = RetryPolicy(
        retries=10, retry_delay=60, retry_exponential_backoff=True, max_retry_delay=300
    )
    assert [retry_delay(grow, n).total_seconds() for n in (1, 2, 3, 4, 10)] == [
        60,
        120,
        240,
        300,
        300,
    ]
    uncapped = RetryPolicy(retries=10**6, retry_delay=1, retry_exponential_backoff=True)
    assert retry_delay(uncapped, 10**6) == DEFAULT_MAX_DELAY  # no 2**1000000 is computed
    capped_fixed = RetryPolicy(retries=1, retry_delay=600, max_retry_delay=60)
    assert retry_delay(capped_fixed, 1) == timedelta(seconds=60)
    with pytest.raises(ValueError):
        retry_delay(fixed, 0)


def test_next_attempt_stops_when_retries_are_used_up() -> None:
    policy = RetryPolicy(retries=2, retry_delay=30)
    failed = datetime(2024, 1, 1, tzinfo=UTC)
    assert next_attempt(policy, 1, failed) == failed + timedelta(seconds=30)
    assert next_attempt(policy, 2, failed) == failed + timedelta(seconds=30)
    assert next_attempt(policy, 3, failed) is None
    assert next_attempt(RetryPolicy(), 1, failed) is None


def spec(**fields: object) -> DagSpec:
    doc = minimal_doc()
    doc.update(fields)
    return load_object(json.loads(json.dumps(doc)))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_daily_intervals_end_before_their_run_and_catch_up() -> None:
    daily = spec(schedule="@daily", start_date="2024-01-01T00:00:00+00:00", catchup=True)
    now = at("2024-01-04T12:00:00+00:00")
    assert due_intervals(daily, last=None, now=now) == [
        Interval(at("2024-01-01T00:00:00+00:00"), at("2024-01-02T00:00:00+00:00")),
        Interval(at("2024-01-02T00:00:00+00:00"), at("2024-01-03T00:00:00+00:00")),
        Interval(at("2024-01-03T00:00:00+00:00"), at("2024-01-04T00:00:00+00:00")),
    ]
    assert [
        i.start.day for i in due_intervals(daily, last=at("2024-01-02T00:00:00+00:00"), now=now)
    ] == [3]
    assert len(due_intervals(daily, last=None, now=now, limit=2)) == 2
    assert due_intervals(daily, last=None, now=at("2024-01-01T23:59:59+00:00")) == []


def test_without_catchup_only_the_newest_interval_runs() -> None:
    hourly = spec(schedule="@hourly", start_date="2020-01-01T00:00:00+00:00")
    now = at("2024-06-01T10:30:00+00:00")
    assert due_intervals(hourly, last=None, now=now) == [
        Interval(at("2024-06-01T09:00:00+00:00"), at("2024-06-01T10:00:00+00:00"))
    ]
    assert due_intervals(hourly, last=at("2024-06-01T09:00:00+00:00"), now=now) == []
    exactly = due_intervals(hourly, last=None, now=at("2024-06-01T10:00:00+00:00"))
    assert exactly == [Interval(at("2024-06-01T09:00:00+00:00"), at("2024-06-01T10:00:00+00:00"))]
    young = spec(schedule="@daily", start_date="2024-06-01T00:00:00+00:00")
    assert due_intervals(young, last=None, now=at("2024-06-01T10:00:00+00:00")) == []


def test_local_time_schedules_follow_dst_and_end_date_stops_runs() -> None:
    paris = spec(
        schedule="0 6 * * *",
        timezone="Europe/Paris",
        start_date="2024-03-30T00:00:00+01:00",
        catchup=True,
        end_date="2024-04-01T00:00:00+00:00",
    )
    due = due_intervals(paris, last=None, now=at("2024-04-05T00:00:00+00:00"))
    # 06:00 in Paris is 05:00 UTC before the change on 2024-03-31 and 04:00 UTC after it.
    assert [i.start.isoformat() for i in due] == [
        "2024-03-30T05:00:00+00:00",
        "2024-03-31T04:00:00+00:00",
    ]


def test_once_and_unscheduled_dags() -> None:
    once = spec(schedule="@once", start_date="2024-01-01T00:00:00+00:00")
    now = at("2024-02-01T00:00:00+00:00")
    assert due_intervals(once, last=None, now=now) == [
        Interval(at("2024-01-01T00:00:00+00:00"), at("2024-01-01T00:00:00+00:00"))
    ]
    assert due_intervals(once, last=at("2024-01-01T00:00:00+00:00"), now=now) == []
    assert due_intervals(spec(), last=None, now=now) == []


def test_a_failure_settles_a_long_chain_in_one_linear_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile DAG of the longest chain its spec may hold, listed leaves first: its root's
    failure makes every other task upstream_failed in one plan, in linear time (planning
    sweep after sweep over the task list was quadratic, and held up the whole loop)."""
    count = 2500
    tasks = [
        python_task(f"t{i:04d}", upstream=[f"t{i - 1:04d}"] if i else [])
        for i in reversed(range(count))
    ]
    chain = load_object(json.loads(json.dumps(doc_with(tasks))))
    views = {f"t{i:04d}": TaskView(S.NONE) for i in range(1, count)}
    views["t0000"] = TaskView(S.FAILED)
    evaluated: list[str] = []

    def counting(rule: str, upstream: list[S]) -> V:
        evaluated.append(rule)
        return evaluate(rule, upstream)

    monkeypatch.setattr(planner, "evaluate", counting)
    plan = plan_run(chain, views, at("2024-01-01T00:00:00+00:00"))
    assert len(evaluated) == count - 1  # once each (sweeping took 2500 sweeps, 3 million)
    assert sorted(plan.upstream_failed) == sorted(views.keys() - {"t0000"})
    assert not plan.schedule and not plan.skip and plan.finished is RunState.FAILED
    order = [task.task_id for task in topological(chain)]
    assert order == [f"t{i:04d}" for i in range(count)]


def test_topological_order_puts_upstream_first_and_keeps_ties_in_task_id_order() -> None:
    doc = doc_with(
        [
            python_task("a", upstream=["d"]),
            python_task("b"),
            python_task("c", upstream=["a", "b"]),
            python_task("d"),
        ]
    )
    order = [task.task_id for task in topological(load_object(json.loads(json.dumps(doc))))]
    assert order == ["b", "d", "a", "c"]


def test_the_catchup_floor_keeps_the_newest_intervals_only() -> None:
    daily = spec(schedule="@daily", start_date="2024-01-01T00:00:00+00:00", catchup=True)
    now = at("2024-01-11T12:00:00+00:00")  # ten intervals have ended: Jan 1 .. Jan 10
    assert catchup_floor(daily, now=now, cap=10) is None
    assert catchup_floor(daily, now=now, cap=20) is None
    assert catchup_floor(daily, now=now, cap=9) == at("2024-01-02T00:00:00+00:00")
    assert catchup_floor(daily, now=now, cap=3) == at("2024-01-08T00:00:00+00:00")
    floor = catchup_floor(daily, now=now, cap=3)
    starts = [i.start.day for i in due_intervals(daily, last=None, now=now, earliest=floor)]
    assert starts == [8, 9, 10]
    assert count_due(daily, now=now, cap=3) == 4 and count_due(daily, now=now, cap=50) == 10
    no_catchup = spec(schedule="@daily", start_date="2024-01-01T00:00:00+00:00", catchup=False)
    assert catchup_floor(no_catchup, now=now, cap=3) is None
    # A minutely schedule from years back costs cap steps, not millions.
    minutely = spec(schedule="* * * * *", start_date="2000-01-01T00:00:00+00:00", catchup=True)
    assert catchup_floor(minutely, now=now, cap=2) == at("2024-01-11T11:58:00+00:00")


def test_the_next_tick_is_when_another_interval_can_end() -> None:
    daily = spec(schedule="0 6 * * *", start_date="2024-01-01T00:00:00+00:00")
    assert next_tick(daily, at("2024-01-11T12:00:00+00:00")) == at("2024-01-12T06:00:00+00:00")
    assert next_tick(daily, at("2024-01-11T05:59:00+00:00")) == at("2024-01-11T06:00:00+00:00")
    once = spec(schedule="@once", start_date="2024-01-01T00:00:00+00:00")
    assert next_tick(once, at("2024-01-11T12:00:00+00:00")).year == 9999
