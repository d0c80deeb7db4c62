"""Schedule expressions: five-field cron, ``@daily``-style presets, or none.

Parsing and iteration are croniter's; this module only knows the presets and turns
croniter's errors into one clear sentence.
"""

from __future__ import annotations

from croniter import croniter

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
    try:
        ok = croniter.is_valid(schedule)
    except Exception:
        ok = False
    return None if ok else f"invalid cron expression {schedule!r}"
