"""DAG runs, each pinned to the version it was created with.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_TIMESTAMP = sa.DateTime(timezone=False).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    op.create_table(
        "dag_runs",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("run_type", sa.String(16), nullable=False),
        sa.Column("logical_date", _TIMESTAMP, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("conf", _LONG_TEXT, nullable=False),
        sa.Column("created_by", sa.String(250), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("started_at", _TIMESTAMP, nullable=True),
        sa.Column("ended_at", _TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dag_runs")),
        sa.ForeignKeyConstraint(["dag_id"], ["dags.dag_id"], name=op.f("fk_dag_runs_dag_id_dags")),
        sa.ForeignKeyConstraint(
            ["dag_id", "version"],
            ["dag_versions.dag_id", "dag_versions.version"],
            name=op.f("fk_dag_runs_dag_id_dag_versions"),
        ),
        sa.UniqueConstraint("dag_id", "run_id", name=op.f("uq_dag_runs_dag_id_run_id")),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'success', 'failed')", name=op.f("ck_dag_runs_state")
        ),
        sa.CheckConstraint(
            "run_type IN ('scheduled', 'manual')", name=op.f("ck_dag_runs_run_type")
        ),
        **_MYSQL_TABLE,
    )
    op.create_index(op.f("ix_dag_runs_state_dag_id"), "dag_runs", ["state", "dag_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_dag_runs_state_dag_id"), table_name="dag_runs")
    op.drop_table("dag_runs")
