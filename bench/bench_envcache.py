"""What the env cache costs and saves, against baselines measured in the same run.

Real packages: a pinned, pure-Python-ish lock of 12 PyPI packages for CPython 3.11 (requests
and its dependencies, click, jinja2 + markupsafe, python-dateutil + six, attrs, packaging),
plus 20 versions of ``zipp`` as the "one small package" that differs between locks. The
wheels are downloaded once with pip into ``--wheelhouse`` (a download cache, ignored by git)
and copied into a temporary work directory, where every cache and env of the run lives (one
filesystem, so uv can hardlink from its cache). Builds are offline, from that wheelhouse.

1. warm hit: ``EnvCache.ensure()`` of an env that exists, in-process (median, ms), against a
   bare ``os.stat`` of the env directory and ``EnvCache.get(key)`` (manifest load only).
2. new env from a warm uv cache (the env is removed with ``EnvCache.remove()`` and ensured
   again; median, s), against the virtualenv+pip backend the same way, and against plain
   ``python3.11 -m venv`` + ``pip install --require-hashes`` (pip compiles bytecode, its default).
3. disk used by 20 envs whose locks differ by one small package (base lock + one ``zipp``
   version each): bytes of the distinct inodes under the cache's ``envs/`` + ``objects/`` (a
   hardlinked file counts once, uv's and pip's caches are not counted), against one such env.

    .venv/bin/python bench/bench_envcache.py [--quick] [--wheelhouse bench/.wheelhouse]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from envcache import tree, uv
from envcache.backends import Builder, UvBuilder, VirtualenvPipBuilder
from envcache.cache import EnvCache
from envcache.interpreter import Interpreter
from envcache.lock import Lock
from envcache.lockfile import parse_requirements
from envcache.manifest import MANIFEST_NAME

PYTHON = "/usr/bin/python3.11"
BASE = (
    ("requests", "2.32.3"),
    ("urllib3", "2.2.3"),
    ("idna", "3.10"),
    ("certifi", "2024.8.30"),
    ("charset-normalizer", "3.4.0"),  # cp311 manylinux wheel
    ("click", "8.1.7"),
    ("jinja2", "3.1.4"),
    ("markupsafe", "2.1.5"),  # cp311 manylinux wheel
    ("six", "1.16.0"),
    ("python-dateutil", "2.9.0.post0"),
    ("attrs", "24.2.0"),
    ("packaging", "24.1"),
)
IMPORTS = "import requests, urllib3, idna, certifi, charset_normalizer, click, jinja2, markupsafe"
IMPORTS += ", six, dateutil.parser, attrs, packaging.version"
SMALL = "zipp"
SMALL_VERSIONS = (
    "3.1.0",
    "3.2.0",
    "3.3.0",
    "3.4.0",
    "3.4.1",
    "3.5.0",
    "3.6.0",
    "3.7.0",
    "3.8.0",
    "3.8.1",
    "3.9.0",
    "3.10.0",
    "3.11.0",
    "3.12.0",
    "3.13.0",
    "3.14.0",
    "3.15.0",
    "3.16.0",
    "3.17.0",
    "3.18.0",
)
MIB = 1024 * 1024

Pin = tuple[str, str]


# --- wheels and locks -------------------------------------------------------------------------


def find_wheel(wheelhouse: Path, pin: Pin) -> Path | None:
    name, version = canonicalize_name(pin[0]), pin[1]
    for path in sorted(wheelhouse.glob("*.whl")):
        wheel_name, wheel_version, _build, _tags = parse_wheel_filename(path.name)
        if wheel_name == name and str(wheel_version) == version:
            return path
    return None


def pip_download(wheelhouse: Path, pins: Iterable[Pin]) -> None:
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet"]
    argv += ["--only-binary=:all:", "--python-version", "3.11", "--no-deps"]
    argv += ["-d", os.fspath(wheelhouse), *(f"{name}=={version}" for name, version in pins)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"pip download failed:\n{done.stdout}{done.stderr}")


def download(wheelhouse: Path, pins: list[Pin]) -> dict[Pin, Path]:
    """The wheel of every pin, downloaded into ``wheelhouse`` if it isn't there yet."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    ignore = wheelhouse / ".gitignore"  # a download cache: keep it out of git
    if not ignore.exists():
        ignore.write_text("*\n")
    missing = [pin for pin in pins if find_wheel(wheelhouse, pin) is None]
    if missing:
        print(f"downloading {len(missing)} wheel(s) into {wheelhouse} ...", flush=True)
        # pip refuses two versions of one package in one call: one call per small version.
        groups = [[pin for pin in missing if pin[0] != SMALL]]
        groups += [[pin] for pin in missing if pin[0] == SMALL]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda group: pip_download(wheelhouse, group), filter(None, groups)))
    wheels = {}
    for pin in pins:
        found = find_wheel(wheelhouse, pin)
        if found is None:
            sys.exit(f"no wheel for {pin[0]}=={pin[1]} in {wheelhouse} after pip download")
        wheels[pin] = found
    return wheels


