"""Each version's env key and parsed lock, stored per basis, so a launch parses no lock.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Derived data beside ``dag_versions``, which is left as it is: the versions already stored
get no rows here, and each node computes and stores theirs the first time it needs them.
A downgrade drops the table; nothing is lost that cannot be computed again.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_TIMESTAMP = sa.DateTime(timezone=False).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    op.create_table(
        "dag_version_envs",
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("basis", sa.String(64), nullable=False),
        sa.Column("env_key", sa.String(64), nullable=False),
        sa.Column("lock_json", _LONG_TEXT, nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("dag_id", "version", "basis", name=op.f("pk_dag_version_envs")),
        sa.ForeignKeyConstraint(
            ["dag_id", "version"],
            ["dag_versions.dag_id", "dag_versions.version"],
            name=op.f("fk_dag_version_envs_dag_id_dag_versions"),
        ),
        **_MYSQL_TABLE,
    )


def downgrade() -> None:
    op.drop_table("dag_version_envs")
