"""Blobs stored in 1 MiB chunks, so a bundle at its size cap fits every server's packet limit.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Existing blobs keep their bytes in ``blobs.data``; new ones leave it NULL and use
``blob_chunks``. A downgrade moves chunked blobs back into ``blobs.data``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_LONG_BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.alter_column("data", existing_type=_LONG_BLOB, nullable=True)
    op.create_table(
        "blob_chunks",
        sa.Column("hash", sa.String(71), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", _LONG_BLOB, nullable=False),
        sa.PrimaryKeyConstraint("hash", "seq", name=op.f("pk_blob_chunks")),
        sa.ForeignKeyConstraint(["hash"], ["blobs.hash"], name=op.f("fk_blob_chunks_hash_blobs")),
        **_MYSQL_TABLE,
    )


def downgrade() -> None:
    conn = op.get_bind()
    chunks = sa.table("blob_chunks", sa.column("hash"), sa.column("seq"), sa.column("data"))
    blobs = sa.table("blobs", sa.column("hash"), sa.column("data"))
    hashes = [row.hash for row in conn.execute(sa.select(chunks.c.hash).distinct())]
    for digest in hashes:
        parts = conn.execute(
            sa.select(chunks.c.data).where(chunks.c.hash == digest).order_by(chunks.c.seq)
        )
        data = b"".join(bytes(part) for (part,) in parts)
        conn.execute(blobs.update().where(blobs.c.hash == digest).values(data=data))
    op.drop_table("blob_chunks")
    with op.batch_alter_table("blobs") as batch:
        batch.alter_column("data", existing_type=_LONG_BLOB, nullable=False)
