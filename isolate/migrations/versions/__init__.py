"""One module per schema revision, applied in order by Alembic."""

from __future__ import annotations
