"""``isolate test``: run one task of a local DAG folder now, in its env, without a scheduler.

The folder is loaded as ``isolate push`` would load it (nothing is stored), the version's
env is built or reused, the bundle is extracted to a scratch directory, and the task runs
through the same supervisor as scheduled attempts, with no upstream XComs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from isolate.bundles import extract_bundle
from isolate.config import Config
from isolate.errors import UsageError
from isolate.services.dagfile import load_folder
from isolate.services.environments import EnvResolver
from localexec import supervisor
from localexec.attempt import Outcome, Placement, make_context, task_attempt
from localexec.runtime import install_runtime
from localexec.sandbox import HostSandbox, layers_for, sandbox_for
from localexec.tenants import TenantWatch, capped


@dataclass(frozen=True)
class AdhocResult:
    dag_id: str
    outcome: Outcome
    log: str


def run_task(config: Config, path: Path, task_id: str, *, dag_id: str | None = None) -> AdhocResult:
    """Run ``task_id`` of the DAG at ``path`` once; returns its outcome and log text."""
    snapshot = load_folder(path, settings=config.settings)
    owners = [d.spec for d in snapshot.dags if task_id in d.spec.task_ids]
    if dag_id is not None:
        owners = [spec for spec in owners if spec.dag_id == dag_id]
    if not owners:
        raise UsageError(f"{path}: no DAG has a task {task_id!r}")
    if len(owners) > 1:
        raise UsageError(f"{path}: several DAGs have a task {task_id!r}: choose one with --dag")
    spec = owners[0]
    task = spec.task(task_id)
    # The same rule as the scheduler's: the mapped user, or refusal (e.g. root, no mapping).
    tenant = TenantWatch(config, store=None).tenant_for(spec.dag_id)
    ensured = EnvResolver(config).ensure(spec)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="isolate-test-") as scratch:
        root = Path(scratch)
        # The mapped user must traverse to its work dir and the bundle (nothing is listed).
        os.chmod(root, 0o711)  # noqa: S103
        extract_bundle(snapshot.bundle.data, root / "bundle")
        runtime = install_runtime(root / "runtime")
        (root / "work").mkdir(mode=0o700)
        log_path = root / "task.log"
        where = Placement(
            python=ensured.env.python,
            bootstrap=runtime.bootstrap_for(ensured.env.cache_tag),
            sdk_dir=runtime.sdk_dir,
            bundle_dir=root / "bundle",
            work_dir=root / "work",
            log_path=log_path,
            env_key=ensured.key,
        )
        context = make_context(
            dag_id=spec.dag_id,
            task_id=task_id,
            run_id=f"test__{now.isoformat()}",
            logical_date=now,
            try_number=1,
            params=spec.params,
        )
        # Confined as a scheduled attempt of the tenant would be (cgroups aside: those are the
        # scheduler's), so a test shows what the sandbox allows.
        host = HostSandbox.detect(cgroups=False, cgroups_finding="not used by `isolate test`")
        sandbox = sandbox_for(
            config,
            tenant,
            host,
            python=ensured.env.python,
            shared=(root / "runtime", root / "bundle"),
            work_root=root / "work",
        )
        attempt = task_attempt(
            spec,
            task,
            where,
            context,
            xcoms={},
            run_as=tenant.run_as if tenant else None,
            limits=capped(task.limits, tenant.limits) if tenant else None,
            sandbox=replace(sandbox, cgroup=False),
            log_max_bytes=config.settings.max_log_bytes,
            folder=str(path.resolve()),
        )
        outcome = supervisor.run(attempt, layers=layers_for(attempt.sandbox))
        log = log_path.read_text(encoding="utf-8", errors="replace")
    return AdhocResult(dag_id=spec.dag_id, outcome=outcome, log=log)
