"""Read and write transactions for the store, with retries when concurrent writers collide.

On SQLite writers queue on ``BEGIN IMMEDIATE`` and never collide. On the servers two pushers can
both create the same new DAG row or the same blob, or deadlock on the way; the loser's
transaction fails as a whole and is simply run again, from the start.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from isolate.errors import StoreError
from isolate.store.engine import WRITE, database_errors

_T = TypeVar("_T")

WRITE_ATTEMPTS = 6
# "A concurrent transaction won, try again": MySQL deadlock (1213) and lock wait timeout (1205);
# PostgreSQL serialization failure (40001) and deadlock (40P01).
_MYSQL_RETRY_CODES = frozenset({1213, 1205})
_PG_RETRY_STATES = frozenset({"40001", "40P01"})


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads; database failures become ``StoreError``."""
    with database_errors(engine.url), engine.connect() as conn:
        yield conn


def write(engine: Engine, what: str, work: Callable[[Connection], _T]) -> _T:
    """Run ``work`` in one write transaction, from the start again if a concurrent writer won.

    ``what`` completes "cannot ..." in the error raised when every attempt conflicted.
    ``work`` must have no effects outside the transaction: it may run more than once.
    """
    writer = engine.execution_options(**WRITE)
    with database_errors(engine.url):
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with writer.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if not is_conflict(exc):
                    raise
                if attempt == WRITE_ATTEMPTS:
                    raise StoreError(
                        f"cannot {what}: concurrent writers kept conflicting "
                        f"({WRITE_ATTEMPTS} attempts); try again"
                    ) from exc
            # Jitter, so that the losers of one race do not all meet again in the next.
            time.sleep(random.uniform(0, 0.05 * attempt))  # noqa: S311 - not for security
    raise AssertionError("unreachable")


def is_conflict(exc: DBAPIError) -> bool:
    """Whether ``exc`` means another transaction got there first (so a retry can succeed)."""
    if isinstance(exc, IntegrityError):
        return True
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRY_STATES:  # psycopg 3
        return True
    if getattr(orig, "pgcode", None) in _PG_RETRY_STATES:  # psycopg2
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _MYSQL_RETRY_CODES
