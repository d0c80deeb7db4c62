"""Which scheduled runs are due: Airflow's data intervals over cron schedules. Pure.

A run covers the interval between two schedule ticks and is created once the interval has
ended; its logical date is the interval's start. Ticks are computed in the DAG's time zone
(so ``0 6 * * *`` stays at 06:00 local across DST changes) and returned in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from isolate.model import DagSpec
from isolate.schedules import cron_of


@dataclass(frozen=True)
class Interval:
    """A data interval; the run's logical date is ``start``."""

    start: datetime
    end: datetime


def _ticks(cron: str, zone: ZoneInfo, first: datetime) -> Iterator[datetime]:
    """Cron ticks at or after ``first``, in UTC."""
    local = first.astimezone(zone)
    # get_next is strictly after its start: ``first`` itself counts when it is a tick.
    tick: datetime = (
        local if croniter.match(cron, local) else croniter(cron, local).get_next(datetime)
    )
    while True:
        yield tick.astimezone(UTC)
        tick = croniter(cron, tick).get_next(datetime)


def due_intervals(
    spec: DagSpec,
    *,
    last: datetime | None,
    now: datetime,
    limit: int = 1000,
    earliest: datetime | None = None,
) -> list[Interval]:
    """Intervals whose runs should exist by ``now`` and start after ``last`` (the logical date
    of the newest scheduled run, None if none) and not before ``earliest``, oldest first.

    Without ``catchup`` only the newest due interval is returned. ``limit`` bounds the list
    (a years-old start_date with catchup); the scheduler asks again for the rest.
    """
    if spec.schedule is None or spec.start_date is None:
        return []
    start = datetime.fromisoformat(spec.start_date)
    if earliest is not None and spec.catchup:
        start = max(start, earliest)
    end_date = datetime.fromisoformat(spec.end_date) if spec.end_date else None
    cron = cron_of(spec.schedule)
    if cron is None:  # @once: one run, at start_date
        if last is None and start <= now:
            return [Interval(start, start)]
        return []
    zone = ZoneInfo(spec.timezone)
    if not spec.catchup and end_date is None:
        return _newest(cron, zone, start, last, now)
    due: list[Interval] = []
    ticks = _ticks(cron, zone, start if last is None else max(start, last))
    previous = next(ticks)
    for tick in ticks:
        interval = Interval(previous, tick)
        previous = tick
        if interval.end > now or (end_date is not None and interval.start > end_date):
            break
        if last is not None and interval.start <= last:
            continue
        due.append(interval)
        if spec.catchup and len(due) >= limit:
            break
        if not spec.catchup and len(due) > 1:
            due.pop(0)  # keep only the newest
    return due


def _newest(
    cron: str, zone: ZoneInfo, start: datetime, last: datetime | None, now: datetime
) -> list[Interval]:
    """Without catchup: only the newest interval that has ended, found backwards from now
    (an hourly DAG started years ago must not cost a walk over every tick since)."""
    # A second past now, so that a tick exactly at now counts as an ended interval.
    back = croniter(cron, (now + timedelta(seconds=1)).astimezone(zone))
    end = back.get_prev(datetime).astimezone(UTC)
    if end > now:
        end = back.get_prev(datetime).astimezone(UTC)
    begin = back.get_prev(datetime).astimezone(UTC)
    if begin < start or (last is not None and begin <= last):
        return []
    return [Interval(begin, end)]


def catchup_floor(spec: DagSpec, *, now: datetime, cap: int) -> datetime | None:
    """The start of the oldest of the newest ``cap`` intervals due by ``now``, when a
    catchup DAG has more than ``cap`` due since its start_date (the older ones are never
    run); None when it has at most ``cap``. Walks back ``cap`` ticks from now, however old
    the start_date."""
    if not spec.catchup or spec.schedule is None or spec.start_date is None:
        return None
    cron = cron_of(spec.schedule)
    if cron is None:
        return None
    start = datetime.fromisoformat(spec.start_date)
    zone = ZoneInfo(spec.timezone)
    end_date = datetime.fromisoformat(spec.end_date) if spec.end_date else None
    limit = now if end_date is None else min(now, end_date)
    back = croniter(cron, (limit + timedelta(seconds=1)).astimezone(zone))
    tick = back.get_prev(datetime).astimezone(UTC)
    if tick > now:
        tick = back.get_prev(datetime).astimezone(UTC)
    # ``tick`` ends the newest due interval; each step back is one more interval's start.
    for _ in range(cap):
        tick = back.get_prev(datetime).astimezone(UTC)
        if tick < start:
            return None
    # One more before it still counts as due only if it is not before start_date.
    older = back.get_prev(datetime).astimezone(UTC)
    return tick if older >= start else None


def count_due(spec: DagSpec, *, now: datetime, cap: int) -> int:
    """How many intervals a catchup DAG pushed now would have due, counting to ``cap + 1``
    at most (so a minutely schedule from years ago costs no more than a small one)."""
    if not spec.catchup:
        return len(due_intervals(spec, last=None, now=now, limit=1))
    return len(due_intervals(spec, last=None, now=now, limit=cap + 1))


def next_tick(spec: DagSpec, now: datetime) -> datetime:
    """The earliest time after ``now`` at which another of the DAG's intervals can end
    (a schedule tick); far in the future for ``@once`` or no schedule: nothing will fall
    due that is not due now."""
    cron = cron_of(spec.schedule) if spec.schedule is not None else None
    if cron is None:
        return datetime.max.replace(tzinfo=UTC)
    local = now.astimezone(ZoneInfo(spec.timezone))
    tick: datetime = croniter(cron, local).get_next(datetime)
    return tick.astimezone(UTC)
