"""Task instances: one row per task of a run, its state and current attempt.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
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
_STATES = (
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


def upgrade() -> None:
    op.create_table(
        "task_instances",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("next_try_at", _TIMESTAMP, nullable=True),
        sa.Column("started_at", _TIMESTAMP, nullable=True),
        sa.Column("ended_at", _TIMESTAMP, nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pid_started", sa.Float(), nullable=True),
        sa.Column("run_as", sa.String(250), nullable=True),
        sa.Column("env_key", sa.String(64), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("xcom", _LONG_TEXT, nullable=True),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_instances")),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_runs.dag_id", "dag_runs.run_id"],
            name=op.f("fk_task_instances_dag_id_dag_runs"),
        ),
        sa.UniqueConstraint(
            "dag_id", "run_id", "task_id", name=op.f("uq_task_instances_dag_id_run_id_task_id")
        ),
        sa.CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in _STATES) + ")",
            name=op.f("ck_task_instances_state"),
        ),
        sa.CheckConstraint("try_number >= 0", name=op.f("ck_task_instances_try_number")),
        **_MYSQL_TABLE,
    )
    op.create_index(op.f("ix_task_instances_state"), "task_instances", ["state"])


def downgrade() -> None:
    op.drop_index(op.f("ix_task_instances_state"), table_name="task_instances")
    op.drop_table("task_instances")
