"""Whether two dag_id glob patterns can match the same dag_id (so two tenants would claim it).

Patterns are ``fnmatch.fnmatchcase`` globs: ``*`` (any run), ``?`` (one character), ``[...]``
(a class, ``[!...]`` negated) and literal characters. Each pattern is a tiny automaton: a
sequence of tokens, a ``*`` token looping on any character. Two patterns overlap iff the
product automaton reaches the end of both, which a breadth-first search over position pairs
``(i, j)`` decides in O(len(a) * len(b)) and yields a short common string as the witness.

The search is exact over dag_id characters (``[A-Za-z0-9_.-]``): a class is reduced to the
dag_id characters ``fnmatchcase`` itself says it matches, so fnmatch's subtle class syntax
(ranges, ``!``, a leading ``]``, empty ranges, an unclosed ``[``) is never re-implemented.
It ignores only the dag_id length limit and the ban on ``.``/``..``, which can only make it
report an overlap that no valid dag_id realises: sound (never misses one), slightly strict.
"""

from __future__ import annotations

import string
from collections import deque
from collections.abc import Iterator
from fnmatch import fnmatchcase
from functools import cache

# The characters of a dag_id, per isolate.validate.ID_RULE (a test checks they agree).
DAG_ID_ALPHABET = frozenset(string.ascii_letters + string.digits + "_.-")
# Witness characters are picked in this order, so examples read like real dag ids.
_PREFERRED = string.ascii_lowercase + string.digits + string.ascii_uppercase + "_.-"

# A token is the set of characters one position may hold, or STAR for a ``*`` run.
Token = frozenset[str] | None
STAR: Token = None


def tokens(pattern: str) -> tuple[Token, ...]:
    """``pattern`` split the way ``fnmatch.translate`` reads it (consecutive ``*`` merged)."""
    out: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if not out or out[-1] is not STAR:
                out.append(STAR)
            i += 1
        elif char == "?":
            out.append(DAG_ID_ALPHABET)
            i += 1
        elif char == "[":
            # The bracket scan of CPython's fnmatch.translate: "!" and a first "]" belong
            # to the class; without a closing "]" the "[" is a literal character.
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(_literal("["))
                i += 1
            else:
                out.append(_class(pattern[i : j + 1]))
                i = j + 1
        else:
            out.append(_literal(char))
            i += 1
    return tuple(out)


def _literal(char: str) -> frozenset[str]:
    return frozenset({char}) & DAG_ID_ALPHABET


@cache
def _class(text: str) -> frozenset[str]:
    # fnmatch decides membership itself: over 65 characters asking it is exact and cheap.
    return frozenset(c for c in DAG_ID_ALPHABET if fnmatchcase(c, text))


def _pick(chars: frozenset[str]) -> str:
    return next(c for c in _PREFERRED if c in chars)


def _moves(
    p: tuple[Token, ...], q: tuple[Token, ...], i: int, j: int
) -> Iterator[tuple[tuple[int, int], str]]:
    """Successors of state (i, j) with the character consumed ("" for a star matching nothing)."""
    x = p[i] if i < len(p) else frozenset()
    y = q[j] if j < len(q) else frozenset()
    at_end_p, at_end_q = i == len(p), j == len(q)
    if not at_end_p and x is STAR:
        yield (i + 1, j), ""
    if not at_end_q and y is STAR:
        yield (i, j + 1), ""
    if x is STAR and not at_end_p and y:
        yield (i, j + 1), _pick(y)  # the star absorbs the character q's token needs
    if y is STAR and not at_end_q and x:
        yield (i + 1, j), _pick(x)
    if x and y:
        common = x & y
        if common:
            yield (i + 1, j + 1), _pick(common)


def overlap_witness(a: str, b: str) -> str | None:
    """A short string of dag_id characters matched by both patterns, or None if none is."""
    p, q = tokens(a), tokens(b)
    start, goal = (0, 0), (len(p), len(q))
    came_from: dict[tuple[int, int], tuple[tuple[int, int], str]] = {start: (start, "")}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if state == goal:
            chars = []
            while state != start:
                state, char = came_from[state]
                chars.append(char)
            return "".join(reversed(chars))
        for successor, char in _moves(p, q, *state):
            if successor not in came_from:
                came_from[successor] = (state, char)
                queue.append(successor)
    return None


def overlaps(a: str, b: str) -> bool:
    """Whether some string of dag_id characters matches both patterns."""
    return overlap_witness(a, b) is not None


def matches_some_dag_id(pattern: str) -> bool:
    """Whether ``pattern`` can match anything made of dag_id characters (else it is a typo)."""
    return overlaps(pattern, "*")
