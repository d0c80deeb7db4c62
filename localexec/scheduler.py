"""The scheduler loop: create runs, decide what is runnable, start attempts, record outcomes.

One process. Each tick: scheduled runs are created from the timetables of unpaused DAGs;
every active run is planned (:mod:`localexec.planner`) against its pinned version and the
decisions are applied as guarded transitions in the store; scheduled tasks are started
while executor slots are free; finished attempts are recorded, and retries decided here,
never by a worker. A task's callbacks are attempts too: queued when its outcome is
recorded, started ahead of tasks as slots free up, never waited for in the loop. At start,
attempts left queued or running by a previous scheduler are settled by the normal rules
(their processes are killed if still alive).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envcache.errors import EnvCacheError
from isolate.config import Config, current_user
from isolate.errors import IsolateError, StoreError
from isolate.health import health_path
from isolate.model import DagSpec, TaskSpec
from isolate.services.catalog import stored_version
from isolate.services.environments import EnvResolver
from isolate.services.triggering import scheduled_run_id
from isolate.states import ACTIVE_RUN_STATES, RunState, TaskState
from isolate.store import DagSummary, RunRecord, Store, TaskInstanceRecord
from isolate.store.engine import display_url
from isolate.store.tasks import StaleStateError
from isolate.tenancy import Tenant, TenantMap
from localexec import fairshare
from localexec.attempt import (
    Attempt,
    Outcome,
    Placement,
    Running,
    make_context,
    task_attempt,
)
from localexec.cgroups import detect, reap_leftovers
from localexec.executor import Executor, Finished
from localexec.health import Heartbeat
from localexec.logs import create_log, write_all
from localexec.orphans import kill_if_alive
from localexec.planner import TaskView, plan_run
from localexec.retries import next_attempt
from localexec.sandbox import HardeningUnavailable, HostSandbox, Sandbox, sandbox_for
from localexec.spares import SparePool
from localexec.tenants import TenantWatch, UnownedDagError, capped
from localexec.timetable import catchup_floor, due_intervals, next_tick
from localexec.workspace import BundlePreparationError, Workspace

TaskKey = tuple[str, str, str]  # dag_id, run_id, task_id
# A callback's attempt: its task's key and its label ("2.on_failure"). The executor runs
# both kinds: a tuple of 3 is a task's try, of 4 a callback.
AttemptKey = tuple[str, ...]
log = logging.getLogger("isolate.scheduler")


@dataclass(frozen=True)
class _Ready:
    """A scheduled task instance, as read this tick."""

    run: RunRecord
    spec: DagSpec  # the run's version
    task: TaskSpec
    ti: TaskInstanceRecord


# Scheduled runs created per pass, in all and per DAG: a catchup of a thousand runs is
# created over several passes, never in one that holds the loop.
CREATE_PER_PASS = 64
CREATE_PER_DAG = 16
# Runs planned per pass although nothing the scheduler saw changed them (an author's clear
# or mark is found this way): with more active runs than this, they take turns.
SWEEP_PER_PASS = 32
# Seconds a failed background env build stands for its tries before it is tried again.
ENV_RETRY_AFTER = 60.0
# Seconds a catchup DAG's first allowed interval is kept before it is found again.
FLOOR_TTL = 3600.0
# Pauses between passes while the database is unreachable.
MIN_OUTAGE_PAUSE = 0.5
MAX_OUTAGE_PAUSE = 30.0


@dataclass(frozen=True)
class _Plan:
    """What one run's last planning found: its tasks ready to start, and when a retry of
    one of its tasks falls due (it is planned again then, if not before)."""

    ready: list[_Ready]
    wake: datetime | None

    def waiting(self, started: Mapping[AttemptKey, object]) -> list[_Ready]:
        """The ready tasks not started since."""
        return [
            ready
            for ready in self.ready
            if (ready.run.dag_id, ready.run.run_id, ready.task.task_id) not in started
        ]


@dataclass(frozen=True)
class _Callback:
    """A callback to run: ``event`` of ``task``'s try ``try_number`` in ``run``."""

    run: RunRecord
    task: TaskSpec
    try_number: int
    event: str
    target: str

    @property
    def key(self) -> AttemptKey:
        return (self.run.dag_id, self.run.run_id, self.task.task_id, self.label)

    @property
    def label(self) -> str:
        return f"{self.try_number}.{self.event}"


@dataclass
class _Started:
    """What the scheduler keeps of a running attempt until its outcome is recorded."""

    try_number: int
    held: ExitStack  # the env's use lock, released when the attempt ends
    run: RunRecord  # as launched: what settling needs of a run (version, conf, dates) is fixed


