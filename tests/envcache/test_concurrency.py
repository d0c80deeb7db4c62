"""Real concurrent processes: one build per key, and a build killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envcache.interpreter import Interpreter
from tests.envcache.builders import CountingUvBuilder
from tests.envcache.conftest import MakeCache, Wheelhouse

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def start_ensure(
    root: Path,
    lockfile: Path,
    wheelhouse: Wheelhouse,
    counter: Path,
    pause: float,
    barrier: Path | None = None,
) -> subprocess.Popen[str]:
    args = {
        "root": str(root),
        "lockfile": str(lockfile),
        "find_links": [str(wheelhouse.path)],
        "counter": str(counter),
        "pause": pause,
        "barrier": str(barrier) if barrier else None,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.envcache.ensure_main", json.dumps(args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_ensures_build_once(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter, tmp_path: Path
) -> None:
    lockfile = tmp_path / "requirements.txt"
    lockfile.write_text(wheelhouse.lock("tinylib==1.0", "otherlib==1.0"))
    counter = tmp_path / "builds.log"
    root = tmp_path / "cache"
    barrier = tmp_path / "go"
    # All six call ensure() at once; the pause keeps the first build going while the others wait.
    processes = [start_ensure(root, lockfile, wheelhouse, counter, 0.5, barrier) for _ in range(6)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*"))) < 6:
        assert all(process.poll() is None for process in processes)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    barrier.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        results.append(json.loads(out))

    assert CountingUvBuilder(counter).builds() == 1
    # They really waited for the build (a hit takes milliseconds, the build more than 0.5 s).
    assert all(r["seconds"] > 0.4 for r in results), results
    assert len({(r["key"], r["path"], r["inode"]) for r in results}) == 1
    cache = make_cache(root=root)
    assert cache.keys() == [results[0]["key"]]
    assert cache.verify(results[0]["key"], deep=True) == []
    assert list(cache.tmp_dir.iterdir()) == []


def test_a_build_killed_midway_leaves_no_env_and_the_next_ensure_succeeds(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter, tmp_path: Path
) -> None:
    lockfile = tmp_path / "requirements.txt"
    lockfile.write_text(wheelhouse.lock("tinylib==2.0"))
    counter = tmp_path / "builds.log"
    root = tmp_path / "cache"
    process = start_ensure(root, lockfile, wheelhouse, counter, 60)

    cache = make_cache(root=root)
    key = cache.key_for(cache.load_lock(lockfile), python311)
    deadline = time.monotonic() + 30
    # Killed in its pause, once uv is done: an orphaned uv still writing would recreate
    # what the next build removes.
    while not counter.with_suffix(".created").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.02)
    assert list(cache.tmp_dir.glob(f"{key}.*/bin/python"))
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL

    (stale,) = (path for path in cache.tmp_dir.iterdir() if path.is_dir())
    assert cache.keys() == [] and cache.get(key) is None

    env = cache.ensure(cache.load_lock(lockfile), python311)
    assert env.key == key
    assert not stale.exists() and list(cache.tmp_dir.iterdir()) == []
    done = subprocess.run(
        [str(env.python), "-c", "import tinylib; print(tinylib.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "2.0"
    assert CountingUvBuilder(counter).builds() == 1  # the killed one; ours doesn't count
