"""Helpers for test suites that run against every configured database backend.

SQLite always; PostgreSQL and MariaDB/MySQL when ``ISOLATE_TEST_DATABASE_URLS`` lists them
(comma-separated SQLAlchemy URLs). Server databases are shared between test runs, so each test
starts from, and leaves, a database without isolate's tables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import sqlalchemy as sa

from isolate.store.engine import make_engine, parse_url
from isolate.store.tables import metadata

URLS_VARIABLE = "ISOLATE_TEST_DATABASE_URLS"
SKIP_REASON = (
    f"no server databases to test: set {URLS_VARIABLE} to comma-separated SQLAlchemy URLs, e.g. "
    "postgresql+psycopg://postgres@127.0.0.1:5432/test,mysql+pymysql://root@127.0.0.1:3306/test"
)
TEST_TABLE_PREFIX = "isolate_test_"
"""Tables a test creates (e.g. in a test migration) start with this, so cleanup drops them."""


def server_urls(environ: Mapping[str, str] | None = None) -> list[str]:
    """The server database URLs to test against, from ``ISOLATE_TEST_DATABASE_URLS``."""
    env = os.environ if environ is None else environ
    return [url.strip() for url in env.get(URLS_VARIABLE, "").split(",") if url.strip()]


def backend_label(url: str) -> str:
    """A short test id for ``url``: its backend name (``sqlite``, ``postgresql``, ``mysql``)."""
    return parse_url(url).get_backend_name()


def drop_schema(url: str) -> None:
    """Drop isolate's tables, ``alembic_version`` and test tables, whatever revision is there."""
    ours = {*metadata.tables, "alembic_version"}
    engine = make_engine(url)
    try:
        present = sa.MetaData()
        present.reflect(
            engine, only=lambda name, _md: name in ours or name.startswith(TEST_TABLE_PREFIX)
        )
        present.drop_all(engine)
    finally:
        engine.dispose()
