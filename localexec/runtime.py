"""The files a task's interpreter gets from this project: the bootstrap and the SDK dir.

Both are copies (never this package's own files): the task imports nothing of isolate but
the authoring SDK (:data:`isolate.sdk.RUNTIME_FILES`), so ``from isolate import DAG, task``
works inside a DAG's env where isolate is not installed.

Both are compiled here, at install, into unchecked-hash ``.pyc`` files for this interpreter's
cache tag: a task cannot write bytecode into the root-owned runtime, and compiling the
bootstrap and the SDK from source cost every task start several milliseconds. A script's
bytecode is never cached by Python, so a task whose interpreter has the same cache tag runs
the bootstrap's ``.pyc`` itself (``python -I bootstrap.cpython-311.pyc``); any other runs
the source.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import isolate
from isolate.sdk import RUNTIME_FILES

BOOTSTRAP_SOURCE = Path(__file__).with_name("bootstrap.py")
CACHE_TAG: str | None = getattr(sys.implementation, "cache_tag", None)


@dataclass(frozen=True)
class RuntimeFiles:
    bootstrap: Path
    sdk_dir: Path
    bootstrap_compiled: Path | None = None
    """The bootstrap's bytecode for :data:`CACHE_TAG`, if it could be compiled."""

    def bootstrap_for(self, cache_tag: str | None) -> Path:
        """What an interpreter with ``cache_tag`` runs: the compiled bootstrap if it fits."""
        if self.bootstrap_compiled is not None and cache_tag == CACHE_TAG:
            return self.bootstrap_compiled
        return self.bootstrap


def install_runtime(dest: Path) -> RuntimeFiles:
    """``dest/bootstrap.py`` and ``dest/sdk/isolate/...`` with their bytecode, world-readable,
    each file replaced atomically."""
    dest.mkdir(parents=True, exist_ok=True)
    bootstrap = dest / "bootstrap.py"
    _copy(BOOTSTRAP_SOURCE, bootstrap)
    package = dest / "sdk" / "isolate"
    package.mkdir(parents=True, exist_ok=True)
    for name in (dest / "sdk", package):
        os.chmod(name, 0o755)  # noqa: S103 - every mapped user's task must read the SDK
    source_dir = Path(isolate.__file__).parent
    for file_name in RUNTIME_FILES:
        _copy(source_dir / file_name, package / file_name)
        _compile(package / file_name)
    return RuntimeFiles(
        bootstrap=bootstrap, sdk_dir=dest / "sdk", bootstrap_compiled=_compile(bootstrap)
    )


def _compile(source: Path) -> Path | None:
    """Write ``source``'s unchecked-hash ``.pyc`` where imports look for it (atomically), or
    None if this interpreter writes no bytecode (``sys.implementation.cache_tag`` is None)."""
    if CACHE_TAG is None:
        return None
    target = Path(importlib.util.cache_from_source(os.fspath(source)))
    target.parent.mkdir(mode=0o755, exist_ok=True)
    os.chmod(target.parent, 0o755)  # noqa: S103 - as readable as the sources
    py_compile.compile(
        os.fspath(source),
        cfile=os.fspath(target),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    os.chmod(target, 0o644)
    return target


def _copy(source: Path, target: Path) -> None:
    # Write next to the target and rename: a task starting meanwhile sees the old or the new
    # file, never half of one.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
