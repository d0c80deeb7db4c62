"""`isolate push` of a folder of many small files, against `tar -czf` of the same folder.

The folder: one ``dag.py`` (a one-task DAG), an empty ``requirements.txt`` and small files
in subdirectories, 20,000 files in all by default: Python modules of 100 packages of 10
subpackages each (as a vendored library is). Each round times, in a fresh process each and
in alternating order (reversed every other round):

- ``isolate push FOLDER`` (an admin's push into a SQLite home, the env cached), and the
  same for a folder where one small file in ten is JSON data, not a module (data files
  are extracted for the import of the DAG file, modules are not);
- ``isolate push`` of a folder holding the ``dag.py`` alone: the cost of a push that does
  not depend on the number of files (starting Python, imports, the store, the env check);
- with ``--compare DIR``, the two pushes of the big folders again, the packages
  ``isolate``, ``cli``, ``localexec`` and ``envcache`` taken from DIR (``PYTHONPATH``):
  another version of the project, measured in the same rounds;
- ``tar -czf`` of the folder (the baseline) and ``tar -cf``.

Before each push, one module of its folder changes, so that every push stores a new
version (a new bundle of every file). Median and range of the rounds, and each median
against tar -czf's. Target: a push of the 20,000-file folder at most 3x ``tar -czf``.

Bytecode: a pip install compiles the packages it installs, so a push runs from bytecode.
The pushes here use a bytecode cache of their own (``PYTHONPYCACHEPREFIX`` in the work
directory, ``PYTHONDONTWRITEBYTECODE`` unset for them), filled by a first, unmeasured push
of each command, the compared version's included; ``tar`` has none to compile. With
``--no-bytecode`` no bytecode is written or read: every push compiles all it imports (an
install from source run with ``PYTHONDONTWRITEBYTECODE=1``).

    .tox/py311/bin/python bench/bench_push.py [--files 20000] [--rounds 7] [--no-bytecode]
        [--compare DIR] [--tmp DIR] [--keep]

Measured on 2026-12-02 (2 CPUs shared with other work, ext4; the project installed
editable in its tox env ``py311``), 7 rounds, median (min-max); ``before`` is
``--compare`` with the same tree but ``isolate/bundles.py`` and
``isolate/services/dagfile.py`` as before 8f52d49:

=============================  ==================  ==================
push of 20,000 files           bytecode cached     no bytecode
=============================  ==================  ==================
now                            1.27 s (1.18-1.60)  3.12 s (2.62-3.58)
before                         1.61 s (1.38-1.68)  3.52 s (3.02-4.00)
dag.py alone (now)             0.83 s (0.76-0.91)  2.59 s (2.15-3.22)
tar -czf                       0.34 s (0.33-0.53)  0.37 s (0.22-0.41)
now / tar -czf                 3.7x                8.5x
before / tar -czf              4.7x                9.5x
=============================  ==================  ==================

The target is not met: a push of the ``dag.py`` alone costs 2.4x ``tar -czf`` (see
bench/README.md for where that goes); the 20,000 files add 1.3x.
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
from dataclasses import dataclass
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


def home_env(root: Path, *, bytecode: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["ISOLATE_HOME"] = str(root / "home")
    env["ISOLATE_ENV_PYTHON"] = "/usr/bin/python3.11"
    env["ISOLATE_OFFLINE"] = "true"
    env["ISOLATE_ALLOW_ROOT_TASKS"] = "true"  # a throwaway node with no tenants
    # Bytecode in a cache of the run's own, whatever sits next to the sources: warmed by the
    # first pushes (as pip compiles a package it installs), or, without it, never written, so
    # that every push compiles what it imports.
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
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


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str]
    # The file a push changes first, so that it stores a new version (None: not a push).
    change: Path | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the work directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="no bytecode cache: every push compiles the modules it imports",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="also push with the packages isolate, cli, localexec, envcache taken from DIR "
        "(another version of the project), in the same rounds",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-push-", dir=args.tmp))
    try:
        env = home_env(root, bytecode=not args.no_bytecode)
        isolate = isolate_command()
        subprocess.run([*isolate, "init"], env=env, check=True, capture_output=True)
        big, mixed, small = root / "big", root / "mixed", root / "small"
        make_folder(big, args.files, "bench.many")
        make_folder(mixed, args.files, "bench.mixed", data=True)
        make_folder(small, 2, "bench.one")
        files = count_files(big)
        module = Path("vendored", "pkg000", "sub0", "mod0.py")
        commands = {
            f"isolate push ({files} files)": Command(
                [*isolate, "push", str(big), "--json"], env, big / module
            ),
            "  the same, 1 in 10 data files": Command(
                [*isolate, "push", str(mixed), "--json"], env, mixed / module
            ),
            "isolate push (dag.py alone)": Command(
                [*isolate, "push", str(small), "--json"], env, small / "dag.py"
            ),
        }
        if args.compare is not None:
            other = {**env, "PYTHONPATH": str(args.compare.resolve())}
            tag = args.compare.name
            for name, folder in (
                (f"isolate push ({files} files), {tag}", big),
                (f"  1 in 10 data files, {tag}", mixed),
            ):
                commands[name] = Command(
                    [*isolate, "push", str(folder), "--json"], other, folder / module
                )
        commands["tar -czf (baseline)"] = Command(
            ["tar", "-czf", str(root / "out.tgz"), "-C", str(root), "big"], env
        )
        commands["tar -cf"] = Command(
            ["tar", "-cf", str(root / "out.tar"), "-C", str(root), "big"], env
        )
        # The first push of each builds the (empty) env and fills the bytecode cache.
        for command in commands.values():
            if command.change is not None:
                timed(command.argv, command.env, root)
        times: dict[str, list[float]] = {name: [] for name in commands}
        pushes = 0
        for round_ in range(args.rounds):
            order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
            for name in order:
                command = commands[name]
                if command.change is not None:
                    pushes += 1
                    if command.change.name == "dag.py":
                        text = DAG.format(dag_id="bench.one") + f"# {pushes}\n"
                    else:
                        text = f"V = {pushes}\n"
                    command.change.write_text(text)
                elapsed, out = timed(command.argv, command.env, root)
                if command.change is not None:
                    statuses = {r["status"] for r in json.loads(out)}
                    assert statuses == {"new"}, (name, statuses)
                times[name].append(elapsed)

        baseline = statistics.median(times["tar -czf (baseline)"])
        dirs = sum(len(names) for _, names, _ in os.walk(big))
        bytecode = "none (compiled at each push)" if args.no_bytecode else "cached, warmed"
        print(
            f"{files} files in {dirs} directories, {args.rounds} rounds, interleaved; env python "
            f"{env['ISOLATE_ENV_PYTHON']}, runner {sys.executable} ({sys.version.split()[0]}); "
            f"bytecode: {bytecode}"
        )
        if args.compare is not None:
            print(f"{args.compare.name}: the packages of {args.compare.resolve()}")
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
