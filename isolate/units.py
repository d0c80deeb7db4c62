"""Parsing of human-written sizes ("2G", "512M", "64KiB") into bytes."""

from __future__ import annotations

import re

from isolate.errors import UsageError

_SIZE = re.compile(r"^\s*([0-9]+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"2G"``, ``"512MiB"``, ``"64k"`` (powers of 1024).

    Raises :class:`UsageError` (a ``ValueError`` is never leaked) for anything else.
    """
    if isinstance(value, bool):
        raise UsageError(f"invalid size {value!r}: expected bytes or a string like '2G'")
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"invalid size {value}: must not be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        # int() refuses more than 4,300 digits with a ValueError; no real size needs 40.
        if match and len(match.group(1)) > 40:
            raise UsageError(f"invalid size {value[:20]!r}...: too large")
        if match:
            return int(match.group(1)) * _FACTORS[match.group(2).lower()]
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    raise UsageError(f"invalid size {shown}: expected bytes or a string like '2G' or '512M'")


def format_size(n: int) -> str:
    """A short human form of a byte count, for listings."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
