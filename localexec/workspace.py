"""Where attempts live on disk: extracted bundles, per-try work dirs and logs, runtime files.

<home>/bundles/<hex>/                 one extracted bundle per hash, read-only (0755/0444)
<home>/work/<dag>/<run>/<task>/<try>/ a fresh directory per attempt (0700)
<home>/logs/<dag>/<run>/<task>/<try>.log
<home>/runtime/                       bootstrap.py and the SDK files tasks import

A bundle is prepared (extracted, its bytecode compiled by :mod:`localexec.compiling`, made
read-only, renamed into place) by background worker threads: the scheduler's loop asks with
:meth:`Workspace.request_bundle`, which never blocks, and gets None until it is ready.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from envcache import tree
from isolate.bundles import extract_bundle
from isolate.config import Config
from isolate.errors import IsolateError, StoreError
from isolate.store import Store
from isolate.tenancy import Tenant
from localexec.compiling import CompileLimits, compile_bytecode, compile_user
from localexec.runtime import RuntimeFiles, install_runtime

log = logging.getLogger("isolate.workspace")

PREPARE_WORKERS = 2  # bundles prepared at once; at most one per tenant
RETRY_FAILED_AFTER = 30.0  # seconds a failed preparation is reported before it is retried


class BundlePreparationError(IsolateError):
    """A version's code bundle cannot be prepared (its blob is missing or corrupt, the disk
    is full, its tenant's user is gone): its attempts cannot start."""


def _segment(text: str) -> str:
    """A path segment from an id (ids never hold "/"; run ids may hold ":" and "+")."""
    if not text or text in (".", "..") or "/" in text or "\x00" in text:
        raise ValueError(f"{text!r} cannot name a directory")
    return text


class Workspace:
    def __init__(
        self,
        config: Config,
        *,
        compile_limits: CompileLimits | None = None,
        workers: int = PREPARE_WORKERS,
        retry_failed_after: float = RETRY_FAILED_AFTER,
    ) -> None:
        self.home = config.home
        self.bundles = self.home / "bundles"
        self.work = self.home / "work"
        self.logs = config.logs_dir
        for path, mode in ((self.bundles, 0o755), (self.work, 0o711), (self.logs, 0o711)):
            path.mkdir(mode=mode, exist_ok=True)
        self.runtime_dir = self.home / "runtime"
        self.runtime: RuntimeFiles = install_runtime(self.runtime_dir)
        self.compile_limits = compile_limits or CompileLimits()
        self.retry_failed_after = retry_failed_after
        self._lock = threading.Lock()  # guards _preparations
        self._preparations: dict[Path, _Preparation] = {}
        self._queue = _FairQueue(workers)

    def request_bundle(
        self, store: Store, bundle_hash: str, tenant: Tenant | None = None, *, python: Path
    ) -> Path | None:
        """The version's bundle if it is ready, else None: it is being prepared in the
        background (asked again, it is not prepared twice). Never blocks on the preparation.

        A tenant's bundles live under ``bundles/tenants/<name>/`` (0750, group: the tenant's
        run-as user's group): they are its code, readable by its tasks and no other tenant's.
        Its bytecode is that of ``python`` (the env's interpreter), compiled as the tenant's
        run-as user; the first env to ask decides, the bundle is shared and read-only after.

        :class:`BundlePreparationError` (or :class:`StoreError` once, for a database failure)
        if its preparation failed: reported for ``retry_failed_after`` seconds, then retried.
        """
        found = self._ask(store, bundle_hash, tenant, python)
        return found if isinstance(found, Path) else None

    def wait_bundle(
        self,
        store: Store,
        bundle_hash: str,
        tenant: Tenant | None = None,
        *,
        python: Path,
        timeout: float | None = None,
    ) -> Path:
        """:meth:`request_bundle`, waiting (at most ``timeout`` seconds) until it is ready;
        :class:`BundlePreparationError` if it is not ready by then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = self._ask(store, bundle_hash, tenant, python)
            if isinstance(found, Path):
                return found
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise BundlePreparationError(
                    f"the code bundle {bundle_hash} is still being prepared after {timeout:g} s"
                )
            found.done.wait(remaining)

    def _ask(
        self, store: Store, bundle_hash: str, tenant: Tenant | None, python: Path
    ) -> Path | _Preparation:
        parent, final = self._bundle_paths(bundle_hash, tenant)
        if final.is_dir():
            return final
        with self._lock:
            prep = self._preparations.get(final)
            if prep is not None and prep.error is not None:
                if prep.reported and (
                    prep.kind is StoreError
                    or time.monotonic() - prep.failed_at >= self.retry_failed_after
                ):
                    del self._preparations[final]  # retried from now on
                    prep = None
                else:
                    prep.reported = True
                    raise prep.kind(prep.error)
            if prep is not None:
                return prep
            if final.is_dir():  # prepared since the first look (its entry is gone)
                return final
            self._forget_stale_failures()
            prep = self._preparations[final] = _Preparation()
        run_as = tenant.run_as if tenant is not None else None
        owner = tenant.name if tenant is not None else None

        def job() -> None:
            self._prepare(prep, store, bundle_hash, parent, final, python, run_as)

        try:
            self._queue.submit(owner, job)
        except BaseException:  # no thread could start: not left waiting for nothing
            with self._lock:
                self._preparations.pop(final, None)
            raise
        return prep

    def _forget_stale_failures(self) -> None:
        """Drop the failures nobody asked about lately (called with the lock held)."""
        now = time.monotonic()
        for path, prep in list(self._preparations.items()):
            if prep.error is not None and now - prep.failed_at >= 2 * self.retry_failed_after:
                del self._preparations[path]

    def _prepare(
        self,
        prep: _Preparation,
        store: Store,
        bundle_hash: str,
        parent: Path,
        final: Path,
        python: Path,
        run_as: str | None,
    ) -> None:
        """A worker's job: prepare one bundle, then let its askers know how it went."""
        kind: type[IsolateError] = BundlePreparationError
        error: str | None = None
        try:
            self._extract_and_compile(store, bundle_hash, parent, final, python, run_as)
        except StoreError as exc:
            kind, error = StoreError, f"cannot read the code bundle {bundle_hash}: {exc}"
        except IsolateError as exc:
            error = f"cannot prepare the code bundle {bundle_hash}: {exc}"
        except OSError as exc:
            error = f"cannot prepare the code bundle {bundle_hash} at {final}: {exc.strerror}"
        except Exception as exc:
            log.exception("preparing the code bundle %s failed", bundle_hash)
            error = f"cannot prepare the code bundle {bundle_hash}: {exc!r}"
        with self._lock:
            if error is None:
                self._preparations.pop(final, None)
            else:
                log.warning("%s", error)
                prep.kind, prep.error, prep.failed_at = kind, error, time.monotonic()
        prep.done.set()

    def _extract_and_compile(
        self,
        store: Store,
        bundle_hash: str,
        parent: Path,
        final: Path,
        python: Path,
        run_as: str | None,
    ) -> None:
        if final.is_dir():
            return
        staging = parent / f".{final.name}.{secrets.token_hex(4)}"
        try:
            extract_bundle(store.get_blob(bundle_hash), staging, expected_hash=bundle_hash)
            compile_bytecode(
                staging,
                final,
                python=python,
                user=compile_user(run_as),
                limits=self.compile_limits,
            )
            _move_into_place(staging, final)
        finally:
            if staging.exists():
                tree.remove_tree(staging)  # another scheduler process won the race

    def _bundle_paths(self, bundle_hash: str, tenant: Tenant | None) -> tuple[Path, Path]:
        """(the directory the bundle goes in, the bundle's own directory)."""
        if tenant is None:
            parent = self.bundles
        else:
            try:
                parent = self._tenant_dir(tenant)
            except KeyError:
                raise BundlePreparationError(
                    f"cannot prepare the code bundle {bundle_hash} of tenant {tenant.name!r}: "
                    f"it runs as {tenant.run_as!r}, and there is no such user"
                ) from None
        return parent, parent / _segment(bundle_hash.removeprefix("sha256:"))

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


