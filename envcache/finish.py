"""The end of an env build, after the backend has installed: share, compile, check, record.

Kept apart from the cache's control flow (:mod:`envcache.cache`), which owns locking, the
temporary directory and publishing: making the env's own directory read-only and renaming it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from envcache import bytecode, process, tree
from envcache import manifest as manifests
from envcache.backends import Builder
from envcache.errors import EnvCacheError
from envcache.interpreter import Interpreter
from envcache.lock import Lock
from envcache.manifest import MANIFEST_NAME, Manifest
from envcache.objects import ObjectStore
from envcache.trees import TreeStore

# Started with -I -S: site is not imported, so no .pth file of an installed wheel runs as the
# cache owner (usually root); it checks the env's interpreter starts and is the expected one.
_SMOKE = "import sys; print('%d.%d.%d' % sys.version_info[:3])"


@dataclass(frozen=True)
class Finisher:
    """Finishes builds for one cache; ``trees`` and ``objects`` are None without sharing."""

    builder: Builder
    trees: TreeStore | None
    objects: ObjectStore | None

    def finish(
        self,
        dest: Path,
        key: str,
        lock: Lock,
        interpreter: Interpreter,
        tools: dict[str, str],
        links: manifests.LinkStats,
        started: float,
    ) -> Manifest:
        """Share trees, compile, check, make read-only and durable, write the manifest.

        ``dest`` itself is left writable: its owner could not move it into ``envs/`` otherwise
        (see ``EnvCache._publish``).
        """
        sharing = self.trees.share(dest, interpreter.cache_tag) if self.trees else None
        # Only trees new to the cache are left to compile: a handful of files when all are known.
        bytecode.compile_env(dest, parallel=sharing is None or bool(sharing.pending))
        if self.trees is not None and sharing is not None:
            self.trees.publish(sharing)
        smoke_check(dest, interpreter)
        tree.make_read_only(dest)
        files = manifests.scan(dest)
        shared = sharing.trees if sharing is not None else {}
        for link in shared:
            del files[link]  # recorded as the tree's digest, checked against its own manifest
        if self.objects is not None:
            links = dataclasses.replace(links, deduplicated=self.objects.dedupe(dest, files))
        recorded = Manifest(
            key=key,
            lock=lock.canonical(interpreter.marker_env),
            interpreter=interpreter.identity(),
            builder=self.builder.name,
            builder_format_version=self.builder.format_version,
            tools=tools,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - started, 3),
            links=links,
            files=files,
            trees=shared,
            shared_size=sum(self.trees.load(d).size for d in shared.values()) if self.trees else 0,
        )
        tree.write_read_only(dest / MANIFEST_NAME, recorded.to_bytes())
        tree.fsync_tree(dest)
        return recorded


def smoke_check(dest: Path, interpreter: Interpreter) -> None:
    expected = ".".join(str(part) for part in interpreter.version_info[:3])
    started = process.run(
        [os.fspath(dest / "bin" / "python"), "-I", "-S", "-c", _SMOKE],
        env={"PATH": os.defpath},
        what="the env's python",
    ).strip()
    if started != expected:
        raise EnvCacheError(
            f"the new env's python is {started}, expected {expected}; "
            f"was {interpreter.path} upgraded during the build? Build again"
        )
