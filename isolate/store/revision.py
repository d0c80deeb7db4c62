"""The schema revision this code expects, importable without SQLAlchemy."""

from __future__ import annotations

HEAD_REVISION = "0005"  # isolate/migrations/versions: the newest one's ``revision``
