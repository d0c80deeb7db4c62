"""Alembic migrations against real databases: SQLite files, plus servers when configured."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from isolate.errors import StoreError
from isolate.store import NewVersion, Store, VersionEnvRecord, content_hash, migrate, tables
from isolate.store.engine import make_engine
from isolate.store.tables import metadata
from tests.databases import (
    TEST_TABLE_PREFIX,
)

ISOLATE_TABLES = set(metadata.tables)


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    return empty_db_url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def next_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A copy of the migrations with one more revision, as the next isolate release would ship."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.head_revision()
    (scripts / "versions" / "9999_next.py").write_text(
        f'''"""A later revision, for tests."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("{TEST_TABLE_PREFIX}next", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("{TEST_TABLE_PREFIX}next")
'''
    )
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)
    return "9999"


def _schema_diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, tables.metadata))


def test_upgrade_creates_every_table(engine: sa.Engine) -> None:
    assert migrate.current_revision(engine) is None

    migrate.upgrade(engine)

    assert ISOLATE_TABLES | {"alembic_version"} <= set(sa.inspect(engine).get_table_names())
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_migrated_schema_matches_tables_py(engine: sa.Engine) -> None:
    migrate.upgrade(engine)

    assert _schema_diff(engine) == []


def test_constraint_names_follow_the_naming_convention(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    inspector = sa.inspect(engine)
    for table in tables.metadata.sorted_tables:
        expected_fks = {fk.name for fk in table.foreign_key_constraints}
        expected_uqs = {
            c.name for c in table.constraints if isinstance(c, sa.UniqueConstraint) and c.name
        }
        expected_ixs = {ix.name for ix in table.indexes}
        assert {fk["name"] for fk in inspector.get_foreign_keys(table.name)} == expected_fks
        assert {uq["name"] for uq in inspector.get_unique_constraints(table.name)} == expected_uqs
        found_ixs = {ix["name"] for ix in inspector.get_indexes(table.name)}
        # MySQL gives every foreign key an index named after it, and lists unique constraints
        # as indexes too.
        assert expected_ixs <= found_ixs <= expected_ixs | expected_fks | expected_uqs
        if engine.dialect.name != "mysql":  # MySQL calls every primary key PRIMARY
            assert inspector.get_pk_constraint(table.name)["name"] == table.primary_key.name


def test_upgrade_downgrade_upgrade_round_trip(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.downgrade(db_url, "base")

    engine = make_engine(db_url)
    try:
        assert not ISOLATE_TABLES & set(sa.inspect(engine).get_table_names())
        assert migrate.current_revision(engine) is None

        migrate.upgrade(db_url)

        assert migrate.current_revision(engine) == migrate.head_revision()
        assert _schema_diff(engine) == []
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(engine: sa.Engine) -> None:
    migrate.upgrade(engine)
    migrate.upgrade(engine)

    assert migrate.current_revision(engine) == migrate.head_revision()


def test_check_at_head_refuses_an_empty_database(engine: sa.Engine) -> None:
    with pytest.raises(StoreError, match=r"not initialized: run `isolate init` or `isolate db"):
        migrate.check_at_head(engine)


def test_store_open_checks_the_schema(db_url: str) -> None:
    with pytest.raises(StoreError, match="not initialized"):
        Store.open(db_url)
    with Store.open(db_url, check_schema=False):
        pass
    migrate.upgrade(db_url)
    with Store.open(db_url) as store:
        assert store.list_dags() == []


def test_check_at_head_passes_at_head(engine: sa.Engine) -> None:
    migrate.upgrade(engine)

    migrate.check_at_head(engine)


def test_check_at_head_refuses_an_outdated_database(
    engine: sa.Engine, next_migrations: str
) -> None:
    old_head = "0001"
    migrate.upgrade(engine, old_head)

    with pytest.raises(StoreError) as err:
        migrate.check_at_head(engine)
    assert str(err.value) == (
        f"database schema is at {old_head}, this isolate needs {next_migrations}: "
        "run `isolate db upgrade`"
    )

    migrate.upgrade(engine)
    migrate.check_at_head(engine)
    assert f"{TEST_TABLE_PREFIX}next" in sa.inspect(engine).get_table_names()


def test_check_at_head_refuses_a_database_newer_than_this_isolate(
    engine: sa.Engine, next_migrations: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate.upgrade(engine)  # to the copy's head
    monkeypatch.undo()  # back to this isolate's migrations

    with pytest.raises(StoreError, match=r"schema is at 9999, which this isolate does not know"):
        migrate.check_at_head(engine)


def test_unknown_revision_is_a_store_error(engine: sa.Engine) -> None:
    with pytest.raises(StoreError, match=r"cannot upgrade the database to 'nope'"):
        migrate.upgrade(engine, "nope")


def test_migrations_ship_inside_the_package() -> None:
    package_dir = Path(migrate.__file__).resolve().parent.parent
    assert package_dir / "migrations" == migrate.MIGRATIONS_DIR
    assert (migrate.MIGRATIONS_DIR / "env.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "script.py.mako").is_file()
    assert (migrate.MIGRATIONS_DIR / "versions" / "__init__.py").is_file()


def test_chunked_blobs_survive_a_downgrade_and_upgrade(db_url: str) -> None:
    migrate.upgrade(db_url)
    data = os.urandom(3 * 1024 * 1024 + 17)
    with Store.open(db_url) as store:
        digest = store.put_blob("bundle", data)
    migrate.downgrade(db_url, "0003")
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT data FROM blobs")).scalar_one()
        assert bytes(stored) == data
    finally:
        engine.dispose()
    migrate.upgrade(db_url)
    with Store.open(db_url) as store:
        assert store.get_blob(digest) == data  # kept in blobs.data, read as before


def test_versions_stored_at_0004_have_no_envs_until_one_is_saved(db_url: str) -> None:
    migrate.upgrade(db_url, "0004")
    spec, bundle, lock = '{"dag_id": "etl"}', b"bundle", b"lock"
    new = NewVersion(
        dag_id="etl",
        spec_hash=content_hash(spec.encode()),
        spec_json=spec,
        bundle_hash=content_hash(bundle),
        bundle=bundle,
        lock_hash=content_hash(lock),
        lock=lock,
    )
    with Store.open(db_url, check_schema=False) as store:  # the versions of an older isolate
        before = store.add_version(new, pushed_by="alice", message=None).version

    migrate.upgrade(db_url)

    env = VersionEnvRecord(basis="b" * 64, env_key="e" * 64, lock_json="{}")
    with Store.open(db_url) as store:
        assert store.get_version("etl", 1) == before
        assert store.version_envs.get("etl", 1, env.basis) is None
        assert store.version_envs.save([("etl", 1, env)]) == 1
        assert store.version_envs.get("etl", 1, env.basis) == env
    migrate.downgrade(db_url, "0004")
    engine = make_engine(db_url)
    try:
        assert "dag_version_envs" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    with Store.open(db_url, check_schema=False) as store:
        assert store.get_version("etl", 1) == before  # derived data gone, versions kept
    migrate.upgrade(db_url)
    with Store.open(db_url) as store:
        assert store.version_envs.keys(env.basis) == {}