def lock_text(pins: Iterable[Pin], wheels: dict[Pin, Path]) -> str:
    lines = []
    for pin in pins:
        digest = hashlib.sha256(wheels[pin].read_bytes()).hexdigest()
        lines.append(f"{pin[0]}=={pin[1]} \\\n    --hash=sha256:{digest}\n")
    return "".join(lines)


# --- measuring --------------------------------------------------------------------------------


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Usage:
    allocated: int = 0
    """st_blocks * 512 of each distinct inode, what ``du`` counts."""
    dirs: int = 0
    dir_bytes: int = 0
    link_bytes: int = 0
    """Symlinks short enough live in the inode (ext4: under 60 bytes) and take no block."""


def disk_usage(*roots: Path) -> Usage:
    """Every distinct inode under ``roots`` (directories and symlinks too) counted once."""
    seen: set[tuple[int, int]] = set()
    usage = Usage()
    stack = [os.fspath(root) for root in roots if root.exists()]
    while stack:
        path = stack.pop()
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        usage.allocated += info.st_blocks * 512
        if stat.S_ISLNK(info.st_mode):
            usage.link_bytes += info.st_blocks * 512
        if stat.S_ISDIR(info.st_mode):
            usage.dirs += 1
            usage.dir_bytes += info.st_blocks * 512
            stack.extend(os.path.join(path, name) for name in os.listdir(path))
    return usage


def clean_env(home: Path) -> dict[str, str]:
    """The environment of the venv + pip baseline: a default user's, no pip config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(HOME=os.fspath(home), PIP_CONFIG_FILE=os.devnull)
    return env


def venv_pip(dest: Path, wheelhouse: Path, requirements: Path, env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "-m", "venv", os.fspath(dest)], env=env, check=True)
    argv = [os.fspath(dest / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    argv += ["--disable-pip-version-check", "--no-index", "--find-links", os.fspath(wheelhouse)]
    argv += ["--require-hashes", "-r", os.fspath(requirements)]
    subprocess.run(argv, env=env, check=True)


def raw_uv(dest: Path, wheelhouse: Path, requirements: Path, cache: EnvCache) -> None:
    """uv alone, with the env cache's warm uv cache: what envcache adds nothing to."""
    uv.venv(dest, PYTHON, cache_dir=cache.tool_cache_dir)
    uv.sync(
        dest,
        requirements,
        find_links=[wheelhouse],
        offline=True,
        cache_dir=cache.tool_cache_dir,
        compile_bytecode=False,
    )


def check_imports(python: Path) -> None:
    subprocess.run([os.fspath(python), "-c", IMPORTS], env={}, check=True)