class Scheduler:
    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        parallelism: int = 4,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_interval: float = 1.0,
        push_health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """``push_health`` gives the push server's health for the heartbeat, if one runs."""
        self.config = config
        self.store = store
        self.clock = clock
        self.poll_interval = poll_interval
        self.workspace = Workspace(config)
        self.envs = EnvResolver(config)
        # Detected whatever the node's settings say: a tenant's hardening may override them.
        cgroups, finding = detect(config.home)
        if cgroups is not None:
            reap_leftovers(cgroups)  # what a stopped or killed scheduler's attempts left
        spares = SparePool(parallelism, cgroups=cgroups) if config.settings.warm_starts else None
        self.host = HostSandbox.detect(cgroups=cgroups is not None, cgroups_finding=finding)
        self.executor: Executor[AttemptKey] = Executor(parallelism, spares=spares, cgroups=cgroups)
        self.tenants = TenantWatch(config, store)
        self._started: dict[AttemptKey, _Started] = {}
        self._unrecorded: list[Finished[AttemptKey]] = []
        self._callbacks: deque[_Callback] = deque()  # recorded outcomes' callbacks to start
        # What a previous scheduler left is settled once, at the first run(): a later run()
        # of this one must not take its own running attempts for leftovers.
        self._recovered = False
        self._specs: dict[tuple[str, int], DagSpec] = {}
        self._floors: dict[tuple[str, int], tuple[float, datetime | None]] = {}
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="env-build")
        self._env_builds: dict[str, Future[Any]] = {}
        self._env_failed: dict[str, tuple[float, BaseException]] = {}
        # Each active run's last plan. A run is planned again when something of its changed
        # that the scheduler saw (an outcome recorded, a launch refused, a retry due), when
        # it is new, or in turn (see _sweep_now): a pass costs the same whether a tenant
        # keeps ten runs active or a thousand.
        self._plans: dict[tuple[str, str], _Plan] = {}
        # DAGs with no run due, by (dag_id, version): not asked before this time.
        self._quiet: dict[tuple[str, int], datetime] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._sweep: deque[tuple[str, str]] = deque()
        self.user = current_user()
        # Bytecode is compiled for the interpreter every env is built on.
        self.env_python = Path(config.settings.env_python)
        self.push_health = push_health
        self._heartbeat = Heartbeat(health_path(config))
        self._started_at = time.time()
        self._passes = 0
        self._faults = 0
        self._last_fault: str | None = None
        self._database = "ok"

    # -- the loop ------------------------------------------------------------------------

    def run(self, *, until_idle: bool = False, stop: Callable[[], bool] = lambda: False) -> None:
        """Tick until ``stop()`` says so or, with ``until_idle``, nothing is left to do.

        The database going away (a restart, a failover) does not end the loop: each pass
        that fails on it is retried after a pause that doubles up to ``MAX_OUTAGE_PAUSE``,
        running attempts go on, and their outcomes are recorded once it is back (the pool
        replaces the dead connections: ``pool_pre_ping``)."""
        pause = 0.0
        while not stop():
            try:
                if not self._recovered:
                    self.recover()
                    self._recovered = True
                busy = self.tick()
                self._passes += 1
                self._database = "ok"
                self._heartbeat.beat(self.health)
                if until_idle and not busy:
                    return
                self.record(self.executor.finished(timeout=self.poll_interval))
            except StoreError as exc:
                pause = min(max(pause * 2, self.poll_interval, MIN_OUTAGE_PAUSE), MAX_OUTAGE_PAUSE)
                self._outage(exc, pause)
                self._database = f"unreachable: {exc}"
                self._heartbeat.beat(self.health)
                time.sleep(pause)
                continue
            if pause:
                self._say(f"the database is back; {len(self._started)} attempts running")
                pause = 0.0
                self._plans.clear()  # planned anew: the outage may have hidden changes
                self.requeue_orphans()

    def health(self) -> dict[str, Any]:
        """What the heartbeat file says (:mod:`localexec.health`): when the scheduler started,
        its passes, the database's state, what runs and waits, the faults it contained."""
        return {
            "home": str(self.config.home),
            "started_at": self._started_at,
            "passes": self._passes,
            "database": self._database,
            "running_attempts": len(self._started),
            "queued_callbacks": len(self._callbacks),
            "unrecorded_outcomes": len(self._unrecorded),
            "contained_faults": self._faults,
            "last_fault": self._last_fault,
            "push_server": self.push_health() if self.push_health is not None else None,
        }

    def _outage(self, exc: StoreError, pause: float) -> None:
        self._say(f"{exc}; retrying in {pause:.1f}s (running attempts go on)")

    @staticmethod
    def _say(message: str) -> None:
        log.warning("%s", message)

    def _contained(
        self,
        what: str,
        key: tuple[str, ...],
        exc: BaseException,
        *,
        try_number: object = None,
    ) -> None:
        """An unexpected error confined to one run or attempt: the admin gets it with its
        traceback, the loop goes on (the fault barrier: one tenant's run never stops it)."""
        self._faults += 1
        self._last_fault = f"{what} ({' '.join(key)}): {type(exc).__name__}"
        log.error(
            "contained a fault while %s (%s%s%s): %s: %s",
            what,
            " ".join(key),
            "" if try_number is None else f" try {try_number}",
            self._whose(key[0]),
            type(exc).__name__,
            exc,
            exc_info=exc,
        )

    def _whose(self, dag_id: str) -> str:
        """ "; tenant <name>" for a log line about ``dag_id``, if a tenant owns it."""
        try:
            mapping = self.tenants.current()
            owner = mapping.owner(dag_id) if mapping is not None else None
        except Exception:  # an invalid mapping: the line is about something else
            return ""
        return f"; tenant {owner.name}" if owner is not None else ""

    def tick(self) -> bool:
        """One pass; returns whether anything is still active (runs or attempts)."""
        now = self.clock()
        self.record(self.executor.finished())
        dags = self.store.list_dags()
        # A paused DAG's runs start nothing new: neither a run nor a task (Airflow's pause);
        # what runs already finishes and is recorded.
        paused = {summary.dag_id for summary in dags if summary.is_paused}
        active = self.store.runs.list(states=set(ACTIVE_RUN_STATES))
        if self.create_scheduled_runs(now, dags, active):
            active = self.store.runs.list(states=set(ACTIVE_RUN_STATES))
        runnable: list[_Ready] = []
        unfinished, ended = 0, False
        running_per_dag: dict[str, int] = {}
        for run in active:
            if run.state is RunState.RUNNING:
                running_per_dag[run.dag_id] = running_per_dag.get(run.dag_id, 0) + 1
        sweep = self._sweep_now(active)
        for run in sorted(active, key=lambda r: (r.logical_date, r.run_id)):
            if run.dag_id in paused:
                continue
            key = (run.dag_id, run.run_id)
            try:
                spec = self.spec(run.dag_id, run.version)
                if run.state is RunState.QUEUED:
                    if running_per_dag.get(run.dag_id, 0) >= spec.max_active_runs:
                        unfinished += 1
                        continue
                    run = self.store.runs.set_state(run.dag_id, run.run_id, RunState.RUNNING)
                    running_per_dag[run.dag_id] = running_per_dag.get(run.dag_id, 0) + 1
                cached = self._plans.get(key)
                if (
                    cached is None
                    or key in self._dirty
                    or key in sweep
                    or (cached.wake is not None and cached.wake <= now)
                ):
                    self._dirty.discard(key)
                    plan = self.advance(run, spec, now)
                    if plan is None:
                        self._plans.pop(key, None)
                    else:
                        self._plans[key] = plan
                else:
                    plan = cached
                found = None if plan is None else plan.waiting(self._started)
            except StoreError:
                raise  # the database: the whole pass waits for it (run())
            except Exception as exc:
                self._contained("planning a run", key, exc)
                self._dirty.add(key)
                unfinished += 1
                continue  # planned again at the next pass
            if found is None:
                ended = True  # room for the DAG's next scheduled run: the next pass makes it
            else:
                unfinished += 1
                runnable += found
        self.launch_callbacks()
        for ready in self.fair_share(self._prepared(runnable)):
            try:
                self.launch(ready)
            except StoreError:
                raise
            except Exception as exc:
                self._dirty.add((ready.run.dag_id, ready.run.run_id))
                task_key = (ready.run.dag_id, ready.run.run_id, ready.task.task_id)
                self._contained("launching an attempt", task_key, exc)
        self.executor.replenish()
        busy = self.executor.busy or bool(self._unrecorded) or bool(self._callbacks)
        return unfinished > 0 or ended or busy

    def _prepared(self, runnable: list[_Ready]) -> list[_Ready]:
        """The ready tasks whose env and code bundle are in place. A missing env (its
        version's was collected, or never built at push) is built in the background, and a
        bundle is extracted and compiled (as an unprivileged user) in the background too:
        never in the loop; their tasks start at a later pass. One whose preparation failed
        counts as ready: the launch meets the error and fails the try with it."""
        prepared_for: dict[tuple[str, int], bool] = {}

        def prepared(ready: _Ready) -> bool:
            key = (ready.run.dag_id, ready.run.version)
            if key not in prepared_for:
                try:
                    prepared_for[key] = self._env_ready(ready) and self._bundle_ready(ready)
                except StoreError:
                    raise
                except Exception:  # the launch reports it (prepare() meets it again)
                    prepared_for[key] = True
            return prepared_for[key]

        return [ready for ready in runnable if prepared(ready)]

    def _bundle_ready(self, ready: _Ready) -> bool:
        tenant = self.tenants.tenant_for(ready.run.dag_id)
        found = self.workspace.request_bundle(
            self.store, ready.spec.bundle_hash, tenant, python=self.env_python
        )
        return found is not None

    def _env_ready(self, ready: _Ready) -> bool:
        """Whether the version's env is in place; if not, its build is started in the
        background (one at a time: builds are disk and network work, not the loop's)."""
        spec = ready.spec
        key = self.envs.for_version(self.store, ready.run.dag_id, ready.run.version, spec).key
        if self.envs.cache.has(key):
            return True
        if self._env_failure(key) is not None:
            return True  # the launch fails the try with the build's error
        build = self._env_builds.get(key)
        if build is None:
            log.info("building env %s for DAG %s in the background", key, spec.dag_id)
            self._env_builds[key] = self._builder.submit(self.envs.ensure, spec)
            return False
        if not build.done():
            return False
        del self._env_builds[key]
        error = build.exception()
        if error is not None:
            log.warning("env %s for DAG %s could not be built: %s", key, spec.dag_id, error)
            self._env_failed[key] = (time.monotonic(), error)
        return True

    def _env_failure(self, key: str) -> BaseException | None:
        """The error of the env's last background build if it failed lately: its tries fail
        with it rather than build again in the loop, until it is tried again."""
        failed = self._env_failed.get(key)
        if failed is None:
            return None
        if time.monotonic() - failed[0] > ENV_RETRY_AFTER:
            del self._env_failed[key]
            return None
        return failed[1]

    def fair_share(self, runnable: list[_Ready]) -> list[_Ready]:
        """The ready tasks to start in the free slots, in order (:mod:`localexec.fairshare`):
        tenants by running tasks against their weight and under their cap, then their DAGs
        under ``max_active_tasks``, then priority and age. Attempts running now, callbacks
        included, count for their tenant and DAG."""
        free = self.executor.free_slots
        if free <= 0 or not runnable:
            return []
        mapping = self._mapping()
        owner: dict[str, str | None] = {}

        def tenant_of(dag_id: str) -> str | None:
            if dag_id not in owner:
                found = mapping.owner(dag_id) if mapping is not None else None
                owner[dag_id] = found.name if found is not None else None
            return owner[dag_id]

        running = fairshare.Running.count((tenant_of(key[0]), key[0]) for key in self._started)
        candidates = [
            fairshare.Candidate(
                tenant=tenant_of(ready.run.dag_id),
                dag_id=ready.run.dag_id,
                dag_max_active_tasks=ready.spec.max_active_tasks,
                priority_weight=ready.task.priority_weight,
                logical_date=ready.run.logical_date,
                run_id=ready.run.run_id,
                task_id=ready.task.task_id,
                payload=ready,
            )
            for ready in runnable
        ]
        shares = {} if mapping is None else {t.name: _share(t) for t in mapping.tenants}
        return [chosen.payload for chosen in fairshare.choose(candidates, running, free, shares)]

    def _mapping(self) -> TenantMap | None:
        """The tenant mapping for sharing slots; an invalid one shares them as if there were
        none (no task of a mapped tenant starts then anyway: its launch says why)."""
        try:
            return self.tenants.current()
        except IsolateError:
            return None

    def describe(self) -> str:
        """The start line: the home, the database, what confines tasks, the slots."""
        settings, host = self.config.settings, self.host
        return (
            f"started on {self.config.home}, database {display_url(self.config.database_url)}, "
            f"parallelism {self.executor.parallelism}; hardening: cgroups={settings.cgroups} "
            f"({'yes' if host.cgroups else 'no'}), landlock={settings.landlock} "
            f"(ABI {host.landlock_abi}), bubblewrap={settings.bubblewrap} "
            f"({'yes' if host.bwrap else 'no'}), warm starts "
            f"{'on' if settings.warm_starts else 'off'}"
        )

    def close(self) -> None:
        """Stop what the scheduler keeps between runs: its idle warm-start processes. The
        heartbeat says it stopped."""
        self.executor.close()
        self._builder.shutdown(wait=True, cancel_futures=True)
        self._heartbeat.beat(lambda: {**self.health(), "stopped_at": time.time()}, force=True)

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def spec(self, dag_id: str, version: int) -> DagSpec:
        if (dag_id, version) not in self._specs:
            self._specs[dag_id, version] = stored_version(self.store, dag_id, version).spec
        return self._specs[dag_id, version]

    # -- runs ----------------------------------------------------------------------------

    def create_scheduled_runs(
        self, now: datetime, dags: list[DagSummary], active: list[RunRecord]
    ) -> bool:
        """Runs for the due intervals of every unpaused DAG, on its latest version, while it
        has fewer than ``max_active_runs`` queued or running (Airflow's rule: a catchup of
        thousands of intervals is created as its runs finish, never all at once). Returns
        whether any was created."""
        per_dag: dict[str, int] = {}
        for run in active:
            per_dag[run.dag_id] = per_dag.get(run.dag_id, 0) + 1
        budget = CREATE_PER_PASS
        # DAGs take turns at the front: with more due runs than the budget, no DAG id
        # (sorted first) keeps the others waiting.
        start = self._passes % len(dags) if dags else 0
        for summary in dags[start:] + dags[:start]:
            if summary.is_paused or summary.latest_version is None or budget <= 0:
                continue
            try:
                budget -= self._create_due_runs(
                    summary.dag_id,
                    summary.latest_version,
                    now,
                    per_dag.get(summary.dag_id, 0),
                    budget,
                )
            except StoreError:
                raise
            except Exception as exc:
                self._contained("creating scheduled runs", (summary.dag_id,), exc)
        return budget < CREATE_PER_PASS

    def _create_due_runs(
        self, dag_id: str, version: int, now: datetime, active: int, budget: int
    ) -> int:
        """Create the DAG's due runs (at most ``budget``, and within ``max_active_runs``);
        how many. A DAG with none due is not asked again before its next schedule tick."""
        spec = self.spec(dag_id, version)
        room = min(spec.max_active_runs - active, budget, CREATE_PER_DAG)
        if spec.schedule is None or room <= 0:
            return 0
        quiet_until = self._quiet.get((dag_id, version))
        if quiet_until is not None and now < quiet_until:
            return 0
        last = self.store.runs.last_logical_date(dag_id, "scheduled")
        earliest = self._catchup_floor(spec, version, now)
        due = due_intervals(spec, last=last, now=now, limit=room, earliest=earliest)
        if not due:
            self._quiet[dag_id, version] = next_tick(spec, now)
            return 0
        for interval in due:
            self.store.runs.create(
                spec.dag_id,
                run_id=scheduled_run_id(interval.start),
                run_type="scheduled",
                logical_date=interval.start,
                conf={},
                created_by="scheduler",
                version=version,
                task_ids=list(spec.task_ids),
            )
        return len(due)

    def _catchup_floor(self, spec: DagSpec, version: int, now: datetime) -> datetime | None:
        """Where a catchup DAG's runs begin when it has more than ``max_catchup_runs`` due
        (the older intervals never run), found again at most every :data:`FLOOR_TTL` s: the
        walk back costs one croniter step per allowed run."""
        if not spec.catchup:
            return None
        key = (spec.dag_id, version)
        cached = self._floors.get(key)
        if cached is not None and time.monotonic() - cached[0] < FLOOR_TTL:
            return cached[1]
        cap = self.config.settings.max_catchup_runs
        floor = catchup_floor(spec, now=now, cap=cap)
        if floor is not None and (cached is None or cached[1] is None):
            log.info(
                "DAG %s: more than %d intervals are due: its catchup begins at %s (setting "
                "max_catchup_runs)",
                spec.dag_id,
                cap,
                floor.isoformat(),
            )
        self._floors[key] = (time.monotonic(), floor)
        return floor

    def _sweep_now(self, active: list[RunRecord]) -> set[tuple[str, str]]:
        """The runs planned this pass although nothing of theirs changed that the scheduler
        saw (an author's clear or mark is seen this way): :data:`SWEEP_PER_PASS` of them,
        in turn. Forgets the plans of runs no longer active."""
        keys = {(run.dag_id, run.run_id) for run in active}
        for gone in self._plans.keys() - keys:
            del self._plans[gone]
        self._dirty &= keys
        if len(keys) <= SWEEP_PER_PASS:
            return keys
        self._sweep = deque(key for key in self._sweep if key in keys)
        self._sweep.extend(keys - set(self._sweep))
        chosen: set[tuple[str, str]] = set()
        for _ in range(SWEEP_PER_PASS):
            key = self._sweep.popleft()
            self._sweep.append(key)
            chosen.add(key)
        return chosen

    def advance(self, run: RunRecord, spec: DagSpec, now: datetime) -> _Plan | None:
        """Apply the planner's decisions to one run; returns its tasks ready to start and
        when it must be planned again at the latest, or None once the run is over."""
        # Without XComs: a launch reads its upstream ones only (prepare()).
        tis = {ti.task_id: ti for ti in self.store.tasks.list(run.dag_id, run.run_id, xcoms=False)}
        views = {task_id: TaskView(ti.state, ti.next_try_at) for task_id, ti in tis.items()}
        plan = plan_run(spec, views, now)
        stale = False

        def move(task_ids: list[str], state: TaskState, expect: TaskState, **fields: Any) -> None:
            # One statement per kind of decision. A concurrent writer (`tasks clear`, a mark)
            # that moved one of them since it was read wins: the run is planned again from
            # what is stored at the next pass.
            nonlocal stale
            if not task_ids:
                return
            moved = self.store.tasks.move_many(
                run.dag_id, run.run_id, task_ids, state, expect=expect, **fields
            )
            stale = stale or moved != len(task_ids)
            for task_id in task_ids:
                tis[task_id] = replace(tis[task_id], state=state)

        move(plan.schedule, TaskState.SCHEDULED, TaskState.NONE)
        move(plan.retry_now, TaskState.SCHEDULED, TaskState.UP_FOR_RETRY)
        move(plan.skip, TaskState.SKIPPED, TaskState.NONE, ended_at=now)
        move(plan.upstream_failed, TaskState.UPSTREAM_FAILED, TaskState.NONE, ended_at=now)
        if stale:
            self._dirty.add((run.dag_id, run.run_id))
            return _Plan([], None)  # whatever changed is planned at the next pass
        if plan.finished is not None:
            self.store.runs.set_state(run.dag_id, run.run_id, plan.finished)
            return None  # the run is over
        retries = [
            ti.next_try_at
            for ti in tis.values()
            if ti.state is TaskState.UP_FOR_RETRY and ti.next_try_at is not None
        ]
        ready = [
            _Ready(run, spec, spec.task(task_id), ti)
            for task_id, ti in sorted(tis.items())
            if ti.state is TaskState.SCHEDULED
        ]
        return _Plan(ready, min(retries, default=None))

    # -- attempts ------------------------------------------------------------------------

    def launch(self, ready: _Ready) -> None:
        """Queue the next try of a task, prepare it and start it (or record why it could not)."""
        run, task, ti = ready.run, ready.task, ready.ti
        key = (run.dag_id, run.run_id, task.task_id)
        try_number = ti.try_number + 1
        claimed = self.store.tasks.claim(
            *key, TaskState.QUEUED, expect=TaskState.SCHEDULED, try_number=try_number
        )
        if claimed is None:  # another writer holds or changed it (a clear, a mark)
            self._dirty.add((run.dag_id, run.run_id))
            return
        held = ExitStack()
        try:
            attempt = self.prepare(run, task, try_number, held)
        except StoreError:
            held.close()  # not the task's failure: it goes back to scheduled once the
            raise  # database is back (requeue_orphans)
        except (IsolateError, EnvCacheError, OSError) as exc:
            held.close()
            message = f"could not start: {exc}"
            self._log_refusal(run, task, try_number, message)
            # A DAG no tenant owns, or one whose tenant requires a hardening the host lacks,
            # does not run: retrying cannot change that, an admin can.
            retry = not isinstance(exc, UnownedDagError | HardeningUnavailable)
            self.settle(run, task, try_number, ok=False, message=message, retry=retry)
            return
        except Exception as exc:
            held.close()
            self._contained("preparing an attempt", key, exc, try_number=try_number)
            message = (
                f"could not start: internal error ({type(exc).__name__}; see the scheduler's log)"
            )
            self._log_refusal(run, task, try_number, message)
            self.settle(run, task, try_number, ok=False, message=message)
            return
        self._started[key] = _Started(try_number, held, run)

        try:
            self.executor.submit(key, attempt, self._mark_running)
        except StoreError:
            raise  # started: its start is recorded with its outcome (record())
        except Exception as exc:
            if key in self.executor.running_keys:
                self._contained("recording an attempt's start", key, exc, try_number=try_number)
                return  # it runs; record() settles it from its outcome
            self._started.pop(key).held.close()
            if not isinstance(exc, OSError):
                self._contained("starting an attempt", key, exc, try_number=try_number)
            self.settle(run, task, try_number, ok=False, message=f"could not start: {exc}")

    def _mark_running(self, running: Running) -> None:
        attempt = running.attempt
        ctx = attempt.context
        self.store.tasks.transition(
            ctx["dag_id"],
            ctx["run_id"],
            ctx["task_id"],
            TaskState.RUNNING,
            expect=TaskState.QUEUED,
            started_at=running.started_at,
            pid=running.pid,
            pid_started=running.start_time,
            run_as=attempt.run_as or self.user,
            env_key=attempt.env_key,
        )

    def prepare(
        self,
        run: RunRecord,
        task: TaskSpec,
        try_number: int,
        held: ExitStack,
        *,
        callback: _Callback | None = None,
    ) -> Attempt:
        """The attempt of ``task``'s try ``try_number``, or of its ``callback``: one path for
        both, so a callback gets its task's user, limits and sandbox, and holds its env's use
        lock (in ``held``) like a task, so ``isolate gc`` cannot remove the env under it."""
        spec = self.spec(run.dag_id, run.version)
        tenant = self.tenants.tenant_for(run.dag_id)  # read at every launch: changes apply now
        # The key and lock stored with the version (ensure() below uses them): a launch
        # parses no lock.
        failure = self._env_failure(
            self.envs.for_version(self.store, run.dag_id, run.version, spec).key
        )
        if failure is not None:
            text = " ".join(str(failure).split())[:500] or type(failure).__name__
            raise IsolateError(f"its env could not be built: {text}")
        ensured = self.envs.ensure(spec)  # a modified env fails the try
        held.enter_context(self.envs.cache.use(ensured.key))
        bundle = self.workspace.request_bundle(
            self.store, spec.bundle_hash, tenant, python=ensured.env.python
        )
        if bundle is None:  # a callback's, or one removed since: not a fault of the tenant's
            raise BundlePreparationError("its code bundle is still being prepared")
        label = str(try_number) if callback is None else callback.label
        work, log = self.workspace.attempt_paths(run.dag_id, run.run_id, task.task_id, label)
        where = Placement(
            python=ensured.env.python,
            bootstrap=self.workspace.runtime.bootstrap_for(ensured.env.cache_tag),
            sdk_dir=self.workspace.runtime.sdk_dir,
            bundle_dir=bundle,
            work_dir=work,
            log_path=log,
            env_key=ensured.key,
        )
        xcoms = {} if callback else self.store.tasks.xcoms(run.dag_id, run.run_id, task.upstream)
        context = self.context(run, spec, task, try_number)
        return task_attempt(
            spec,
            task,
            where,
            context,
            xcoms,
            version=run.version,
            run_as=tenant.run_as if tenant else None,
            limits=capped(task.limits, tenant.limits) if tenant else None,
            sandbox=self.sandbox(tenant, ensured.env.python),
            log_max_bytes=self.config.settings.max_log_bytes,
            callback=(callback.target, callback.event) if callback else None,
        )

    def sandbox(self, tenant: Tenant | None, python: Path) -> Sandbox:
        """How an attempt of ``tenant`` in the env of ``python`` is confined (read at every
        launch, like the run-as user: an admin's change applies from the next attempt)."""
        return sandbox_for(
            self.config,
            tenant,
            self.host,
            python=python,
            shared=(self.workspace.runtime_dir, self.workspace.bundles),
            work_root=self.workspace.work,
        )

    def context(
        self, run: RunRecord, spec: DagSpec, task: TaskSpec, try_number: int
    ) -> dict[str, Any]:
        return make_context(
            dag_id=run.dag_id,
            task_id=task.task_id,
            run_id=run.run_id,
            logical_date=run.logical_date,
            try_number=try_number,
            params=_params(spec, run),
            conf=run.conf,
        )

    def record(self, finished: list[Finished[AttemptKey]]) -> None:
        """Record outcomes: success with its XCom, else a retry or a failure by the policy.

        An outcome is let go only once recorded: if the database fails, it and those after
        it wait for the next call (each settles in one transaction, so a retry never
        records half of one)."""
        self._unrecorded += finished
        while self._unrecorded:
            item = self._unrecorded[0]
            started = self._started.get(item.key)
            try:
                if len(item.key) == 4:
                    _callback_ended(item)
                else:
                    self._record_one(item, started)
            except StoreError:
                raise  # kept: recorded once the database is back
            except StaleStateError:
                # Cleared or marked while it ran: that change stands over this outcome.
                log.info("outcome of %s not recorded: the task changed meanwhile", item.key)
                self._dirty.add((item.key[0], item.key[1]))
            except Exception as exc:
                tried = item.running.attempt.context.get("try_number")
                self._contained("recording an outcome", item.key, exc, try_number=tried)
            self._unrecorded.pop(0)
            if self._started.get(item.key) is started and started is not None:
                del self._started[item.key]
                started.held.close()

    def _record_one(self, item: Finished[AttemptKey], started: _Started | None) -> None:
        dag_id, run_id, task_id = item.key
        key = (dag_id, run_id, task_id)
        run = started.run if started else self.store.runs.get(dag_id, run_id)
        task = self.spec(dag_id, run.version).task(task_id)
        try_number = started.try_number if started else item.running.attempt.context["try_number"]
        state = self.store.tasks.get(*key).state
        if state is TaskState.QUEUED:  # its start went unrecorded (the database was down)
            self._mark_running(item.running)
            state = TaskState.RUNNING
        if state is TaskState.RUNNING:
            self.settle(
                run,
                task,
                try_number,
                ok=item.outcome.ok,
                message=_message(item.outcome),
                outcome=item.outcome,
            )
        # else: recorded already (a commit whose acknowledgement the outage swallowed)

    def settle(
        self,
        run: RunRecord,
        task: TaskSpec,
        try_number: int,
        *,
        ok: bool,
        message: str,
        outcome: Outcome | None = None,
        retry: bool = True,
    ) -> None:
        key = (run.dag_id, run.run_id, task.task_id)
        self._dirty.add((run.dag_id, run.run_id))  # its next tasks may be ready
        current = self.store.tasks.get(*key).state
        now = self.clock()
        if ok and outcome is not None:
            self.store.tasks.transition(
                *key,
                TaskState.SUCCESS,
                expect=current,
                ended_at=now,
                outcome=message,
                xcom=outcome.xcom if outcome.has_xcom else None,
            )
            self.callback(run, task, try_number, "on_success")
            return
        policy = task.effective_retry(self.spec(run.dag_id, run.version).defaults)
        retry_at = next_attempt(policy, try_number, now) if retry else None
        if retry_at is not None:
            self.store.tasks.transition(
                *key,
                TaskState.UP_FOR_RETRY,
                expect=current,
                ended_at=now,
                outcome=message,
                next_try_at=retry_at,
            )
            self.callback(run, task, try_number, "on_retry")
        else:
            self.store.tasks.transition(
                *key, TaskState.FAILED, expect=current, ended_at=now, outcome=message
            )
            self.callback(run, task, try_number, "on_failure")

    def _log_refusal(self, run: RunRecord, task: TaskSpec, label: int | str, message: str) -> None:
        """A try (or callback) that never started still gets a log saying why (its only
        record for authors); the admin's log says so too."""
        log.warning(
            "%s %s %s try %s not started%s: %s",
            run.dag_id,
            run.run_id,
            task.task_id,
            label,
            self._whose(run.dag_id),
            message,
        )
        try:
            _work, path = self.workspace.attempt_paths(
                run.dag_id, run.run_id, task.task_id, str(label)
            )
            fd = create_log(path)
        except OSError:
            return
        try:
            write_all(fd, f"--- isolate attempt not started\n{message}\n".encode())
        finally:
            os.close(fd)

    def callback(self, run: RunRecord, task: TaskSpec, try_number: int, event: str) -> None:
        """Queue the task's ``event`` callback, if it has one: it starts as its own attempt
        when a slot is free (:meth:`launch_callbacks`); the loop never waits for it."""
        spec = self.spec(run.dag_id, run.version)
        target = getattr(task.effective_callbacks(spec.defaults), event)
        if target is not None:
            self._callbacks.append(_Callback(run, task, try_number, event, target))

    def launch_callbacks(self) -> None:
        """Start queued callbacks while slots are free, before any task: each reports on an
        outcome already recorded. One that cannot start is logged (in its own log too) and
        dropped: a callback never changes its task's outcome."""
        while self._callbacks and self.executor.free_slots > 0:
            callback = self._callbacks.popleft()
            try:
                self._launch_callback(callback)
            except StoreError:
                self._callbacks.appendleft(callback)
                raise
            except Exception as exc:
                self._contained("starting a callback", callback.key, exc)

    def _launch_callback(self, callback: _Callback) -> None:
        run, task, key = callback.run, callback.task, callback.key
        held = ExitStack()
        try:
            attempt = self.prepare(run, task, callback.try_number, held, callback=callback)
            self.executor.submit(key, attempt, lambda _running: None)
        except (IsolateError, EnvCacheError, OSError) as exc:
            held.close()
            self._log_refusal(run, task, callback.label, f"could not start: {exc}")
            return
        except BaseException:
            held.close()
            raise
        self._started[key] = _Started(callback.try_number, held, run)

    def requeue_orphans(self) -> None:
        """Tasks left queued by a launch the database failed under, with no process: back
        to scheduled, so they launch again (nothing of theirs ever started)."""
        for run in self.store.runs.list(states=set(ACTIVE_RUN_STATES)):
            for ti in self.store.tasks.list(run.dag_id, run.run_id, xcoms=False):
                key = (run.dag_id, run.run_id, ti.task_id)
                if ti.state is TaskState.QUEUED and key not in self._started:
                    self.store.tasks.transition(*key, TaskState.SCHEDULED, expect=TaskState.QUEUED)

    def recover(self) -> None:
        """Settle attempts a previous scheduler left queued or running (it was killed)."""
        for run in self.store.runs.list(states=set(ACTIVE_RUN_STATES)):
            try:
                self._recover_run(run)
            except StoreError:
                raise
            except Exception as exc:
                self._contained(
                    "settling a previous scheduler's attempts", (run.dag_id, run.run_id), exc
                )

    def _recover_run(self, run: RunRecord) -> None:
        spec = self.spec(run.dag_id, run.version)
        for ti in self.store.tasks.list(run.dag_id, run.run_id, xcoms=False):
            if (run.dag_id, run.run_id, ti.task_id) in self._started:
                continue  # this scheduler's own attempt
            if ti.state is TaskState.QUEUED:
                self.store.tasks.transition(
                    run.dag_id,
                    run.run_id,
                    ti.task_id,
                    TaskState.SCHEDULED,
                    expect=TaskState.QUEUED,
                )
            elif ti.state is TaskState.RUNNING:
                killed = kill_if_alive(ti.pid, ti.pid_started)
                why = "the scheduler restarted; the attempt " + (
                    "was killed" if killed else "had ended"
                )
                self.settle(run, spec.task(ti.task_id), ti.try_number, ok=False, message=why)


def _share(tenant: Tenant) -> fairshare.Share:
    return fairshare.Share(weight=tenant.weight, max_active_tasks=tenant.max_active_tasks)


def _callback_ended(item: Finished[AttemptKey]) -> None:
    """A callback's outcome is its log's (the store keeps none): the admin's log says so."""
    outcome = item.outcome
    log.log(
        logging.INFO if outcome.ok else logging.WARNING,
        "callback %s %s",
        " ".join(item.key),
        _message(outcome),
    )


def _params(spec: DagSpec, run: RunRecord) -> dict[str, Any]:
    """The DAG's params, overridden by a trigger's ``conf["params"]`` when it gives some."""
    given = run.conf.get("params")
    return {**spec.params, **given} if isinstance(given, dict) else dict(spec.params)


def _message(outcome: Outcome) -> str:
    parts = [outcome.message]
    if outcome.start_error:
        parts.append(outcome.start_error)
    elif outcome.error:
        parts.append(outcome.error)
    return ": ".join(dict.fromkeys(parts))[:2000]
