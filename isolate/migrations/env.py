"""Alembic environment for the isolate store.

``isolate.store.migrate`` builds the Alembic config in code and passes an open connection in
``config.attributes["connection"]``; with only ``sqlalchemy.url`` set (e.g. the ``alembic`` command
line during development) an engine is made here, with the same SQLite setup as the store's.
Logging is left alone: the application configures it, not the migrations.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from isolate.store.engine import WRITE, make_engine
from isolate.store.tables import metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_offline() -> None:
    """Emit the SQL as text, for an admin who wants to review or apply it by hand."""
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the migrations on the given connection, or on a new engine for ``sqlalchemy.url``."""
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("isolate migrations need a connection or sqlalchemy.url")
    engine = make_engine(url).execution_options(**WRITE)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
