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
    spec: DagSpec, *, last: datetime | None, now: datetime, limit: int = 1000
) -> list[Interval]:
    """Intervals whose runs should exist by ``now`` and start after ``last`` (the logical date
    of the newest scheduled run, None if none), oldest first.

    Without ``catchup`` only the newest due interval is returned. ``limit`` bounds the list
    (a years-old start_date with catchup); the scheduler asks again for the rest.
    """
    if spec.schedule is None or spec.start_date is None:
        return []
    start = datetime.fromisoformat(spec.start_date)
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
