"""When a failed attempt is retried: the scheduler's decision, never the worker's. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from isolate.model import RetryPolicy

# Without an explicit max_retry_delay, exponential backoff stops growing after a day.
DEFAULT_MAX_DELAY = timedelta(days=1)


def retry_delay(policy: RetryPolicy, try_number: int) -> timedelta:
    """The wait after failed attempt ``try_number`` (1-based) before the next one.

    With exponential backoff: ``retry_delay * 2 ** (try_number - 1)``, capped by
    ``max_retry_delay`` (a day if unset). Without it, ``retry_delay`` every time, capped too
    when a cap is set.
    """
    if try_number < 1:
        raise ValueError("try_number starts at 1")
    base = timedelta(seconds=policy.retry_delay)
    cap = (
        timedelta(seconds=policy.max_retry_delay)
        if policy.max_retry_delay is not None
        else (DEFAULT_MAX_DELAY if policy.retry_exponential_backoff else None)
    )
    delay = base
    if policy.retry_exponential_backoff:
        # Doubling stops at the cap: 2 ** try_number is never computed for huge tries.
        for _ in range(try_number - 1):
            if cap is not None and delay >= cap:
                break
            delay *= 2
    return min(delay, cap) if cap is not None else delay


def next_attempt(policy: RetryPolicy, try_number: int, failed_at: datetime) -> datetime | None:
    """When attempt ``try_number + 1`` may start, or None when no retry is left."""
    if try_number > policy.retries:
        return None
    return failed_at + retry_delay(policy, try_number)
