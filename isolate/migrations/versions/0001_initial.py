"""Initial schema: dags, blobs, dag_versions, audit_log.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Written by hand to match ``isolate/store/tables.py`` as of this revision. The types are spelled
out here rather than imported, so later changes to tables.py cannot change what this revision
does. Names are wrapped in ``op.f`` because the target metadata has a naming convention and
these are already final.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_LONG_BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_TIMESTAMP = sa.DateTime(timezone=False).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    op.create_table(
        "dags",
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("dag_id", name=op.f("pk_dags")),
        **_MYSQL_TABLE,
    )
    op.create_table(
        "blobs",
        sa.Column("hash", sa.String(71), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", _LONG_BLOB, nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_blobs")),
        sa.CheckConstraint("kind IN ('bundle', 'lock')", name=op.f("ck_blobs_kind")),
        sa.CheckConstraint("size >= 0", name=op.f("ck_blobs_size")),
        **_MYSQL_TABLE,
    )
    op.create_table(
        "dag_versions",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec_hash", sa.String(71), nullable=False),
        sa.Column("spec_json", _LONG_TEXT, nullable=False),
        sa.Column("bundle_hash", sa.String(71), nullable=False),
        sa.Column("lock_hash", sa.String(71), nullable=False),
        sa.Column("pushed_by", sa.String(250), nullable=False),
        sa.Column("pushed_at", _TIMESTAMP, nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dag_versions")),
        sa.ForeignKeyConstraint(
            ["dag_id"], ["dags.dag_id"], name=op.f("fk_dag_versions_dag_id_dags")
        ),
        sa.ForeignKeyConstraint(
            ["bundle_hash"], ["blobs.hash"], name=op.f("fk_dag_versions_bundle_hash_blobs")
        ),
        sa.ForeignKeyConstraint(
            ["lock_hash"], ["blobs.hash"], name=op.f("fk_dag_versions_lock_hash_blobs")
        ),
        sa.UniqueConstraint("dag_id", "version", name=op.f("uq_dag_versions_dag_id_version")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_dag_versions_version")),
        **_MYSQL_TABLE,
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", _TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(250), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(250), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("details", _LONG_TEXT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.CheckConstraint(
            "outcome IN ('ok', 'unchanged', 'denied', 'error')", name=op.f("ck_audit_log_outcome")
        ),
        **_MYSQL_TABLE,
    )
    op.create_index(op.f("ix_audit_log_target_id"), "audit_log", ["target", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_log_target_id"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("dag_versions")
    op.drop_table("blobs")
    op.drop_table("dags")
