"""The executor's cost: a no-op task end to end, throughput, and scheduler decision time.

1. overhead: one no-op python task (a function of the DAG's own module, so the task imports
   the DAG file and the SDK, as every real one does) and one no-op command task, from the
   task queued to its success recorded (the issue's measure) and from the run queued to the
   scheduler idle, against starting the env's interpreter bare (``python -I -c pass``),
   median of N; python tasks with warm starts (the default) and without;
2. throughput: 500 no-op command tasks (no dependencies) at parallelism 2 on SQLite;
3. decisions: planning one 10,000-task run (a chain of fan-outs), and 1,000 runs of 10 tasks,
   with the pure planner (no store, no processes).

    .venv/bin/python bench/bench_scheduler.py [--tasks 500] [--repeat 15]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import tempfile
import textwrap
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from isolate.config import load_config
from isolate.format import load_object
from isolate.services.home import init_home, open_store, upgrade_database
from isolate.services.push import push_folder
from isolate.services.triggering import trigger
from isolate.states import TaskState
from isolate.validate import lock_digest
from localexec.planner import TaskView, plan_run
from localexec.scheduler import Scheduler


def make_home(root: Path) -> Path:
    home = root / "home"
    os.environ["ISOLATE_ENV_PYTHON"] = "/usr/bin/python3.11"
    os.environ["ISOLATE_OFFLINE"] = "true"
    os.environ["ISOLATE_ALLOW_ROOT_TASKS"] = "true"  # a throwaway node with no tenants
    config = load_config(home)
    init_home(config)
    upgrade_database(config)
    return home


def push(home: Path, folder: Path, source: str) -> None:
    folder.mkdir(parents=True)
    (folder / "dag.py").write_text(textwrap.dedent(source))
    (folder / "requirements.txt").write_text("")
    config = load_config(home)
    with open_store(config) as store:
        push_folder(store, folder, config=config, pushed_by="bench")


class Stamps:
    """When the store recorded each task's QUEUED and SUCCESS: the issue's "queued to success
    recorded", measured around the store's own transition call (after its commit)."""

    def __init__(self, store: Any) -> None:
        self.at: dict[tuple[str, TaskState], float] = {}
        original = store.tasks.transition

        def transition(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            self.at[args[2], args[3]] = time.perf_counter()
            return result

        store.tasks.transition = transition

    def queued_to_success(self, task_id: str) -> float:
        return self.at[task_id, TaskState.SUCCESS] - self.at[task_id, TaskState.QUEUED]


def run_once(
    scheduler: Scheduler, dag_id: str, stamps: Stamps, task_id: str | None = "t"
) -> tuple[float, float]:
    """Seconds from queuing a run to the scheduler idle again, and from ``task_id`` queued to
    its success recorded, with a warm scheduler."""
    store = scheduler.store
    run = trigger(store, dag_id, actor="bench")
    started = time.perf_counter()
    scheduler.run(until_idle=True)
    elapsed = time.perf_counter() - started
    assert all(ti.state is TaskState.SUCCESS for ti in store.tasks.list(dag_id, run.run_id))
    return elapsed, stamps.queued_to_success(task_id) if task_id else 0.0


def bare_start(python: str) -> float:
    began = time.perf_counter()
    subprocess.run([python, "-I", "-c", "pass"], check=True)
    return time.perf_counter() - began


def decisions(tasks: int, runs: int) -> float:
    docs = []
    for i in range(tasks):
        upstream = [f"t{i // 10}"] if i >= 10 else []
        docs.append(
            {"task_id": f"t{i}", "kind": "command", "command": ["true"], "upstream": upstream}
        )
    spec = load_object(
        json.loads(
            json.dumps(
                {
                    "format_version": 1,
                    "dag_id": "big",
                    "tasks": docs,
                    "environment": {"lockfile": "r.txt", "lock": "", "lock_hash": lock_digest("")},
                    "bundle": {"hash": "sha256:" + "0" * 64},
                }
            )
        )
    )
    views = {
        t.task_id: TaskView(TaskState.SUCCESS if i < tasks // 2 else TaskState.NONE)
        for i, t in enumerate(spec.tasks)
    }
    now = datetime.now(UTC)
    began = time.perf_counter()
    for _ in range(runs):
        plan_run(spec, views, now)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        root = Path(tmp)
        home = make_home(root)
        push(
            home,
            root / "noop_py",
            """
            from isolate import DAG, PythonTask

            def noop():
                pass

            with DAG("noop_py"):
                PythonTask("t", callable="dag:noop")
        """,
        )
        push(
            home,
            root / "noop_cmd",
            """
            from isolate import DAG, CommandTask
            with DAG("noop_cmd"):
                CommandTask("t", command=["true"])
        """,
        )
        many = "\n".join(f'    CommandTask("t{i}", command=["true"])' for i in range(args.tasks))
        push(
            home,
            root / "many",
            'from isolate import DAG, CommandTask\nwith DAG("many"):\n' + many + "\n",
        )
        config = load_config(home)

        def variant(**settings: Any) -> Any:
            return dataclasses.replace(
                config, settings=dataclasses.replace(config.settings, **settings)
            )

        # The default confines tasks with whatever the host has (bubblewrap and Landlock
        # here, when installed); the variants turn them off to show what each costs.
        cold_config = variant(warm_starts=False)
        landlock_config = variant(bubblewrap="off")
        bare_config = variant(bubblewrap="off", landlock="off")
        nothing_config = variant(bubblewrap="off", landlock="off", cgroups="off")
        samples: dict[str, list[float]] = defaultdict(list)
        with open_store(config) as store:
            stamps = Stamps(store)
            with (
                Scheduler(config, store, parallelism=1, poll_interval=0.005) as one,
                Scheduler(cold_config, store, parallelism=1, poll_interval=0.005) as cold,
                Scheduler(landlock_config, store, parallelism=1, poll_interval=0.005) as ll,
                Scheduler(bare_config, store, parallelism=1, poll_interval=0.005) as unconfined,
                Scheduler(nothing_config, store, parallelism=1, poll_interval=0.005) as nothing,
            ):
                # Warm-up: env built, bundle extracted, runtime installed, a spare started.
                for scheduler, dag_id in (
                    (one, "noop_py"),
                    (one, "noop_cmd"),
                    (cold, "noop_py"),
                    (ll, "noop_py"),
                    (unconfined, "noop_py"),
                    (unconfined, "noop_cmd"),
                    (nothing, "noop_py"),
                ):
                    run_once(scheduler, dag_id, stamps)
                python = str(next((home / "envcache" / "envs").iterdir()) / "bin" / "python")
                sandbox = one.sandbox(None, Path(python)).describe()
                # Interleaved, so that a slower moment of the machine weighs on every figure.
                for _ in range(args.repeat):
                    samples["bare"].append(bare_start(python))
                    for name, scheduler, dag_id in (
                        ("py", one, "noop_py"),
                        ("cmd", one, "noop_cmd"),
                        ("py_cold", cold, "noop_py"),
                        ("py_landlock", ll, "noop_py"),
                        ("py_unconfined", unconfined, "noop_py"),
                        ("cmd_unconfined", unconfined, "noop_cmd"),
                        ("py_nothing", nothing, "noop_py"),
                    ):
                        run_s, task_s = run_once(scheduler, dag_id, stamps)
                        samples[f"{name}_run"].append(run_s)
                        samples[name].append(task_s)
            with Scheduler(config, store, parallelism=2, poll_interval=0.005) as two:
                many_s, _ = run_once(two, "many", stamps, task_id=None)
            with Scheduler(nothing_config, store, parallelism=2, poll_interval=0.005) as two:
                many_bare_s, _ = run_once(two, "many", stamps, task_id=None)
        bare, py_task, py_cold, cmd_task, py, cmd = (
            statistics.median(samples[name])
            for name in ("bare", "py", "py_cold", "cmd", "py_run", "cmd_run")
        )
        py_landlock, py_unconfined, cmd_unconfined, py_nothing = (
            statistics.median(samples[name])
            for name in ("py_landlock", "py_unconfined", "cmd_unconfined", "py_nothing")
        )
    print(f"median of {args.repeat}; env python {python}")
    print(f"default sandbox here: {sandbox}")
    print(f"{'bare `python -I -c pass`':<32} {bare * 1e3:8.1f} ms   1.0x")
    rows = [
        ("no-op task: queued to success recorded (the issue's measure):", None, ""),
        ("  python task", py_task, "  (target <= 2x)"),
        ("  python task, warm starts off", py_cold, ""),
        ("  command task", cmd_task, "  (target <= 2x)"),
        ("  python task, Landlock only", py_landlock, ""),
        ("  python task, no sandbox", py_unconfined, ""),
        ("  command task, no sandbox", cmd_unconfined, ""),
        ("  python task, no sandbox, no cgroup", py_nothing, ""),
        ("no-op task: run queued to run success recorded (3 ticks, 2 more commits):", None, ""),
        ("  python task", py, ""),
        ("  command task", cmd, ""),
    ]
    for label, seconds, note in rows:
        if seconds is None:
            print(label)
        else:
            print(f"{label:<32} {seconds * 1e3:8.1f} ms {seconds / bare:5.1f}x{note}")
    for label, seconds in (("", many_s), (", no sandbox, no cgroup", many_bare_s)):
        rate = args.tasks / seconds
        print(f"{args.tasks} no-op command tasks, parallelism 2{label}: ", end="")
        print(f"{seconds:.1f} s, {rate:.1f} tasks/s (target >= 40)")
    big = decisions(10_000, 1)
    small = decisions(10, 1000)
    print(f"plan one 10,000-task run: {big * 1e3:.0f} ms")
    print(f"plan 1,000 runs of 10 tasks: {small * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
