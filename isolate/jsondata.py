"""JSON from tenants, checked where it enters: finite numbers only, bounded nesting.

Task results (XComs) and push requests are hostile. Python's ``json`` accepts ``NaN`` and
``Infinity`` and turns ``1e999`` into ``inf``, none of which any later ``json.dumps(...,
allow_nan=False)`` (a warm start's context, the store) can write back; and it parses
nesting far deeper than the recursive code that later walks or serializes the value can
handle in another thread. :func:`loads` refuses both up front, so a value that got in can
always be written out again. Stdlib-only.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64


class JsonDataError(ValueError):
    """The text is not JSON data this project accepts; ``str()`` says why, in one line."""


def _reject_constant(name: str) -> Any:
    raise JsonDataError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonDataError(f"number {text[:40]} is out of range")
    return value


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` as JSON with finite numbers and at most ``max_depth`` levels of arrays
    and objects; raises :class:`JsonDataError` otherwise."""
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except JsonDataError:
        raise
    except RecursionError:
        raise JsonDataError(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limits
        raise JsonDataError(" ".join(str(exc).split())[:200]) from None
    check_depth(value, max_depth=max_depth)
    return value


def check_depth(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JsonDataError` if ``value`` nests lists and dicts deeper than
    ``max_depth``. Iterative: a hostile value cannot exhaust the stack here."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise JsonDataError(f"nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)
