"""The files a task's interpreter gets from this project: the bootstrap and the SDK dir.

Both are copies (never this package's own files): the task imports nothing of isolate but
the authoring SDK (:data:`isolate.sdk.RUNTIME_FILES`), so ``from isolate import DAG, task``
works inside a DAG's env where isolate is not installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import isolate
from isolate.sdk import RUNTIME_FILES

BOOTSTRAP_SOURCE = Path(__file__).with_name("bootstrap.py")


@dataclass(frozen=True)
class RuntimeFiles:
    bootstrap: Path
    sdk_dir: Path


def install_runtime(dest: Path) -> RuntimeFiles:
    """``dest/bootstrap.py`` and ``dest/sdk/isolate/...``, world-readable, replaced atomically."""
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
    return RuntimeFiles(bootstrap=bootstrap, sdk_dir=dest / "sdk")


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
