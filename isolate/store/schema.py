"""Whether a database's schema is the one this isolate's code expects, without Alembic.

Opening the store checks the schema's revision on every command; Alembic itself (its
script directory, its migration context) loads only to migrate, or to say why a database is
not at :data:`HEAD_REVISION` (:mod:`isolate.store.migrate`). A test keeps the constant equal
to the newest migration's revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from isolate.store.engine import database_errors
from isolate.store.revision import HEAD_REVISION

_VERSION_TABLE = "alembic_version"  # where Alembic records the schema's revision


def stored_revision(engine: Engine) -> str | None:
    """The revision the database records, or None if it has none (never migrated)."""
    with database_errors(engine.url), engine.connect() as conn:
        if not sa.inspect(conn).has_table(_VERSION_TABLE):
            return None
        table = sa.table(_VERSION_TABLE, sa.column("version_num"))
        revisions = [row[0] for row in conn.execute(sa.select(table.c.version_num))]
    return revisions[0] if len(revisions) == 1 else None


def check_at_head(engine: Engine) -> None:
    """Raise ``StoreError`` saying what to run unless the database is at the head revision."""
    if stored_revision(engine) == HEAD_REVISION:
        return
    from isolate.store import migrate  # the slow path: Alembic says what is wrong

    migrate.check_at_head(engine)