@dataclass(eq=False)
class _Preparation:
    """One bundle being prepared, or whose preparation failed (``error``)."""

    done: threading.Event = field(default_factory=threading.Event)
    kind: type[IsolateError] = IsolateError
    error: str | None = None
    failed_at: float = 0.0
    reported: bool = False  # a failure is reported at least once before it is retried


class _FairQueue:
    """Jobs run by up to ``workers`` daemon threads, by turns between owners (tenants; None:
    no tenant), at most one job of an owner at a time: a tenant whose versions are many or
    slow to compile delays its own bundles, and takes at most one worker from the others.
    Threads start on demand and end after ``idle`` seconds without work."""

    def __init__(self, workers: int, *, idle: float = 10.0) -> None:
        self._workers = max(1, workers)
        self._idle = idle
        self._cond = threading.Condition()
        self._pending: dict[str | None, deque[Callable[[], None]]] = {}
        self._turns: deque[str | None] = deque()  # owners with pending jobs, none running
        self._busy: set[str | None] = set()
        self._threads = 0

    def submit(self, owner: str | None, job: Callable[[], None]) -> None:
        with self._cond:
            self._pending.setdefault(owner, deque()).append(job)
            if owner not in self._busy and owner not in self._turns:
                self._turns.append(owner)
            if self._threads < self._workers:
                thread = threading.Thread(target=self._work, name="isolate-bundles", daemon=True)
                thread.start()  # it waits for the lock held here
                self._threads += 1
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._turns:
                    self._cond.wait(self._idle)
                if not self._turns:
                    self._threads -= 1
                    return
                owner = self._turns.popleft()
                jobs = self._pending[owner]
                job = jobs.popleft()
                if not jobs:
                    del self._pending[owner]
                self._busy.add(owner)
            try:
                job()
            except Exception:  # jobs report their own failures; this is a last resort
                log.exception("a bundle preparation failed")
            finally:
                with self._cond:
                    self._busy.discard(owner)
                    if owner in self._pending:
                        self._turns.append(owner)
                        self._cond.notify()


def _move_into_place(staging: Path, final: Path) -> None:
    """Make the prepared ``staging`` read-only and rename it to ``final`` (atomic: a bundle
    is either absent or complete); another thread or process may have done so first."""
    tree.make_read_only(staging)
    os.chmod(staging, tree.READ_ONLY_DIR)
    try:
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():
            raise


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
