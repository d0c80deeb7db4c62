"""Schedule expressions: five-field cron, ``@daily``-style presets, or none.

Parsing and iteration are croniter's; this module only knows the presets and turns
croniter's errors into one clear sentence.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from croniter import CroniterBadDateError, croniter

# Presets as Airflow documents them. "@once" runs a single time after start_date, so it
# has no cron form; the others are aliases for the cron expression next to them.
PRESETS: dict[str, str | None] = {
    "@once": None,
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# croniter's "R" (random) and "H" (hashed) values: "R" differs in every process that parses
# it, so a version's schedule would not be a function of its canonical JSON.
_RANDOM_OR_HASHED = re.compile(r"(?:^|[\s,])[HhRr](?:\(|/|,|\s|$)")


def cron_of(schedule: str) -> str | None:
    """The cron expression a schedule stands for (``None`` for ``@once``)."""
    if schedule.startswith("@"):
        return PRESETS[schedule]
    return schedule


def schedule_problem(schedule: str) -> str | None:
    """Why ``schedule`` is not a valid schedule, or ``None`` if it is."""
    if schedule.startswith("@"):
        if schedule in PRESETS:
            return None
        return f"unknown preset {schedule!r} (use one of {', '.join(PRESETS)})"
    if len(schedule.split()) != 5:
        return (
            f"invalid cron expression {schedule!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    if _RANDOM_OR_HASHED.search(schedule):
        return f"invalid cron expression {schedule!r}: random (R) and hashed (H) values not allowed"
    try:
        ok = croniter.is_valid(schedule)
    except Exception:  # croniter raises assorted types on odd input
        ok = False
    if not ok:
        return f"invalid cron expression {schedule!r}"
    try:
        croniter(schedule, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:  # "0 0 30 2 *": every field is valid, the day never comes
        return f"cron expression {schedule!r} never fires"
    except Exception:  # as above
        return f"invalid cron expression {schedule!r}"
    return None
