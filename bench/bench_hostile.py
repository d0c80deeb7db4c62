"""Tenant B's run time while tenant A attacks the scheduler, against B alone.

B's DAG is a chain of three short tasks (tests/hostile.py). Each round measures it twice, in
a fresh home each time, from its trigger to its success recorded:

- **alone**: nothing else on the node;
- **under attack**: A's attacks are under way first (every DAG of tests/hostile.py: a
  catchup backlog, a sleeping callback, a 2,500-task chain whose root fails, megabytes of
  active XComs, a 990-deep result, a log flood, a 3 GB template, a module slow to compile),
  and B is triggered once A's callback has started.

Rounds interleave the two (alternating which goes first), and the table gives the median
and min-max of each and the ratio of the medians: the issue's bar is B within 2x its time
alone. Needs root (it creates two OS users, removed after).

    sudo .venv/bin/python bench/bench_hostile.py [--rounds 5] [--parallelism 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from isolate.config import load_config
from isolate.services.home import init_home, open_store, upgrade_database
from isolate.services.push import push_folder
from isolate.services.triggering import trigger
from isolate.states import RunState
from isolate.store import Store
from localexec.scheduler import Scheduler
from tests.hostile import A_TRIGGERED, SLOW_MODULE, VICTIM, attacks, mapping
from tests.osusers import os_users, unique

PYTHON = "/usr/bin/python3.11"
DEADLINE = 180.0


def fresh_node(root: Path, mapping_text: str) -> Path:
    root.mkdir(mode=0o711)
    (root / "etc").mkdir(mode=0o755)
    (root / "etc" / "tenants.toml").write_text(mapping_text)
    os.chmod(root / "etc" / "tenants.toml", 0o600)
    home = root / "home"
    os.environ.update(
        {
            "ISOLATE_HOME": str(home),
            "ISOLATE_OFFLINE": "true",
            "ISOLATE_ENV_PYTHON": PYTHON,
            "ISOLATE_TENANTS_FILE": str(root / "etc" / "tenants.toml"),
            "ISOLATE_MAX_LOG_BYTES": "1M",
            "ISOLATE_MAX_CATCHUP_RUNS": "1000",
        }
    )
    config = load_config(home)
    init_home(config)
    upgrade_database(config)
    return home


def push(home: Path, folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    os.chmod(folder.parent, 0o755)
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "requirements.txt").write_text("")
    config = load_config(home)
    with open_store(config) as store:
        push_folder(store, folder, config=config, pushed_by="root")


def run_until(scheduler: Scheduler, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    scheduler.run(stop=lambda: done() or time.monotonic() > deadline)
    if not done():
        raise SystemExit("bench_hostile: a round did not finish in time")


def b_finished(store: Store, run_id: str) -> bool:
    return store.runs.get("b.victim", run_id).state not in (RunState.QUEUED, RunState.RUNNING)


def one_round(root: Path, mapping_text: str, *, attacked: bool, parallelism: int) -> float:
    home = fresh_node(root, mapping_text)
    push(home, root / "src" / "b", {"dag.py": VICTIM})
    if attacked:
        push(home, root / "src" / "a", {"dag.py": attacks(nap=5), "slow_module.py": SLOW_MODULE})
    config = load_config(home)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=parallelism, poll_interval=0.05) as scheduler,
    ):
        if attacked:
            runs = {dag_id: trigger(store, dag_id, actor="a").run_id for dag_id in A_TRIGGERED}
            log = home / "logs" / "a.callback" / runs["a.callback"] / "done" / "1.on_success.log"
            run_until(scheduler, log.exists)
        b_run = trigger(store, "b.victim", actor="b").run_id
        began = time.perf_counter()
        run_until(scheduler, lambda: b_finished(store, b_run))
        took = time.perf_counter() - began
        if store.runs.get("b.victim", b_run).state is not RunState.SUCCESS:
            raise SystemExit("bench_hostile: B's run failed")
        if attacked:  # let A's attempts end before the home goes
            store.set_paused("a.backlog", True, actor="bench")
            scheduler.run(until_idle=True)
    return took


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_hostile: run as root (it creates the tenants' OS users)")
    a_user, b_user = unique("isobench-a"), unique("isobench-b")
    times: dict[str, list[float]] = {"alone": [], "attacked": []}
    base = Path(tempfile.mkdtemp(prefix="isolate-bench-hostile-"))
    os.chmod(base, 0o711)
    try:
        with os_users(a_user, b_user):
            for index in range(args.rounds):
                order = [False, True] if index % 2 == 0 else [True, False]
                for attacked in order:
                    root = base / f"{index}-{'attacked' if attacked else 'alone'}"
                    took = one_round(
                        root,
                        mapping(a_user, b_user),
                        attacked=attacked,
                        parallelism=args.parallelism,
                    )
                    times["attacked" if attacked else "alone"].append(took)
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ratio = statistics.median(times["attacked"]) / statistics.median(times["alone"])
    if args.json:
        print(json.dumps({**times, "ratio": ratio}))
        return
    print(f"B's run, trigger to success, {args.rounds} interleaved rounds, median (min-max)")
    print(f"  alone          {summary(times['alone'])}")
    print(f"  under attack   {summary(times['attacked'])}")
    print(f"  ratio          {ratio:.2f}x (the bar: 2x)")


if __name__ == "__main__":
    main()
