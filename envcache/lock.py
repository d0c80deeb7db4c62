"""The lock model: pinned, hashed entries and the canonical form env keys are computed over.

Comments, order and formatting of a lockfile never reach this model, so they never change a
key. Parsing and validation live in lockfile.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.markers import Marker

from envcache.errors import LockfileError

MarkerEnv = Mapping[str, str]


@dataclass(frozen=True)
class LockEntry:
    """One pinned package: canonical name, exact version (or direct ``url``), hashes, marker."""

    name: str
    version: str
    hashes: frozenset[str]
    marker: str | None = None
    url: str | None = None
    origin: str = field(default="", compare=False)
    """Where the entry was declared (``requirements.txt:12``), for messages."""

    def applies(self, marker_env: MarkerEnv) -> bool:
        """Whether the entry's marker holds in ``marker_env`` (no marker: always)."""
        return self.marker is None or Marker(self.marker).evaluate(dict(marker_env))

    def requirement(self, *, with_marker: bool = True) -> str:
        """The PEP 508 requirement string: ``name==version`` or ``name @ url``, and marker."""
        text = f"{self.name} @ {self.url}" if self.url else f"{self.name}=={self.version}"
        if with_marker and self.marker:
            text += f" ; {self.marker}"
        return text


@dataclass(frozen=True)
class Lock:
    """A validated lockfile: the entries, and the file they came from (for messages)."""

    entries: tuple[LockEntry, ...]
    source: str = "requirements.txt"

    def applicable(self, marker_env: MarkerEnv) -> tuple[LockEntry, ...]:
        """The entries whose markers hold in ``marker_env``, sorted by name.

        Raises LockfileError if two entries for the same package both apply.
        """
        chosen: dict[str, LockEntry] = {}
        for entry in self.entries:
            if not entry.applies(marker_env):
                continue
            if entry.name in chosen:
                raise LockfileError(
                    [
                        f"{entry.origin}: package {entry.name!r} is locked twice for this "
                        f"interpreter (also at {chosen[entry.name].origin}); keep one"
                    ]
                )
            chosen[entry.name] = entry
        return tuple(chosen[name] for name in sorted(chosen))

    def canonical(self, marker_env: MarkerEnv) -> str:
        """Canonical JSON of the applicable entries: sorted names, versions and hash sets."""
        items: list[dict[str, Any]] = []
        for entry in self.applicable(marker_env):
            item: dict[str, Any] = {
                "name": entry.name,
                "version": entry.version,
                "hashes": sorted(entry.hashes),
            }
            if entry.url:
                item["url"] = entry.url
            items.append(item)
        return json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def direct_references(self) -> tuple[LockEntry, ...]:
        """Entries installed from a URL, VCS or path rather than by name and version."""
        return tuple(entry for entry in self.entries if entry.url)

    def to_requirements(self, marker_env: MarkerEnv | None = None) -> str:
        """Render as a hashed requirements.txt.

        With ``marker_env``, only the applicable entries, without their (already evaluated)
        markers: exactly what a builder installs. Without it, every entry with its marker.
        """
        if marker_env is None:
            entries = sorted(self.entries, key=lambda e: (e.name, e.version, e.marker or ""))
        else:
            entries = list(self.applicable(marker_env))
        blocks = []
        for entry in entries:
            lines = [entry.requirement(with_marker=marker_env is None)]
            lines += [f"--hash={digest}" for digest in sorted(entry.hashes)]
            blocks.append(" \\\n    ".join(lines))
        return "".join(f"{block}\n" for block in blocks)
