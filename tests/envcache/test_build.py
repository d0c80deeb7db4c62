"""Real builds with real uv (and virtualenv+pip) from the fixture wheelhouse, offline."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from envcache.backends import VirtualenvPipBuilder
from envcache.cache import EnvCache
from envcache.errors import BuildError, CorruptEnvError, EnvCacheError, LockfileError
from envcache.interpreter import Interpreter
from envcache.lockfile import parse_requirements
from envcache.manifest import MANIFEST_NAME, Manifest
from tests.conftest import BIG, PYTHON, Wheelhouse
from tests.envcache.builders import CountingUvBuilder
from tests.envcache.conftest import MakeCache

pytestmark = pytest.mark.slow


def run_in_env(env_python: Path, code: str) -> str:
    done = subprocess.run(
        [str(env_python), "-c", code], capture_output=True, text=True, check=True, env={}
    )
    return done.stdout.strip()


def site_packages(path: Path) -> Path:
    (found,) = path.glob("lib/python3.*/site-packages")
    return found


def test_uv_build_gives_a_read_only_verified_hardlinked_env(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    lock = parse_requirements(wheelhouse.lock("tinylib==1.0", "otherlib==1.0"))
    env = cache.ensure(lock, python311)

    assert env.path == cache.envs_dir / env.key == cache.envs_dir / cache.key_for(lock, python311)
    assert run_in_env(env.python, "import tinylib, otherlib; print(tinylib.VERSION)") == "1.0"
    assert run_in_env(env.python, "import sys; print(sys.prefix)") == str(env.path)
    # Bytecode compiled at build time: tasks can't write into the env.
    assert list(site_packages(env.path).glob("tinylib/__pycache__/*.pyc"))

    manifest = Manifest.load(env.path)
    assert manifest == env.manifest
    assert manifest.key == env.key and manifest.builder == "uv"
    assert manifest.tools == {"uv": manifest.tools["uv"]} and manifest.created.endswith("+00:00")
    assert manifest.lock == lock.canonical(python311.marker_env)
    assert manifest.interpreter == python311.identity()
    # The package is a shared tree: the env records its digest, the tree its files.
    digest = manifest.trees["lib/python3.11/site-packages/tinylib"]
    assert "lib/python3.11/site-packages/tinylib/__init__.py" not in manifest.files
    assert "__init__.py" in cache.trees.load(digest).files
    assert manifest.files["bin/python"].target == PYTHON
    assert manifest.total_size > manifest.shared_size > 0
    assert cache.verify(env.key, deep=True) == []

    # Hardlinked from uv's cache: the installed module shares its inode with a cache file.
    assert manifest.links.requested == "hardlink" and manifest.links.hardlinked >= 4
    assert env.warnings == []
    module = os.stat(site_packages(env.path) / "tinylib" / "__init__.py")
    assert module.st_nlink > 1
    cached = {p.stat().st_ino for p in cache.tool_cache_dir.rglob("__init__.py")}
    assert module.st_ino in cached

    # Read-only for everyone (the owner is root or uses chmod on purpose), trees included.
    stored = [cache.trees.path(d) for d in manifest.trees.values()]
    for path in [
        env.path,
        *env.path.rglob("*"),
        *stored,
        *(p for t in stored for p in t.rglob("*")),
    ]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        expected = (0o555,) if stat.S_ISDIR(info.st_mode) else (0o444, 0o555)
        assert stat.S_IMODE(info.st_mode) in expected, path
    assert stat.S_IMODE(os.stat(env.python).st_mode) == 0o755  # /usr/bin/python3.11 itself
    modes = {
        name: stat.S_IMODE(os.stat(cache.root / name).st_mode)
        for name in ("", "envs", "tmp", "locks", "trash", "uv-cache", "objects", "objects/trees")
    }
    assert modes == {
        "": 0o755,
        "envs": 0o755,
        "tmp": 0o700,
        "locks": 0o700,
        "trash": 0o700,
        "uv-cache": 0o700,
        "objects": 0o711,
        "objects/trees": 0o755,
    }
    assert stat.S_IMODE(cache.objects.files_dir.stat().st_mode) == 0o700
    assert list(cache.tmp_dir.iterdir()) == []


def test_second_ensure_is_a_hit_without_a_build(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter, tmp_path: Path
) -> None:
    builder = CountingUvBuilder(tmp_path / "builds.log")
    cache = make_cache(builder)
    lock = parse_requirements(wheelhouse.lock("tinylib==1.0"))
    first = cache.ensure(lock, python311)
    inode = first.path.stat().st_ino

    reordered = parse_requirements("# same lock, new text\n" + wheelhouse.lock("tinylib==1.0"))
    started = time.perf_counter()
    again = make_cache(builder).ensure(reordered, python311)
    elapsed = time.perf_counter() - started

    assert builder.builds() == 1
    assert (again.key, again.path.stat().st_ino) == (first.key, inode)
    assert list(cache.tmp_dir.iterdir()) == []
    assert elapsed < 0.5
    assert [env.key for env in cache.list()] == cache.keys() == [first.key]
    assert cache.get(first.key) == first
    assert cache.get("0" * 64) is None


def test_two_versions_of_a_library_give_two_envs(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    one = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0")), python311)
    two = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==2.0")), python311)
    assert one.key != two.key
    assert run_in_env(one.python, "import tinylib; print(tinylib.VERSION)") == "1.0"
    assert run_in_env(two.python, "import tinylib; print(tinylib.VERSION)") == "2.0"
    assert sorted(env.key for env in cache.list()) == sorted([one.key, two.key])


def test_only_entries_whose_markers_apply_are_installed(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    text = wheelhouse.lock("tinylib==1.0")
    text += f'otherlib==1.0 ; python_version < "3" --hash={wheelhouse.hashes["otherlib==1.0"]}\n'
    env = make_cache().ensure(parse_requirements(text), python311)
    assert run_in_env(env.python, "import tinylib; print(tinylib.VERSION)") == "1.0"
    assert not list(site_packages(env.path).glob("otherlib*"))


def test_virtualenv_pip_backend_builds_an_equivalent_env(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    lock = parse_requirements(wheelhouse.lock("tinylib==2.0", "otherlib==1.0"))
    uv_env = make_cache().ensure(lock, python311)
    pip_env = make_cache(VirtualenvPipBuilder()).ensure(lock, python311)
    assert pip_env.key != uv_env.key
    assert pip_env.manifest.builder == "virtualenv-pip"
    assert set(pip_env.manifest.tools) == {"virtualenv", "pip"}
    assert pip_env.manifest.links.requested == "copy" and pip_env.warnings == []
    code = "import sys, tinylib, otherlib; print(tinylib.VERSION, sys.prefix)"
    assert run_in_env(pip_env.python, code) == f"2.0 {pip_env.path}"
    assert list(site_packages(pip_env.path).glob("tinylib/__pycache__/*.pyc"))
    assert make_cache(VirtualenvPipBuilder()).verify(pip_env.key, deep=True) == []


def test_a_failed_build_raises_with_uvs_output_and_leaves_nothing(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    good = wheelhouse.hashes["tinylib==1.0"]
    wrong = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
    lock = parse_requirements(f"tinylib==1.0 --hash={wrong}\n")
    with pytest.raises(BuildError) as caught:
        cache.ensure(lock, python311)
    assert "uv pip sync failed (exit 1): error: Failed to download" in str(caught.value)
    assert str(caught.value).endswith(
        "; a file does not match the lock's hash: lock again, or fix the wheelhouse's copy"
    )
    assert "Hash mismatch" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert wrong.split(":")[1] in caught.value.output and good.split(":")[1] in caught.value.output
    assert list(cache.tmp_dir.iterdir()) == []
    assert cache.keys() == []
    assert cache.get(cache.key_for(lock, python311)) is None


def test_a_missing_wheel_fails_offline(
    make_cache: MakeCache, python311: Interpreter, tmp_path: Path
) -> None:
    cache = make_cache(find_links=[tmp_path / "empty"])
    (tmp_path / "empty").mkdir()
    lock = parse_requirements(f"nosuchlib==1.0 --hash=sha256:{'a' * 64}\n")
    with pytest.raises(BuildError, match="nosuchlib") as caught:
        cache.ensure(lock, python311)
    # Said as what it is, not as a hash to check.
    assert "in neither the wheelhouse nor the index" in str(caught.value)
    assert "hash" not in str(caught.value).split(";")[-1]
    assert list(cache.tmp_dir.iterdir()) == []


def test_an_inaccessible_interpreter_is_refused_before_building(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter, tmp_path: Path
) -> None:
    private = dataclasses.replace(python311, path=str(tmp_path / "python3.11"))
    (tmp_path / "python3.11").write_bytes(b"")
    cache = make_cache(shared=True)  # a node's: its envs are run by other users
    with pytest.raises(EnvCacheError, match="cannot be used by the unprivileged users"):
        cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0")), private)
    assert not cache.root.exists()


def test_direct_references_need_the_cache_policy(
    make_cache: MakeCache, python311: Interpreter
) -> None:
    lock = parse_requirements(
        f"t @ https://x/t-1.0-py3-none-any.whl --hash=sha256:{'a' * 64}\n",
        allow_direct_references=True,
    )
    with pytest.raises(LockfileError, match="direct reference 'https://x/t-1.0-py3-none-any.whl'"):
        make_cache().ensure(lock, python311)


def tamper(path: Path, data: bytes) -> None:
    """What a careless admin does: make a read-only file writable and overwrite it."""
    path.chmod(0o644)
    path.write_bytes(data)
    path.chmod(0o444)


@contextmanager
def writable(directory: Path) -> Iterator[None]:
    """Let the body add, remove or rename entries of the read-only ``directory`` (root may,
    whatever its mode; its owner must make it writable first), then restore its mode."""
    mode = stat.S_IMODE(directory.stat().st_mode)
    directory.chmod(mode | stat.S_IWUSR)
    try:
        yield
    finally:
        directory.chmod(mode)


def test_a_tampered_env_is_detected(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    lock = parse_requirements(wheelhouse.lock("tinylib==1.0"))
    env = cache.ensure(lock, python311)
    module = site_packages(env.path) / "tinylib" / "__init__.py"
    relative = str(module.relative_to(env.path))
    original = module.read_bytes()

    # Same size, other content: only a deep verification sees it.
    tamper(module, original.replace(b"1.0", b"6.6"))
    assert cache.verify(env.key) == []
    assert cache.verify(env.key, deep=True) == [f"{relative}: content changed (sha256 differs)"]

    # Another size: the quick verification (and so ensure) sees it.
    tamper(module, original + b"import os\n")
    assert cache.verify(env.key) == [f"{relative}: size {len(original) + 10}, was {len(original)}"]
    with pytest.raises(CorruptEnvError, match=f"env {env.key} was modified after its build"):
        cache.ensure(lock, python311)

    tamper(module, original)
    assert cache.verify(env.key, deep=True) == []
    module.chmod(0o666)
    assert cache.verify(env.key) == [f"{relative}: mode 0666, was 0444"]
    module.chmod(0o444)


def test_planted_and_removed_files_are_detected(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    env = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0")), python311)
    packages = site_packages(env.path)
    packages.chmod(0o755)
    (packages / "evil.pth").write_text("import os\n")
    assert cache.verify(env.key) == [
        "lib/python3.11/site-packages/evil.pth: not in the manifest",
        "lib/python3.11/site-packages: mode 0755, was 0555",
    ]
    (packages / "evil.pth").unlink()
    with writable(packages / "tinylib"):
        (packages / "tinylib" / "__init__.py").rename(packages / "moved.py")  # out of the tree
    assert cache.verify(env.key) == [
        "lib/python3.11/site-packages/moved.py: not in the manifest",
        "lib/python3.11/site-packages: mode 0755, was 0555",
        "lib/python3.11/site-packages/tinylib/__init__.py: missing",
    ]
    with writable(env.path):
        (env.path / MANIFEST_NAME).unlink()
    assert "has no manifest" in cache.verify(env.key)[0]
    with pytest.raises(CorruptEnvError, match="has no manifest"):
        cache.get(env.key)
    assert cache.list() == [] and cache.keys() == [env.key]


def test_the_callers_uv_environment_does_not_change_the_build(
    make_cache: MakeCache,
    wheelhouse: Wheelhouse,
    python311: Interpreter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UV_LINK_MODE", "copy")
    monkeypatch.setenv("UV_NO_BINARY", "1")
    env = make_cache().ensure(parse_requirements(wheelhouse.lock("tinylib==1.0")), python311)
    assert env.manifest.links.hardlinked > 0


def test_copying_instead_of_hardlinking_is_reported(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter, tmp_path: Path
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the tests' tmp dir")
    cache = make_cache()
    cache.root.mkdir()
    with tempfile.TemporaryDirectory(dir=shm, prefix="envcache-test-") as other_fs:
        (cache.root / "uv-cache").symlink_to(other_fs)
        env = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0")), python311)
    assert env.manifest.links.hardlinked == 0
    assert env.warnings and "no file was hardlinked from uv's cache" in env.warnings[0]
    assert run_in_env(env.python, "import tinylib; print(tinylib.VERSION)") == "1.0"


def test_a_ten_package_lock(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    pins = [f"{name}==1.0" for name in BIG]
    env = make_cache().ensure(parse_requirements(wheelhouse.lock(*pins)), python311)
    code = f"import {', '.join(BIG)}; print(pkg09.f9(1))"
    assert run_in_env(env.python, code) == "10"
    assert env.manifest.links.hardlinked >= 40


def test_use_holds_a_shared_lock_that_blocks_removal(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    env = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0")), python311)
    probe = (
        "import sys; from envcache.cache import EnvCache\n"
        "cache = EnvCache(sys.argv[1])\n"
        "with cache.use_lock(sys.argv[2]).try_exclusive() as taken:\n"
        "    print('taken' if taken else 'busy')\n"
    )

    def other_process_tries() -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(cache.root), env.key],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    with cache.use(env.key) as used:
        assert used == env
        assert other_process_tries() == "busy"
        with cache.use(env.key):  # tasks share it
            assert other_process_tries() == "busy"
        assert cache.remove(env.key) is False
        assert env.path.is_dir()
    assert other_process_tries() == "taken"
    assert cache.remove(env.key) is True
    assert not env.path.exists() and list(cache.trash_dir.iterdir()) == []
    with pytest.raises(EnvCacheError, match=f"no env {env.key}"), cache.use(env.key):
        pass
    # Removed, then built again on demand.
    assert (
        cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0")), python311).key == env.key
    )


def test_keys_are_checked_before_touching_paths(make_cache: MakeCache) -> None:
    cache: EnvCache = make_cache()
    with pytest.raises(EnvCacheError, match="is not an env key"):
        cache.get("../../etc")
    with pytest.raises(EnvCacheError, match="no env"):
        cache.verify("f" * 64)


def test_an_empty_lock_gives_a_bare_env_without_warnings(
    make_cache: MakeCache, python311: Interpreter
) -> None:
    env = make_cache().ensure(parse_requirements("# stdlib only\n"), python311)
    assert run_in_env(env.python, "import sys; print(sys.prefix)") == str(env.path)
    assert env.manifest.links.hardlinked == 0 and env.warnings == []


def test_identical_files_are_shared_between_envs(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    one = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0", "pkg00==1.0")), python311)
    two = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==2.0", "pkg00==1.0")), python311)
    pyc = "lib/python3.11/site-packages/pkg00/__pycache__/data.cpython-311.pyc"
    assert (one.path / pyc).stat().st_ino == (two.path / pyc).stat().st_ino  # one shared tree
    assert (one.path / "pyvenv.cfg").stat().st_ino == (two.path / "pyvenv.cfg").stat().st_ino
    assert two.manifest.links.deduplicated > 0
    # The shared .pyc holds no build path: code objects report the env's real file.
    code = "import pkg00.data as m; print(m.f1.__code__.co_filename)"
    assert run_in_env(two.python, code) == str(
        two.path / "lib/python3.11/site-packages/pkg00/data.py"
    )
    assert cache.verify(one.key, deep=True) == cache.verify(two.key, deep=True) == []


def test_an_env_appears_under_its_key_read_only_in_one_rename(
    make_cache: MakeCache,
    wheelhouse: Wheelhouse,
    python311: Interpreter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = make_cache()
    renames: list[tuple[Path, Path, int]] = []
    real_rename = os.rename

    def rename(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        mode = stat.S_IMODE(os.lstat(source).st_mode)
        renames.append((Path(source), Path(target), mode))
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    env = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==1.0")), python311)
    monkeypatch.undo()
    into_envs = [(s, t, mode) for s, t, mode in renames if t.parent == cache.envs_dir]
    # Moved while writable and private to a name that is no key, made read-only there, then
    # renamed within envs/: what a plain user may do, and nobody sees a writable env.
    ((built, staged, private), (source, target, final)) = into_envs
    assert built.parent == cache.tmp_dir and private == 0o700
    assert staged.name == f".{built.name}" and source == staged
    assert target == env.path and final == 0o555
    assert sorted(os.listdir(cache.envs_dir)) == [env.key]


def test_a_build_killed_before_its_last_rename_is_no_env_and_is_removed_by_the_next(
    make_cache: MakeCache, wheelhouse: Wheelhouse, python311: Interpreter
) -> None:
    cache = make_cache()
    other = cache.ensure(parse_requirements(wheelhouse.lock("tinylib==2.0")), python311)
    lock = parse_requirements(wheelhouse.lock("tinylib==1.0"))
    key = cache.key_for(lock, python311)
    staged = cache.envs_dir / f".{key}.k1ll3d_0"
    (staged / "bin").mkdir(parents=True)
    (staged / "bin" / "python").symlink_to(PYTHON)
    (staged / "bin").chmod(0o555)
    staged.chmod(0o555)
    assert cache.keys() == [other.key] and cache.get(key) is None
    env = cache.ensure(lock, python311)
    assert sorted(os.listdir(cache.envs_dir)) == sorted([other.key, env.key])
    assert cache.verify(env.key, deep=True) == []
