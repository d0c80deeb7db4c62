"""Env keys: which env a lock needs, computed without touching the disk."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Bump when the key's payload changes shape; every existing env then gets a new key.
KEY_FORMAT = 1


def env_key(
    lock_canonical: str,
    interpreter_identity: Mapping[str, Any],
    builder: str,
    builder_format_version: int,
) -> str:
    """The sha256 hex key of an env.

    Same canonical lock, interpreter identity and builder => same key => one env. The builder's
    name is part of the key so that envs made by different backends (uv, virtualenv+pip) never
    collide; the builder's tool version is not, so upgrading uv keeps existing envs valid (bump
    ``builder_format_version`` when a backend's output changes in a way that matters).
    """
    payload = {
        "format": KEY_FORMAT,
        "lock": lock_canonical,
        "interpreter": dict(interpreter_identity),
        "builder": {"name": builder, "format_version": builder_format_version},
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_env_key(name: str) -> bool:
    """Whether ``name`` has the shape of an env key (64 lowercase hex digits)."""
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)