def rebuild(cache: EnvCache, lock: Lock, interpreter: Interpreter) -> Callable[[], object]:
    """Remove the lock's env, then ensure it again: a new env, with the tool's cache warm."""

    def again() -> object:
        key = cache.key_for(lock, interpreter)
        if not cache.remove(key):
            sys.exit(f"env {key} is in use")
        return cache.ensure(lock, interpreter)

    return again


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and envs")
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        default=Path(__file__).resolve().parent / ".wheelhouse",
        help="download cache for the wheels (default: bench/.wheelhouse)",
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where the work dir is made")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args()
    hits, rounds, disk_envs, pip_disk_envs = (30, 1, 5, 3) if args.quick else (200, 5, 20, 5)

    small = [(SMALL, version) for version in SMALL_VERSIONS[:disk_envs]]
    wheels = download(args.wheelhouse.resolve(), [*BASE, *small])
    work = Path(tempfile.mkdtemp(prefix="bench-envcache-", dir=args.tmp))
    try:
        run(args, work, wheels, small, hits, rounds, pip_disk_envs)
    finally:
        if args.keep:
            print(f"\nwork dir kept: {work}")
        else:
            tree.remove_tree(work)


def run(
    args: argparse.Namespace,
    work: Path,
    wheels: dict[Pin, Path],
    small: list[Pin],
    hits: int,
    rounds: int,
    pip_disk_envs: int,
) -> None:
    house = work / "wheelhouse"
    house.mkdir()
    for wheel in wheels.values():
        shutil.copy2(wheel, house / wheel.name)
    wheels = {pin: house / wheel.name for pin, wheel in wheels.items()}
    requirements = work / "requirements.txt"
    requirements.write_text(lock_text(BASE, wheels))
    lock = parse_requirements(requirements.read_text())
    interpreter = Interpreter.probe(PYTHON)

    def cache(name: str, builder: Builder, *, dedupe: bool = True) -> EnvCache:
        return EnvCache(
            work / name, builder=builder, find_links=[house], offline=True, dedupe=dedupe
        )

    uv_cache = cache("uv", UvBuilder())
    pip_cache = cache("pip", VirtualenvPipBuilder())
    plain_cache = cache("uv-plain", UvBuilder(), dedupe=False)
    baseline_env = clean_env(work / "home")
    (work / "home").mkdir()

    started = time.perf_counter()
    cold = {
        "uv": timed(lambda: uv_cache.ensure(lock, interpreter)),
        "plain": timed(lambda: plain_cache.ensure(lock, interpreter)),
        "pip": timed(lambda: pip_cache.ensure(lock, interpreter)),
        "venv": timed(lambda: venv_pip(work / "venv0", house, requirements, baseline_env)),
    }
    env = uv_cache.ensure(lock, interpreter)
    pip_env = pip_cache.ensure(lock, interpreter)
    for python in (env.python, pip_env.python, work / "venv0" / "bin" / "python"):
        check_imports(python)
    venv_pip_version = subprocess.run(
        [work / "venv0" / "bin" / "python", "-m", "pip", "--version"],
        env=baseline_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]

    print(f"envcache benchmarks, {datetime.now(UTC):%Y-%m-%d}, {platform.machine()}", end=" ")
    print(f"{os.cpu_count()} CPUs{', --quick' if args.quick else ''}")
    print(f"env python {interpreter.version} ({PYTHON}); runner python {platform.python_version()}")
    tools = pip_env.manifest.tools
    print(f"uv {uv.version()}; virtualenv {tools['virtualenv']}", end=" ")
    print(f"(seeds pip {tools['pip']}); venv + pip baseline: ensurepip's pip {venv_pip_version}")
    same_fs = os.stat(house).st_dev == os.stat(uv_cache.root).st_dev
    print(f"work dir {work} (wheelhouse copy and caches on one filesystem: {same_fs})")
    names = ", ".join(f"{n}=={v}" for n, v in BASE)
    print(f"lock: {len(BASE)} packages: {names}")
    shared = [uv_cache.trees.load(digest) for digest in env.manifest.trees.values()]
    print(f"env: {env.manifest.total_size / MIB:.1f} MiB; {len(env.manifest.files)} paths", end=" ")
    print(f"of its own + {len(shared)} shared trees of {sum(len(t.files) for t in shared)} paths")
    print(f"  (uv, hardlinked from uv's cache: {env.manifest.links.hardlinked} files)")
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')} here;")
    print("  envcache builds run their tools with a clean environment and compile every .py of")
    print("  the env at build time (compileall, unchecked-hash .pyc); the venv + pip baseline")
    print("  runs without PYTHON*/PIP_* variables, so pip compiles bytecode (its default).")
    print("how each env is installed (offline, from the wheelhouse copy, hashes required):")
    print("  envcache uv:     uv venv --relocatable; uv pip sync --link-mode hardlink --no-index")
    print("  envcache v+pip:  virtualenv --no-setuptools; pip install --no-deps --no-compile")
    print("                   (both: + link each package dir to a shared tree in objects/trees,")
    print("                   compile the trees new to the cache, hardlink their files equal")
    print("                   to other trees' through objects/files, compile the env's own")
    print("                   files, gzipped manifest with sha256 of every file, read-only,")
    print("                   fsync, atomic rename, dedupe the env's own files; with")
    print("                   dedupe=False: no sharing at all, the whole env compiled)")
    print("                   (uv: without uv_cache.json, uv's record of the wheel's mtime)")
    print("  venv + pip:      python3.11 -m venv D; D/bin/python -m pip install --no-index")
    print("                   --find-links W --require-hashes -r lock")

    # 1. warm hit
    key = env.key
    stat_s = median_seconds(lambda: os.stat(env.path), hits)
    get_s = median_seconds(lambda: uv_cache.get(key), hits)
    key_s = median_seconds(lambda: uv_cache.key_for(lock, interpreter), hits)
    ensure_s = median_seconds(lambda: uv_cache.ensure(lock, interpreter), hits)
    print(f"\n1. warm hit: the env exists, in-process, median of {hits} calls")
    print(f"{'call':<34} {'ms':>9} {'vs stat':>9} {'vs get':>8}")
    for label, seconds, baseline in (
        ("os.stat(env dir) (baseline)", stat_s, None),
        ("cache.key_for(lock, python)", key_s, None),
        ("cache.get(key) (baseline)", get_s, get_s),
        ("cache.ensure(lock, python)", ensure_s, get_s),
    ):
        versus_get = f"{seconds / baseline:>7.1f}x" if baseline else ""
        print(f"{label:<34} {seconds * 1e3:>9.3f} {seconds / stat_s:>8.0f}x {versus_get}")

    # 2. new env, warm caches
    samples: dict[str, list[float]] = {"uv": [], "plain": [], "raw": [], "pip": [], "venv": []}
    for i in range(rounds):
        samples["uv"].append(timed(rebuild(uv_cache, lock, interpreter)))
        samples["plain"].append(timed(rebuild(plain_cache, lock, interpreter)))
        dest = work / f"raw{i}"
        samples["raw"].append(timed(lambda d=dest: raw_uv(d, house, requirements, uv_cache)))
        samples["pip"].append(timed(rebuild(pip_cache, lock, interpreter)))
        dest = work / f"venv{i + 1}"
        samples["venv"].append(timed(lambda d=dest: venv_pip(d, house, requirements, baseline_env)))
    warm = {name: statistics.median(times) for name, times in samples.items()}
    print(f"\n2. new env for the {len(BASE)}-package lock, warm caches, median of {rounds}")
    print("   first: the first build, tool caches empty; warm: a new env, tool caches warm")
    print("   ratio: warm time / envcache uv's (above 1: envcache uv is that much faster)")
    print(f"{'builder':<36} {'first (s)':>9} {'warm (s)':>9} {'ratio':>7}")
    for name, label in (
        ("uv", "envcache, uv (remove + ensure)"),
        ("plain", "  the same, no sharing (dedupe=False)"),
        ("raw", "  uv venv + uv pip sync alone"),
        ("pip", "envcache, virtualenv+pip (same)"),
        ("venv", "python -m venv + pip install"),
    ):
        first = f"{cold[name]:>9.2f}" if name in cold else f"{'':>9}"
        print(f"{label:<36} {first} {warm[name]:>9.2f} {warm[name] / warm['uv']:>6.1f}x")
    verdict = "met" if warm["venv"] / warm["uv"] >= 10 else "NOT met"
    print(f"target: >= 10x faster than venv + pip: {verdict}")
    print("  (diagnostic rows: without sharing, envcache compiles every .py of the env, as it")
    print("  did before trees; uv alone writes no manifest, compiles, fsyncs or shares)")

    # 3. disk
    locks = [parse_requirements(lock_text([*BASE, pin], wheels)) for pin in small]
    configs = [
        ("uv, dedupe", cache("disk-uv", UvBuilder()), len(small)),
        ("uv, no dedupe", cache("disk-uv-plain", UvBuilder(), dedupe=False), len(small)),
        ("virtualenv+pip, dedupe", cache("disk-pip", VirtualenvPipBuilder()), len(small)),
        (
            "virtualenv+pip, no dedupe",
            cache("disk-pip-plain", VirtualenvPipBuilder(), dedupe=False),
            pip_disk_envs,
        ),
    ]
    ones = {}
    for label, disk_cache, _count in configs:
        disk_cache.ensure(locks[0], interpreter)
        ones[label] = disk_usage(disk_cache.envs_dir, disk_cache.objects.root)
    jobs = [(c, lk) for _label, c, count in configs for lk in locks[1:count]]
    with ThreadPoolExecutor(2) as pool:  # not timed: builds of different keys, two at a time
        list(pool.map(lambda job: job[0].ensure(job[1], interpreter), jobs))
    print(f"\n3. disk: envs of the base lock + one {SMALL} version each; distinct inodes under")
    print("   envs/ + objects/ (allocated blocks, as du counts them; the tool's cache not counted)")
    print("   ratio: all envs / one env; files only: the same without directories")
    print(f"{'cache':<26} {'envs':>4} {'1 env MiB':>9} {'all MiB':>8} {'ratio':>6}", end=" ")
    print(f"{'files only':>10} {'KiB/env':>8} {'dirs':>5}")
    for label, disk_cache, count in configs:
        one = ones[label]
        usage = disk_usage(disk_cache.envs_dir, disk_cache.objects.root)
        files_ratio = (usage.allocated - usage.dir_bytes) / (one.allocated - one.dir_bytes)
        extra = (usage.allocated - one.allocated) / max(count - 1, 1) / 1024
        extra_dirs = (usage.dir_bytes - one.dir_bytes) / max(count - 1, 1) / 1024
        print(
            f"{label:<26} {count:>4} {one.allocated / MIB:>9.2f} {usage.allocated / MIB:>8.2f}",
            f"{usage.allocated / one.allocated:>5.2f}x {files_ratio:>9.2f}x {extra:>8.0f}",
            f"{extra_dirs / extra:>5.0%}",
        )
    print("  KiB/env: what each env after the first adds; dirs: the share of it that is")
    print("  directories (4 KiB blocks each, never shared between envs)")
    first = configs[0][1].get(configs[0][1].key_for(locks[0], interpreter))
    assert first is not None
    dirs = disk_usage(first.path)
    manifest_kib = os.lstat(first.path / MANIFEST_NAME).st_blocks * 512 / 1024
    print(f"  per uv env: {dirs.dirs} directories ({dirs.dir_bytes / 1024:.0f} KiB) and", end=" ")
    print(f"its {MANIFEST_NAME} ({manifest_kib:.0f} KiB), never shared;", end=" ")
    print(f"{len(first.manifest.trees)} links to shared trees ({dirs.link_bytes / 1024:.0f} KiB)")
    uv_ratio = disk_usage(configs[0][1].envs_dir, configs[0][1].objects.root).allocated
    uv_ratio /= ones[configs[0][0]].allocated
    verdict = "met" if uv_ratio <= 1.2 else "NOT met"
    print(f"target: {len(small)} uv envs <= 1.2x one env: {verdict} ({uv_ratio:.2f}x)")
    print(f"\ntotal time (downloads aside) {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
