"""``isolate gc`` over many envs: gather facts, plan, and collect, against a bare rmtree.

One real env is built with uv (an empty lock, so no network is needed), then cloned into
N envs with distinct keys: each clone hardlinks the files of the first (as envs sharing
objects do) and has its own manifest. 10% of the keys are roots. Timed:

- facts: reading every env's manifest and last use;
- plan: the pure decision (which to keep, which to remove, why);
- collect: removing the others (use lock, rename into trash, delete), pruning shared files,
  measuring bytes freed.

Baseline, in the same run: ``shutil.rmtree`` of the same number of identical clones.

    .venv/bin/python bench/bench_gc.py [--envs 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import stat
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from envcache import gc
from envcache.cache import EnvCache
from envcache.interpreter import Interpreter
from envcache.lockfile import parse_requirements
from envcache.manifest import MANIFEST_NAME, Manifest

PYTHON = "/usr/bin/python3.11"


def clone(source: Path, dest: Path) -> None:
    """A copy of ``source`` whose files are hardlinks (directories are new)."""
    for directory, dirnames, filenames in os.walk(source):
        target = dest / Path(directory).relative_to(source)
        target.mkdir()
        for name in filenames:
            path = Path(directory) / name
            if path.is_symlink():
                os.symlink(os.readlink(path), target / name)
            elif name != MANIFEST_NAME or directory != str(source):
                os.link(path, target / name)
        for name in dirnames:
            if (Path(directory) / name).is_symlink():
                os.symlink(os.readlink(Path(directory) / name), target / name)
                dirnames.remove(name)


def writable(root: Path) -> None:
    for directory, _dirs, _files in os.walk(root):
        os.chmod(directory, stat.S_IRWXU)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", type=int, default=1000)
    args = parser.parse_args()
    n = args.envs
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        root = Path(tmp)
        cache = EnvCache(root / "cache", offline=True)
        interpreter = Interpreter.probe(PYTHON)
        first = cache.ensure(parse_requirements(""), interpreter)
        manifest = Manifest.load(first.path)
        files = sum(1 for e in manifest.files.values() if e.type == "file")
        keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
        started = time.perf_counter()
        for key in keys:
            dest = cache.envs_dir / key
            clone(first.path, dest)
            (dest / MANIFEST_NAME).write_bytes(
                Manifest(**{**manifest.__dict__, "key": key}).to_bytes()
            )
        made = time.perf_counter() - started
        roots = {key: "bench root" for key in [first.key, *keys[: n // 10 - 1]]}

        t0 = time.perf_counter()
        found = gc.facts(cache)
        t1 = time.perf_counter()
        decided = gc.plan(found, roots, now=datetime.now(UTC))
        t2 = time.perf_counter()
        report = gc.collect(cache, decided, prune_tool_cache=False)
        t3 = time.perf_counter()
        assert len(report.removed) == n + 1 - len(roots) and not report.in_use

        baseline_root = root / "baseline"
        baseline_root.mkdir()
        doomed = [d.key for d in report.removed]
        for key in doomed:
            clone(first.path, baseline_root / key)
        writable(baseline_root)
        b0 = time.perf_counter()
        for key in doomed:
            shutil.rmtree(baseline_root / key)
        baseline = time.perf_counter() - b0

    removed = n + 1 - len(roots)
    print(f"{n} envs of {files} files each (cloned in {made:.1f}s)")
    print(f"{removed} removed, {len(roots)} roots; python {PYTHON}")
    print(f"{'step':<28} {'seconds':>8} {'per env (ms)':>13}")
    for name, seconds, count in (
        ("facts (read manifests)", t1 - t0, n),
        ("plan (pure)", t2 - t1, n),
        ("collect (remove + prune)", t3 - t2, removed),
        ("gc total", t3 - t0, removed),
        ("baseline: rmtree", baseline, removed),
    ):
        print(f"{name:<28} {seconds:>8.2f} {seconds / count * 1e3:>13.2f}")
    print(f"gc total / rmtree: {(t3 - t0) / baseline:.1f}x; bytes freed {report.bytes_freed}")


if __name__ == "__main__":
    main()
