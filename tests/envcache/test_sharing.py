"""What envs share beyond whole trees: files between trees, empty dirs, reproducible installs,
and the compressed manifest. Real uv builds from wheelhouses made here, offline."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from envcache import gc
from envcache.backends import UV_CACHE_INFO
from envcache.cache import EnvCache
from envcache.errors import CorruptEnvError
from envcache.interpreter import Interpreter
from envcache.lockfile import parse_requirements
from envcache.manifest import LEGACY_MANIFEST_NAME, MANIFEST_NAME, Manifest
from tests.conftest import Wheelhouse
from tests.envcache.conftest import MakeCache
from tests.envcache.test_build import run_in_env

pytestmark = pytest.mark.slow
SITE = "lib/python3.11/site-packages"
NOW = datetime(2100, 1, 1, tzinfo=UTC)
COMMON = "".join(f"def g{i}(x):\n    return x * {i}\n" for i in range(40))


@pytest.fixture
def twins(tmp_path: Path) -> Wheelhouse:
    """Two versions of ``twin`` that differ in one module and share another, and a package
    whose wheel has an empty directory."""
    house = Wheelhouse(tmp_path / "twins")
    for version in ("1.0", "2.0"):
        files = {
            "twin/__init__.py": f'VERSION = "{version}"\n',
            "twin/common.py": COMMON,
            f"twin-{version}.dist-info/LICENSE": "Same terms for every version.\n" * 40,
        }
        house.add("twin", version, files=files)
    house.add("hollow", "1.0", dirs=("hollow.libs",))
    return house


def build(cache: EnvCache, house: Wheelhouse, python: Interpreter, *pins: str) -> Path:
    return cache.ensure(parse_requirements(house.lock(*pins)), python).path


def test_installs_keep_no_uv_cache_info_so_wheelhouse_copies_share_trees(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter, tmp_path: Path
) -> None:
    # The same wheels in a second directory, with other modification times: uv would record
    # those times in each dist-info, and the trees would differ.
    copy = tmp_path / "copy"
    shutil.copytree(wheelhouse.path, copy)
    for wheel in copy.iterdir():
        os.utime(wheel, (1_000_000_000, 1_000_000_000))
    one = make_cache().ensure(
        parse_requirements(wheelhouse.lock("tinylib==1.0", "pkg00==1.0")), python311
    )
    two = make_cache(find_links=[copy]).ensure(
        parse_requirements(wheelhouse.lock("tinylib==2.0", "pkg00==1.0")), python311
    )
    info = f"{SITE}/pkg00-1.0.dist-info"
    assert one.manifest.trees[info] == two.manifest.trees[info]
    for env in (one, two):
        assert not list(env.path.glob(f"{SITE}/*.dist-info/{UV_CACHE_INFO}"))
        assert UV_CACHE_INFO not in (env.path / info / "RECORD").read_text()
    # RECORD names exactly what is installed: every file it lists exists.
    code = (
        "import importlib.metadata as md\n"
        "files = md.files('pkg00')\n"
        "print(len(files), all(f.locate().exists() for f in files))"
    )
    count, complete = run_in_env(two.python, code).split()
    assert int(count) >= 5 and complete == "True"


def test_identical_files_of_two_trees_share_one_inode_until_gc(
    make_cache: MakeCache, twins: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache(find_links=[twins.path])
    one = build(cache, twins, python311, "twin==1.0")
    two = build(cache, twins, python311, "twin==2.0")
    assert os.readlink(one / SITE / "twin") != os.readlink(two / SITE / "twin")  # two trees
    same = [
        "twin/common.py",
        "twin/__pycache__/common.cpython-311.pyc",  # made at publish, not from uv's cache
        "twin-{v}.dist-info/LICENSE",
        "twin-{v}.dist-info/INSTALLER",
    ]
    for relative in same:
        first = (one / SITE / relative.format(v="1.0")).stat()
        second = (two / SITE / relative.format(v="2.0")).stat()
        assert (first.st_ino, first.st_dev) == (second.st_ino, second.st_dev), relative
    init = [(env / SITE / "twin/__init__.py").stat().st_ino for env in (one, two)]
    assert init[0] != init[1]
    assert run_in_env(one / "bin/python", "import twin.common as c; print(c.g3(2))") == "6"

    common_pyc = two / SITE / "twin/__pycache__/common.cpython-311.pyc"
    links = common_pyc.stat().st_nlink
    one_key, two_key = one.name, two.name
    plan = gc.plan(gc.facts(cache), {two_key: "root"}, now=NOW)
    report = gc.collect(cache, plan, prune_tool_cache=False)
    assert [d.key for d in report.removed] == [one_key]
    assert common_pyc.stat().st_nlink == links - 1  # tree one is gone, the object stays
    assert cache.verify(two_key, deep=True) == []
    assert run_in_env(two / "bin/python", "import twin; print(twin.VERSION)") == "2.0"

    report = gc.collect(cache, gc.plan(gc.facts(cache), {}, now=NOW), prune_tool_cache=False)
    assert [d.key for d in report.removed] == [two_key]
    # Only objects still linked from uv's cache remain (it is pruned with the tool's cache).
    left = list(cache.objects.files_dir.iterdir())
    assert all(path.stat().st_nlink > 1 for path in left)
    assert not [path for path in left if path.name.endswith(".pyc")]
    assert os.listdir(cache.trees.root) == []


def test_an_empty_package_directory_is_one_shared_tree(
    make_cache: MakeCache, twins: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache(find_links=[twins.path])
    one = build(cache, twins, python311, "hollow==1.0", "twin==1.0")
    two = build(cache, twins, python311, "hollow==1.0", "twin==2.0")
    targets = {os.readlink(env / SITE / "hollow.libs") for env in (one, two)}
    assert len(targets) == 1
    stored = cache.trees.path(targets.pop().rsplit("/", 1)[-1])
    assert stored.is_dir() and os.listdir(stored) == []
    assert cache.verify(one.name, deep=True) == cache.verify(two.name, deep=True) == []


def test_the_manifest_is_compressed_and_older_envs_are_still_read(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter, tmp_path: Path
) -> None:
    cache = make_cache()
    env = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0", "pkg00==1.0")), python311)
    stored = (env.path / MANIFEST_NAME).read_bytes()
    assert stored[:2] == b"\x1f\x8b" and len(stored) <= 4096  # gzip, one block
    text = gzip.decompress(stored).decode()
    assert json.loads(text)["format"] == 3 and Manifest.from_json(text) == env.manifest
    assert not (env.path / LEGACY_MANIFEST_NAME).exists()

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    data = json.loads(text)
    data["format"] = 2
    (legacy / LEGACY_MANIFEST_NAME).write_text(json.dumps(data))
    assert Manifest.load(legacy).key == env.key

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST_NAME).write_bytes(stored[: len(stored) // 2])  # cut short
    with pytest.raises(CorruptEnvError, match="unreadable manifest"):
        Manifest.load(broken)
    (broken / MANIFEST_NAME).write_bytes(b"not gzip at all")
    with pytest.raises(CorruptEnvError, match="unreadable manifest"):
        Manifest.load(broken)
