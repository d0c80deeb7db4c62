"""Alembic migrations of the isolate store; run them with ``isolate.store.migrate``."""

from __future__ import annotations
