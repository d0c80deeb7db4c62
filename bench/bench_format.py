"""How much validation and canonicalization cost over plain JSON parsing and dumping.

Baseline, measured in the same run: ``json.loads`` + ``json.dumps(sort_keys=True)`` of the
same document. Reported: time per document for both and the ratio, for DAGs of 10, 200
and 2,000 tasks (a chain with fan-in, templated kwargs and XCom references).

    .venv/bin/python bench/bench_format.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from isolate.format import canonical_json, load_document
from isolate.validate import lock_digest


def document(tasks: int) -> str:
    lock = "".join(f"pkg{i}==1.0.{i} --hash=sha256:{i:064x}\n" for i in range(20))
    items = []
    for i in range(tasks):
        upstream = [f"t{i - 1}", f"t{i // 2}"] if i else []
        items.append(
            {
                "task_id": f"t{i}",
                "kind": "python",
                "callable": "etl.jobs:step",
                "args": [{"$xcom": f"t{i - 1}"}] if i else [],
                "kwargs": {"day": "{{ ds }}", "n": i, "region": "{{ params.region }}"},
                "upstream": sorted({u for u in upstream if u != f"t{i}"}),
                "retry": {"retries": i % 3},
                "limits": {"memory": "512M"},
            }
        )
    return json.dumps(
        {
            "format_version": 1,
            "dag_id": f"bench.{tasks}",
            "schedule": "0 3 * * *",
            "start_date": "2024-01-01T00:00:00+00:00",
            "params": {"region": "eu"},
            "tasks": items,
            "environment": {
                "lockfile": "requirements.txt",
                "lock": lock,
                "lock_hash": lock_digest(lock),
            },
            "bundle": {"hash": "sha256:" + "0" * 64},
        }
    )


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; best of {args.repeat}")
    print(f"{'tasks':>6} {'bytes':>9} {'json (ms)':>10} {'isolate (ms)':>13} {'ratio':>7}")
    for tasks in (10, 200, 2000):
        text = document(tasks)
        base = best(lambda text=text: json.dumps(json.loads(text), sort_keys=True), args.repeat)
        ours = best(lambda text=text: canonical_json(load_document(text)), args.repeat)
        print(
            f"{tasks:>6} {len(text):>9} {base * 1e3:>10.2f} {ours * 1e3:>13.2f}",
            f"{ours / base:>6.1f}x",
        )


if __name__ == "__main__":
    main()
