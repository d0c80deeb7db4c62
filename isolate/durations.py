"""Parsing of human-written durations ("90s", "15m", "12h", "7d", "2w", "1d12h")."""

from __future__ import annotations

import re
from datetime import timedelta

from isolate.errors import UsageError

_PART = re.compile(r"([0-9]{1,9})\s*([smhdw])", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """A positive duration from text such as ``7d`` or ``1h30m``; UsageError otherwise."""
    compact = text.replace(" ", "")
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts).lower() != compact.lower():
        raise UsageError(f"invalid duration {text!r}: use a number and s, m, h, d or w, e.g. 7d")
    seconds = sum(int(n) * _UNITS[u.lower()] for n, u in parts)
    if seconds <= 0:
        raise UsageError(f"invalid duration {text!r}: must be longer than zero")
    return timedelta(seconds=seconds)
