"""Schema migrations, run in-process through Alembic's API.

The Alembic config is built here, pointing at ``isolate/migrations`` inside the installed
package, so ``isolate db upgrade`` needs no alembic.ini and works from a wheel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import URL, Engine

from isolate.errors import StoreError
from isolate.store.engine import WRITE, database_errors, make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    """An Alembic config for isolate's migrations, with no ini file behind it."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The schema revision this isolate's code expects."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "isolate ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision, or None if it was never migrated."""
    with database_errors(engine.url), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (default: the newest), in one write transaction."""
    _run(engine_or_url, "upgrade", revision)


def downgrade(engine_or_url: Engine | str | URL, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` drops every isolate table)."""
    _run(engine_or_url, "downgrade", revision)


def check_at_head(engine: Engine) -> None:
    """Raise ``StoreError`` saying what to run unless the database is at ``head_revision()``."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise StoreError("database is not initialized: run `isolate init` or `isolate db upgrade`")
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    if current not in known:
        raise StoreError(
            f"database schema is at {current}, which this isolate does not know "
            f"(it needs {head}): upgrade isolate"
        )
    raise StoreError(
        f"database schema is at {current}, this isolate needs {head}: run `isolate db upgrade`"
    )


def _run(engine_or_url: Engine | str | URL, direction: str, revision: str) -> None:
    config = alembic_config()
    # A writer transaction: on SQLite the migration holds the write lock from its start. Alembic
    # runs inside it (it begins none of its own when one is open), so on SQLite and PostgreSQL
    # the DDL and the version stamp commit or roll back together.
    with (
        _engine(engine_or_url) as engine,
        database_errors(engine.url),
        engine.connect() as conn,
        conn.execution_options(**WRITE).begin(),
    ):
        config.attributes["connection"] = conn
        try:
            if direction == "upgrade":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
        except CommandError as exc:
            raise StoreError(f"cannot {direction} the database to {revision!r}: {exc}") from exc


@contextmanager
def _engine(engine_or_url: Engine | str | URL) -> Iterator[Engine]:
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    engine = make_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()
