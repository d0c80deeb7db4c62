"""Where attempts live on disk: extracted bundles, per-try work dirs and logs, runtime files.

<home>/bundles/<hex>/                 one extracted bundle per hash, read-only (0755/0444)
<home>/work/<dag>/<run>/<task>/<try>/ a fresh directory per attempt (0700)
<home>/logs/<dag>/<run>/<task>/<try>.log
<home>/runtime/                       bootstrap.py and the SDK files tasks import
"""

from __future__ import annotations

import compileall
import os
import pwd
import py_compile
import secrets
from pathlib import Path

from envcache import tree
from isolate.bundles import extract_bundle
from isolate.config import Config
from isolate.store import Store
from isolate.tenancy import Tenant
from localexec.runtime import RuntimeFiles, install_runtime


def _segment(text: str) -> str:
    """A path segment from an id (ids never hold "/"; run ids may hold ":" and "+")."""
    if not text or text in (".", "..") or "/" in text or "\x00" in text:
        raise ValueError(f"{text!r} cannot name a directory")
    return text


class Workspace:
    def __init__(self, config: Config) -> None:
        self.home = config.home
        self.bundles = self.home / "bundles"
        self.work = self.home / "work"
        self.logs = config.logs_dir
        for path, mode in ((self.bundles, 0o755), (self.work, 0o711), (self.logs, 0o711)):
            path.mkdir(mode=mode, exist_ok=True)
        self.runtime_dir = self.home / "runtime"
        self.runtime: RuntimeFiles = install_runtime(self.runtime_dir)

    def bundle_dir(self, store: Store, bundle_hash: str, tenant: Tenant | None = None) -> Path:
        """The version's bundle, extracted once and shared read-only by its attempts.

        A tenant's bundles live under ``bundles/tenants/<name>/`` (0750, group: the tenant's
        run-as user's group): they are its code, readable by its tasks and no other tenant's.
        """
        parent = self.bundles if tenant is None else self._tenant_dir(tenant)
        final = parent / bundle_hash.removeprefix("sha256:")
        if final.is_dir():
            return final
        staging = parent / f".{final.name}.{secrets.token_hex(4)}"
        try:
            extract_bundle(store.get_blob(bundle_hash), staging, expected_hash=bundle_hash)
            compile_bundle(staging, final)
            tree.make_read_only(staging)
            os.chmod(staging, tree.READ_ONLY_DIR)
            try:
                os.rename(staging, final)
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            if staging.exists():
                tree.remove_tree(staging)  # another scheduler thread or process won the race
        return final

    def _tenant_dir(self, tenant: Tenant) -> Path:
        root = self.bundles / "tenants"
        root.mkdir(mode=0o755, exist_ok=True)
        path = root / _segment(tenant.name)
        path.mkdir(mode=0o750, exist_ok=True)
        # Re-applied every time: an admin may have mapped the tenant to another user.
        os.chown(path, 0, pwd.getpwnam(tenant.run_as).pw_gid, follow_symlinks=False)
        os.chmod(path, 0o750)  # noqa: S103 - group: the tenant itself
        return path

    def attempt_paths(
        self, dag_id: str, run_id: str, task_id: str, label: str
    ) -> tuple[Path, Path]:
        """(a fresh work dir, the log path) of a try (``label`` "3") or callback ("3.on_retry")."""
        parts = (_segment(dag_id), _segment(run_id), _segment(task_id))
        work = self.work.joinpath(*parts, _segment(label))
        _traversable(self.work, parts)
        if work.exists():
            tree.remove_tree(work)  # left by a try that never started
        work.mkdir(mode=0o700)
        log_dir = self.logs.joinpath(*parts)
        _traversable(self.logs, parts)
        return work, log_dir / f"{label}.log"

    @staticmethod
    def log_file(config: Config, dag_id: str, run_id: str, task_id: str, try_number: int) -> Path:
        """Where a try's log is, without preparing anything (for readers)."""
        parts = (_segment(dag_id), _segment(run_id), _segment(task_id))
        return config.logs_dir.joinpath(*parts, f"{try_number}.log")


def _traversable(root: Path, parts: tuple[str, ...]) -> None:
    """Make ``root/parts...``, each directory 0711 whatever the umask: tenants pass through
    to their own work dirs and logs, and list nothing (not another DAG's run or task ids).
    ``mkdir(parents=True)`` would give the intermediate ones the umask's mode (0755)."""
    path = root
    for part in parts:
        path = path / part
        try:
            path.mkdir(mode=0o711)
        except FileExistsError:
            continue
        os.chmod(path, 0o711)  # noqa: S103 - traverse, not list


def compile_bundle(directory: Path, final: Path) -> None:
    """Write the unchecked-hash bytecode of every module of the bundle at ``directory``, as
    if it were at ``final``, for this interpreter's cache tag.

    Tasks cannot write into the read-only bundle, so without this every task would compile
    its DAG's modules from source on each start. Compiling runs none of the author's code;
    a module that does not compile is left alone (its task reports the SyntaxError). An env
    of another Python version just ignores these files.
    """
    compileall.compile_dir(
        directory,
        ddir=os.fspath(final),
        quiet=2,
        workers=1,
        force=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
