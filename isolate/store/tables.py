"""The database schema, as SQLAlchemy Core tables.

This is the schema the migrations in ``isolate/migrations/versions`` build; a test compares the
two. Change both together, in a new migration, never by editing an applied one.

Portability rules, because MariaDB/MySQL and PostgreSQL are first-class next to SQLite:

- every constraint and index has an explicit name (``NAMING_CONVENTION``), so a later migration
  can drop or alter it by name on every backend;
- long text and blobs get a LONGTEXT/LONGBLOB variant on MySQL, whose TEXT and BLOB stop at 64 KiB;
- timestamps are naive UTC in the database (microseconds on MySQL via ``DATETIME(6)``) and
  timezone-aware UTC in Python (``UTCDateTime``);
- strings that are indexed stay short enough for InnoDB's 3072-byte key limit in utf8mb4, and
  MySQL tables use a binary collation so ``"a"`` and ``"A"`` stay two DAG ids, as on the others.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DAG_ID_LENGTH = 250
HASH_LENGTH = 71  # "sha256:" + 64 hex digits
ACTOR_LENGTH = 250
BLOB_KINDS = ("bundle", "lock")
OUTCOMES = ("ok", "unchanged", "denied", "error")

# MySQL's TEXT and BLOB hold 64 KiB; specs, bundles and audit details can be larger.
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
LongBlob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
# SQLite only auto-increments an INTEGER PRIMARY KEY; elsewhere ids get 64 bits.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# InnoDB, utf8mb4 and a binary collation whatever the server's defaults are.
_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned as an aware UTC ``datetime``.

    Naive datetimes are refused on the way in: a naive value is ambiguous, and storing local
    time in a database shared by processes in different zones would be silently wrong.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"refusing to store a naive datetime: {value!r}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

dags = sa.Table(
    "dags",
    metadata,
    sa.Column("dag_id", sa.String(DAG_ID_LENGTH), primary_key=True),
    sa.Column("is_paused", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    **_MYSQL_TABLE,
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("hash", sa.String(HASH_LENGTH), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    # NULL: the bytes are in blob_chunks (every blob written since revision 0004).
    sa.Column("data", LongBlob, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("kind IN ('bundle', 'lock')", name="kind"),
    sa.CheckConstraint("size >= 0", name="size"),
    **_MYSQL_TABLE,
)

dag_versions = sa.Table(
    "dag_versions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(DAG_ID_LENGTH), sa.ForeignKey("dags.dag_id"), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("spec_hash", sa.String(HASH_LENGTH), nullable=False),
    sa.Column("spec_json", LongText, nullable=False),
    sa.Column("bundle_hash", sa.String(HASH_LENGTH), sa.ForeignKey("blobs.hash"), nullable=False),
    sa.Column("lock_hash", sa.String(HASH_LENGTH), sa.ForeignKey("blobs.hash"), nullable=False),
    sa.Column("pushed_by", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Column("pushed_at", UTCDateTime(), nullable=False),
    sa.Column("message", sa.Text(), nullable=True),
    # Also the index for "versions of one DAG, in order".
    sa.UniqueConstraint("dag_id", "version"),
    sa.CheckConstraint("version >= 1", name="version"),
    **_MYSQL_TABLE,
)

ENV_BASIS_LENGTH = 64  # a sha256 hex digest, as env keys

# A version's env as derived on one basis (the node's interpreter, builder and key format,
# see isolate/services/environments.py): its env key and its parsed lock, written at push and
# filled on demand for versions pushed before revision 0005. Derived data, outside the
# version's row, so it changes neither the version's hashes nor its spec; one row per basis,
# so a node whose env_python or env_builder changed adds its own instead of trusting another.
dag_version_envs = sa.Table(
    "dag_version_envs",
    metadata,
    sa.Column("dag_id", sa.String(DAG_ID_LENGTH), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("basis", sa.String(ENV_BASIS_LENGTH), primary_key=True),
    sa.Column("env_key", sa.String(64), nullable=False),
    sa.Column("lock_json", LongText, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(["dag_id", "version"], ["dag_versions.dag_id", "dag_versions.version"]),
    **_MYSQL_TABLE,
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.String(DAG_ID_LENGTH), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("details", LongText, nullable=False),
    sa.CheckConstraint("outcome IN ('ok', 'unchanged', 'denied', 'error')", name="outcome"),
    sa.Index(None, "target", "id"),
    **_MYSQL_TABLE,
)

RUN_ID_LENGTH = 250
RUN_STATES = ("queued", "running", "success", "failed")
RUN_TYPES = ("scheduled", "manual")

dag_runs = sa.Table(
    "dag_runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(DAG_ID_LENGTH), sa.ForeignKey("dags.dag_id"), nullable=False),
    sa.Column("run_id", sa.String(RUN_ID_LENGTH), nullable=False),
    # The version the run was created with; a later push never changes it.
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("run_type", sa.String(16), nullable=False),
    sa.Column("logical_date", UTCDateTime(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("conf", LongText, nullable=False),
    sa.Column("created_by", sa.String(ACTOR_LENGTH), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(["dag_id", "version"], ["dag_versions.dag_id", "dag_versions.version"]),
    sa.UniqueConstraint("dag_id", "run_id"),
    sa.CheckConstraint("state IN ('queued', 'running', 'success', 'failed')", name="state"),
    sa.CheckConstraint("run_type IN ('scheduled', 'manual')", name="run_type"),
    # "Active runs" (gc roots, max_active_runs) are found by state.
    sa.Index(None, "state", "dag_id"),
    **_MYSQL_TABLE,
)

TASK_STATES = (
    "none",
    "scheduled",
    "queued",
    "running",
    "success",
    "failed",
    "up_for_retry",
    "upstream_failed",
    "skipped",
)

task_instances = sa.Table(
    "task_instances",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(DAG_ID_LENGTH), nullable=False),
    sa.Column("run_id", sa.String(RUN_ID_LENGTH), nullable=False),
    sa.Column("task_id", sa.String(DAG_ID_LENGTH), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    # Attempts started so far; the current (or last) attempt's number.
    sa.Column("try_number", sa.Integer(), nullable=False),
    sa.Column("next_try_at", UTCDateTime(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    # The attempt's process, to tell after a scheduler crash whether it still runs.
    sa.Column("pid", sa.Integer(), nullable=True),
    sa.Column("pid_started", sa.Float(), nullable=True),
    sa.Column("run_as", sa.String(ACTOR_LENGTH), nullable=True),
    sa.Column("env_key", sa.String(64), nullable=True),
    sa.Column("outcome", sa.Text(), nullable=True),
    sa.Column("xcom", LongText, nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(["dag_id", "run_id"], ["dag_runs.dag_id", "dag_runs.run_id"]),
    sa.UniqueConstraint("dag_id", "run_id", "task_id"),
    sa.CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in TASK_STATES) + ")", name="state"),
    sa.CheckConstraint("try_number >= 0", name="try_number"),
    sa.Index(None, "state"),
    **_MYSQL_TABLE,
)

# A blob's bytes in pieces small enough for every server's packet limit: MariaDB's default
# max_allowed_packet is 16 MiB, and a binary value can double in size once escaped.
BLOB_CHUNK_BYTES = 1024 * 1024

blob_chunks = sa.Table(
    "blob_chunks",
    metadata,
    sa.Column("hash", sa.String(HASH_LENGTH), sa.ForeignKey("blobs.hash"), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("data", LongBlob, nullable=False),
    **_MYSQL_TABLE,
)
