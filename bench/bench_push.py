"""`isolate push` of a folder of many small files, against `tar -czf` of the same folder.

The folder: one ``dag.py`` (a one-task DAG), an empty ``requirements.txt`` and small files
in subdirectories, 20,000 files in all by default: Python modules of 100 packages of 10
subpackages each (as a vendored library is). Each round changes one module of each folder,
so that every push stores a new version (a new bundle of every file), then times, in a
fresh process each and in alternating order:

- ``isolate push FOLDER`` (an admin's push into a SQLite home, the env cached), and the
  same for a folder where one small file in ten is JSON data, not a module (data files
  are extracted for the import of the DAG file, modules are not);
- ``isolate push`` of a folder holding the ``dag.py`` alone: the cost of a push that does
  not depend on the number of files (starting Python, the store, the env check);
- ``tar -czf`` of the folder (the baseline) and ``tar -cf``.

Median and range of the rounds, and each median against tar -czf's. Target: a push of the
20,000-file folder at most 3x ``tar -czf``.

    .tox/py311/bin/python bench/bench_push.py [--files 20000] [--rounds 7] [--tmp DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAG = """\
from isolate import DAG, CommandTask

with DAG({dag_id!r}) as dag:
    CommandTask("t", command=["true"])
"""
MODULE = "VALUE = {i}\n\n\ndef value() -> int:\n    return VALUE\n"
TARGET = 3.0


def make_folder(folder: Path, files: int, dag_id: str, *, data: bool = False) -> None:
    """Exactly ``files`` files: dag.py, an empty requirements.txt and small files in
    subdirectories: packages of 10 subpackages each (their ``__init__.py`` count), holding
    modules and, with ``data``, one file in ten of JSON data instead."""
    folder.mkdir(parents=True)
    (folder / "dag.py").write_text(DAG.format(dag_id=dag_id))
    (folder / "requirements.txt").write_text("")
    rest = files - 2
    packages = min(max(rest // 200, 1), rest // 11)
    vendored = folder / "vendored"
    subs = [vendored / f"pkg{p:03d}" / f"sub{s}" for p in range(packages) for s in range(10)]
    for sub in subs:
        sub.mkdir(parents=True)
        (sub / "__init__.py").touch()
        (sub.parent / "__init__.py").touch()
    if not subs and rest > 0:  # too few files for one package: a plain directory
        subs = [folder / "files"]
        subs[0].mkdir()
    for i in range(rest - 11 * packages):
        sub = subs[i % len(subs)]
        if data and i % 10 == 9:
            (sub / f"data{i}.json").write_text(json.dumps({"row": i, "name": f"item {i}"}))
        else:
            (sub / f"mod{i}.py").write_text(MODULE.format(i=i))


def home_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ISOLATE_HOME"] = str(root / "home")
    env["ISOLATE_ENV_PYTHON"] = "/usr/bin/python3.11"
    env["ISOLATE_OFFLINE"] = "true"
    env["ISOLATE_ALLOW_ROOT_TASKS"] = "true"  # a throwaway node with no tenants
    return env


def isolate_command() -> list[str]:
    script = Path(sys.executable).parent / "isolate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return elapsed, done.stdout


def count_files(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the work directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-push-", dir=args.tmp))
    try:
        env = home_env(root)
        isolate = isolate_command()
        subprocess.run([*isolate, "init"], env=env, check=True, capture_output=True)
        big, mixed, small = root / "big", root / "mixed", root / "small"
        make_folder(big, args.files, "bench.many")
        make_folder(mixed, args.files, "bench.mixed", data=True)
        make_folder(small, 2, "bench.one")
        files = count_files(big)
        # The first push of each builds the (empty) env; not measured.
        for folder in (big, mixed, small):
            timed([*isolate, "push", str(folder)], env, root)
        commands = {
            f"isolate push ({files} files)": [*isolate, "push", str(big), "--json"],
            "  the same, 1 in 10 data files": [*isolate, "push", str(mixed), "--json"],
            "isolate push (dag.py alone)": [*isolate, "push", str(small), "--json"],
            "tar -czf (baseline)": ["tar", "-czf", str(root / "out.tgz"), "-C", str(root), "big"],
            "tar -cf": ["tar", "-cf", str(root / "out.tar"), "-C", str(root), "big"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(args.rounds):
            for folder in (big, mixed):
                (folder / "vendored" / "pkg000" / "sub0" / "mod0.py").write_text(f"V = {round_}\n")
            (small / "dag.py").write_text(DAG.format(dag_id="bench.one") + f"# {round_}\n")
            order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
            for name in order:
                elapsed, out = timed(commands[name], env, root)
                if name.startswith("isolate"):
                    statuses = {r["status"] for r in json.loads(out)}
                    assert statuses == {"new"}, (name, statuses)
                times[name].append(elapsed)

        baseline = statistics.median(times["tar -czf (baseline)"])
        dirs = sum(len(names) for _, names, _ in os.walk(big))
        print(
            f"{files} files in {dirs} directories, {args.rounds} rounds, interleaved; env python "
            f"{env['ISOLATE_ENV_PYTHON']}, runner {sys.executable} ({sys.version.split()[0]})"
        )
        print(f"{'command':<34}{'median s':>10}{'min-max s':>14}{'vs tar -czf':>13}")
        for name, values in times.items():
            median = statistics.median(values)
            span = f"{min(values):.2f}-{max(values):.2f}"
            print(f"{name:<34}{median:>10.2f}{span:>14}{median / baseline:>12.1f}x")
        push = statistics.median(times[f"isolate push ({files} files)"])
        fixed = statistics.median(times["isolate push (dag.py alone)"])
        ratio = push / baseline
        print(
            f"push of the folder / tar -czf: {ratio:.1f}x "
            f"(target <= {TARGET:.0f}x: {'met' if ratio <= TARGET else 'not met'})"
        )
        print(
            f"  of which {fixed:.2f} s any push costs; the files add {push - fixed:.2f} s, "
            f"{(push - fixed) / baseline:.1f}x tar -czf"
        )
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
