"""How fast `isolate` starts, against `python -c 'import click'` in the same run.

Each figure is a whole process, started the way a shell starts it (the installed `isolate`
script), timed from fork to exit; rounds interleave every command with the baseline, and
the table gives the median and min-max of each and its ratio to the baseline's median. The
targets: `--help` and completion at most 2x, `dags list` on SQLite at most 4x.

    .tox/py311/bin/python bench/bench_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def complete(words: str) -> dict[str, str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    return {"_ISOLATE_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}


def timed(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    python = sys.executable
    exe = str(Path(python).parent / "isolate")
    with tempfile.TemporaryDirectory(prefix="isolate-bench-startup-") as tmp:
        base = {**os.environ, "ISOLATE_HOME": str(Path(tmp) / "home")}
        subprocess.run([exe, "init"], env=base, check=True, capture_output=True)
        cases: dict[str, tuple[list[str], dict[str, str], float | None]] = {
            "python -c 'import click'": ([python, "-c", "import click"], base, None),
            "isolate --help": ([exe, "--help"], base, 2.0),
            "isolate --version": ([exe, "--version"], base, 2.0),
            "complete `isolate da`": ([exe], {**base, **complete("isolate da")}, 2.0),
            "complete `isolate dags `": ([exe], {**base, **complete("isolate dags ")}, 2.0),
            "complete `isolate runs `": ([exe], {**base, **complete("isolate runs ")}, 2.0),
            "isolate dags list (SQLite)": ([exe, "dags", "list"], base, 4.0),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (argv, env, _target) in cases.items():
                times[name].append(timed(argv, env))
    baseline = statistics.median(times["python -c 'import click'"])
    print(f"{args.rounds} interleaved rounds; median (min-max); ratio to the baseline's median")
    for name, (_argv, _env, target) in cases.items():
        values = times[name]
        median = statistics.median(values)
        bar = "" if target is None else f"  (target {target:.0f}x)"
        print(
            f"  {name:30} {median * 1000:6.0f} ms ({min(values) * 1000:.0f}-"
            f"{max(values) * 1000:.0f})  {median / baseline:5.2f}x{bar}"
        )


if __name__ == "__main__":
    main()
