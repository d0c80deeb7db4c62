"""Package trees shared between envs: real uv builds from the fixture wheelhouse, offline."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from envcache import gc, tree
from envcache.cache import EnvCache
from envcache.errors import CorruptEnvError
from envcache.interpreter import Interpreter
from envcache.lockfile import parse_requirements
from envcache.manifest import MANIFEST_NAME
from envcache.trees import LINK_DIR
from tests.conftest import BIG, Wheelhouse
from tests.envcache.conftest import MakeCache
from tests.envcache.test_build import run_in_env, tamper, writable
from tests.envcache.test_concurrency import start_ensure

pytestmark = pytest.mark.slow
SITE = "lib/python3.11/site-packages"


def two_envs(cache: EnvCache, wheelhouse: Wheelhouse, python: Interpreter) -> tuple[str, str]:
    """Two envs sharing pkg00 (and differing by tinylib); returns their keys."""
    one = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0", "pkg00==1.0")), python)
    two = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==2.0", "pkg00==1.0")), python)
    return one.key, two.key


def test_package_dirs_become_relative_links_to_one_shared_tree(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    one, two = (cache.get(key) for key in two_envs(cache, wheelhouse, python311))
    assert one is not None and two is not None
    digest = one.manifest.trees[f"{SITE}/pkg00"]
    assert two.manifest.trees[f"{SITE}/pkg00"] == digest
    assert one.manifest.trees[f"{SITE}/tinylib"] != two.manifest.trees[f"{SITE}/tinylib"]
    for env in (one, two):
        site = env.path / SITE
        assert os.readlink(site / LINK_DIR) == "../../../../../objects/trees"
        assert os.readlink(site / "pkg00") == f"{LINK_DIR}/{digest}"
        # Built in tmp/<key>.<rand>/, renamed to envs/<key>/: the relative links still resolve.
        assert (site / "pkg00").resolve() == cache.trees.path(digest).resolve()
        # ext4 keeps a symlink under 60 bytes in its inode: links cost no block.
        links = [env.path / path for path in env.manifest.trees] + [site / LINK_DIR]
        assert max(len(os.readlink(link)) for link in links) < 60
    assert len(list(cache.trees.root.glob(f"{digest}*"))) == 2  # the tree and its manifest
    # The env manifest names trees, not their files: small.
    assert not [path for path in two.manifest.files if path.startswith(f"{SITE}/pkg00")]
    assert (two.path / MANIFEST_NAME).stat().st_size < 8192
    assert cache.verify(one.key, deep=True) == cache.verify(two.key, deep=True) == []


def test_python_sees_modules_metadata_and_tracebacks_under_the_env(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    env = cache.get(two_envs(cache, wheelhouse, python311)[1])
    assert env is not None
    site = env.path / SITE
    code = (
        "import importlib.metadata as md, traceback, pkg00, pkg00.data\n"
        "print(pkg00.__file__); print(pkg00.data.f3.__code__.co_filename)\n"
        "print(md.version('pkg00')); print(md.distribution('pkg00').locate_file('pkg00'))\n"
        "try:\n    pkg00.f1(None)\nexcept TypeError as e:\n"
        "    print(traceback.extract_tb(e.__traceback__)[-1].filename)\n"
    )
    assert run_in_env(env.python, code).splitlines() == [
        str(site / "pkg00" / "__init__.py"),
        str(site / "pkg00" / "data.py"),
        "1.0",
        str(site / "pkg00"),
        str(site / "pkg00" / "__init__.py"),
    ]


def test_shared_trees_are_readable_by_everyone_and_writable_by_nobody(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    env = cache.get(two_envs(cache, wheelhouse, python311)[0])
    assert env is not None
    digest = env.manifest.trees[f"{SITE}/pkg00"]
    target = cache.trees.path(digest) / "__pycache__" / "data.cpython-311.pyc"
    assert target.is_file()
    for directory in [*reversed(target.parents[: len(target.relative_to(cache.root).parts) - 1])]:
        assert directory.stat().st_mode & stat.S_IXOTH, directory
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o755
    assert target.stat().st_mode & stat.S_IROTH
    assert stat.S_IMODE(cache.trees.manifest_path(digest).stat().st_mode) == 0o444
    stored = cache.trees.path(digest)
    for path in [stored, *stored.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode in ((0o555,) if path.is_dir() else (0o444, 0o555)), path
    # Everything else of objects/ stays private; objects/ itself is only traversable.
    assert stat.S_IMODE(cache.objects.root.stat().st_mode) == 0o711
    assert stat.S_IMODE(cache.objects.files_dir.stat().st_mode) == 0o700


def test_tampering_in_a_shared_tree_is_detected_in_every_env_and_a_rebuild_repairs_it(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    keys = two_envs(cache, wheelhouse, python311)
    module = cache.envs_dir / keys[0] / SITE / "pkg00" / "data.py"
    relative = f"{SITE}/pkg00/data.py"
    original = module.read_bytes()
    with writable(module.parent):
        module.unlink()  # break the hardlink with uv's cache, as a careful admin would
        module.write_bytes(original.replace(b"+ 1\n", b"- 1\n"))
    module.chmod(0o444)
    for key in keys:
        assert cache.verify(key) == []
        assert cache.verify(key, deep=True) == [f"{relative}: content changed (sha256 differs)"]
    tamper(module, original + b"x = 1\n")
    lock = parse_requirements(wheelhouse.lock("tinylib==1.0", "pkg00==1.0"))
    for key in keys:
        assert cache.verify(key) == [f"{relative}: size {len(original) + 6}, was {len(original)}"]
    with pytest.raises(CorruptEnvError, match="was modified after its build"):
        cache.ensure(lock, python311)

    # Rebuilding one env never links the damaged tree: it stores a good one, for both envs.
    assert cache.remove(keys[0])
    assert cache.ensure(lock, python311).key == keys[0]
    assert module.read_bytes() == original
    assert [cache.verify(key, deep=True) for key in keys] == [[], []]


def test_an_env_whose_tree_is_gone_is_corrupt(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    lock = parse_requirements(wheelhouse.lock("tinylib==1.0"))
    env = cache.ensure(lock, python311)
    digest = env.manifest.trees[f"{SITE}/tinylib"]
    tree.move_dir(cache.trees.path(digest), cache.root / "elsewhere")
    assert cache.verify(env.key) == [f"{SITE}/tinylib: shared tree {digest} is missing"]
    with pytest.raises(CorruptEnvError, match="is missing"):
        cache.ensure(lock, python311)
    # A link pointed elsewhere is seen too.
    tree.move_dir(cache.root / "elsewhere", cache.trees.path(digest))
    link = env.path / SITE / "tinylib"
    (env.path / SITE).chmod(0o755)
    link.unlink()
    link.symlink_to(f"{LINK_DIR}/{'a' * 52}")
    (env.path / SITE).chmod(0o555)
    assert cache.verify(env.key) == [f"{SITE}/tinylib: points to '{LINK_DIR}/{'a' * 52}'"]


def test_only_trees_new_to_the_cache_are_compiled(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    first = cache.ensure(
        parse_requirements(wheelhouse.lock(*(f"{n}==1.0" for n in BIG))), python311
    )
    stored = {
        digest: cache.trees.path(digest).stat().st_mtime_ns
        for digest in first.manifest.trees.values()
    }
    pins = [f"{n}==1.0" for n in BIG] + ["tinylib==1.0"]
    second = cache.ensure(parse_requirements(wheelhouse.lock(*pins)), python311)
    new = set(second.manifest.trees.values()) - set(stored)
    assert {cache.trees.load(d).name for d in new} == {"tinylib", "tinylib-1.0.dist-info"}
    # The other trees were linked as they were: not compiled (nor moved) again.
    assert {d: cache.trees.path(d).stat().st_mtime_ns for d in stored} == stored
    assert second.manifest.shared_size == first.manifest.shared_size + sum(
        cache.trees.load(d).size for d in new
    )


def test_dedupe_false_shares_nothing(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache(dedupe=False)
    env = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0", "pkg00==1.0")), python311)
    assert env.manifest.trees == {} and env.manifest.links.deduplicated == 0
    assert not [p for p in env.path.rglob("*") if p.is_symlink() and "site-packages" in str(p)]
    assert f"{SITE}/pkg00/__pycache__/data.cpython-311.pyc" in env.manifest.files
    assert set(cache.objects.root.rglob("*")) == {cache.trees.root, cache.objects.files_dir}
    assert cache.verify(env.key, deep=True) == []


def test_gc_prunes_trees_no_env_links_to_and_waits_for_builds(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    one, two = two_envs(cache, wheelhouse, python311)
    one_env, two_env = cache.get(one), cache.get(two)
    assert one_env is not None and two_env is not None
    only_one = set(one_env.manifest.trees.values()) - set(two_env.manifest.trees.values())
    assert len(only_one) == 2  # tinylib 1.0 and its dist-info
    # Leftovers of killed publishes: a tree without its manifest, a half-written manifest.
    (cache.trees.root / ("z" * 52)).mkdir()
    (cache.trees.root / f".{'z' * 52}.0000.json").write_text("{")
    plan = gc.plan(gc.facts(cache), {two: "root"}, now=datetime.now(UTC))
    assert [d.key for d in plan.remove] == [one]

    # A build in progress holds the gc lock shared: nothing shared is pruned meanwhile.
    with cache.gc_lock().shared():
        report = gc.collect(cache, plan, prune_tool_cache=False)
    assert [d.key for d in report.removed] == [one] and not report.shared_pruned
    assert all(cache.trees.has(digest) for digest in only_one)

    report = gc.collect(cache, gc.GcPlan(), prune_tool_cache=False)
    assert report.shared_pruned and report.trees_removed == 3 and report.bytes_freed > 0
    assert sorted(os.listdir(cache.trees.root)) == sorted(
        name for d in two_env.manifest.trees.values() for name in (d, f"{d}.json")
    )
    assert cache.verify(two, deep=True) == [] and list(cache.trash_dir.iterdir()) == []
    assert run_in_env(two_env.python, "import pkg00, tinylib; print(tinylib.VERSION)") == "2.0"


def test_gc_removes_an_env_its_trees_and_uv_cache_entries_and_the_cache_can_go(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    one, two = two_envs(cache, wheelhouse, python311)
    plan = gc.plan(gc.facts(cache), {two: "root"}, now=datetime.now(UTC))
    report = gc.collect(cache, plan)  # uv's cache is pruned too: an env went
    assert [d.key for d in report.removed] == [one] and report.trees_removed == 2
    assert cache.keys() == [two] and list(cache.trash_dir.iterdir()) == []
    assert cache.verify(two, deep=True) == []
    # Read-only envs, trees and uv's cache entries: all removable by the cache's owner.
    tree.remove_tree(cache.root)
    assert not cache.root.exists()


def test_gc_keeps_the_trees_of_an_env_with_an_unreadable_manifest(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    env = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0")), python311)
    with writable(env.path):
        (env.path / MANIFEST_NAME).unlink()
    assert gc.prune_shared(cache) == 0
    assert all(cache.trees.has(digest) for digest in env.manifest.trees.values())


def test_concurrent_builds_store_a_common_tree_once(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter, tmp_path: Path
) -> None:
    root, barrier = tmp_path / "cache", tmp_path / "go"
    processes = []
    for number, pins in enumerate([("tinylib==1.0", *BIG), ("tinylib==2.0", *BIG)]):
        lockfile = tmp_path / f"requirements{number}.txt"
        lockfile.write_text(wheelhouse.lock(*(p if "==" in p else f"{p}==1.0" for p in pins)))
        counter = tmp_path / f"builds{number}.log"
        processes.append(start_ensure(root, lockfile, wheelhouse, counter, 0.0, barrier))
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*"))) < 2:
        assert all(process.poll() is None for process in processes) and time.monotonic() < deadline
        time.sleep(0.01)
    barrier.touch()
    keys = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        keys.append(json.loads(out)["key"])

    cache = make_cache(root=root)
    envs = [cache.get(key) for key in keys]
    assert all(env is not None for env in envs)
    digests = [env.manifest.trees for env in envs if env is not None]
    assert digests[0][f"{SITE}/pkg00"] == digests[1][f"{SITE}/pkg00"]
    stored = {*digests[0].values(), *digests[1].values()}
    assert sorted(os.listdir(cache.trees.root)) == sorted(
        name for d in stored for name in (d, f"{d}.json")
    )
    assert [cache.verify(key, deep=True) for key in keys] == [[], []]
    assert list(cache.tmp_dir.iterdir()) == [] and list(cache.trash_dir.iterdir()) == []


def test_trees_are_usable_by_an_unprivileged_user(
    make_cache: MakeCache,
    wheelhouse: Wheelhouse,
    python311: Interpreter,
    request: pytest.FixtureRequest,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    nobody = 65534
    # pytest's tmp dirs are private: a cache under a directory every user can traverse.
    shared = Path(tempfile.mkdtemp(prefix="envcache-trees-", dir="/tmp"))
    shared.chmod(0o755)
    request.addfinalizer(lambda: tree.remove_tree(shared))
    cache = make_cache(root=shared / "cache")
    env = cache.get(two_envs(cache, wheelhouse, python311)[0])
    assert env is not None
    code = "import pkg00.data, tinylib; print(pkg00.data.f2(1), tinylib.VERSION)"
    done = subprocess.run(
        [str(env.python), "-B", "-c", code],
        capture_output=True,
        text=True,
        env={},
        user=nobody,
        group=nobody,
        extra_groups=[],
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "3 1.0"), done.stderr
