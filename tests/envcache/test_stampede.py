"""Cold builds of different keys at once share uv's cache without duplicating its work."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from envcache.interpreter import Interpreter
from tests.conftest import BIG, Wheelhouse
from tests.envcache.test_concurrency import start_ensure

pytestmark = pytest.mark.slow


def test_concurrent_cold_builds_of_different_keys_share_one_cache(
    wheelhouse: Wheelhouse, python311: Interpreter, tmp_path: Path
) -> None:
    big = [f"{name}==1.0" for name in BIG]
    extras = (["tinylib==1.0"], ["tinylib==2.0"], ["otherlib==1.0"], [])
    root = tmp_path / "cache"
    barrier = tmp_path / "go"
    processes = []
    for index, extra in enumerate(extras):
        lockfile = tmp_path / f"lock{index}.txt"
        lockfile.write_text(wheelhouse.lock(*big, *extra))
        processes.append(
            start_ensure(root, lockfile, wheelhouse, tmp_path / "builds.log", 0.0, barrier)
        )
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*"))) < len(extras):
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    barrier.touch()  # every process starts its cold build at once
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    assert len({r["key"] for r in results}) == len(extras)
    # uv unpacks each wheel into its cache once, however many builds wanted it at the same time.
    archives = [p for p in (root / "uv-cache").glob("archive-v*/*") if p.is_dir()]
    assert len(archives) == len(BIG) + 3
    # And each package tree is stored once for all the envs that link to it.
    trees = [p for p in (root / "objects" / "trees").iterdir() if p.is_dir()]
    digests_linked = set()
    for result in results:
        site = next(Path(result["path"]).glob("lib/python*/site-packages"))
        digests_linked |= {
            link.readlink().name
            for link in site.iterdir()
            if link.is_symlink() and link.name != ".trees"
        }
    assert len(trees) == len(digests_linked)
