"""The only module that runs uv: argv for each command, in a clean environment.

Every call passes ``--no-config`` and an environment built from scratch, so neither uv.toml
files nor ``UV_*`` variables of the caller can change what gets built.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

from envcache import process

# Variables about the machine's network and locale, not about uv's behaviour.
_PASSTHROUGH = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
)


@functools.cache
def uv_bin() -> str:
    """Path of the uv executable shipped with the ``uv`` Python package."""
    from uv import find_uv_bin

    return os.fspath(find_uv_bin())


def environment(cache_dir: Path) -> dict[str, str]:
    """The whole environment uv runs with."""
    env = {name: os.environ[name] for name in _PASSTHROUGH if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(
        UV_CACHE_DIR=os.fspath(cache_dir),
        UV_NO_CONFIG="1",
        UV_NO_PROGRESS="1",
        UV_PYTHON_DOWNLOADS="never",
        NO_COLOR="1",
    )
    return env


# What an install's failure means, by what the installer said (uv's words, then pip's).
INSTALL_HINTS: tuple[tuple[str, str], ...] = (
    ("was not found in the provided package locations", process.MISSING_PACKAGE),
    ("was not found in the package registry", process.MISSING_PACKAGE),
    ("no matching distribution found", process.MISSING_PACKAGE),
    ("hash mismatch", process.WRONG_HASH),
    ("do not match the hashes", process.WRONG_HASH),
)


def _run(
    args: Sequence[str],
    *,
    cache_dir: Path,
    hint: str,
    hints: Sequence[tuple[str, str]] = (),
    cwd: Path | None = None,
) -> str:
    argv = [uv_bin(), *args, "--no-config", "--cache-dir", os.fspath(cache_dir)]
    what = "uv " + " ".join(itertools.takewhile(str.isalpha, args[:2]))
    return process.run(argv, env=environment(cache_dir), what=what, hint=hint, hints=hints, cwd=cwd)


def _sources(find_links: Sequence[Path], *, no_index: bool, offline: bool) -> list[str]:
    args = [f"--find-links={os.fspath(link)}" for link in find_links]
    if no_index:
        args.append("--no-index")
    if offline:
        args.append("--offline")
    return args


def venv(dest: Path, python: str, *, cache_dir: Path) -> None:
    """Create a relocatable venv at ``dest`` (absent or empty) for the absolute ``python``."""
    _run(
        [
            "venv",
            "--relocatable",
            "--python",
            python,
            "--no-python-downloads",
            "--no-project",
            os.fspath(dest),
        ],
        cache_dir=cache_dir,
        hint="check that the interpreter runs",
        cwd=dest.parent,
    )


def sync(
    dest: Path,
    requirements: Path,
    *,
    find_links: Sequence[Path],
    offline: bool,
    cache_dir: Path,
    link_mode: str = "hardlink",
    compile_bytecode: bool = True,
    allow_source_builds: bool = False,
) -> None:
    """Make the venv at ``dest`` hold exactly the hashed ``requirements``.

    Without ``allow_source_builds`` only wheels are installed: building an sdist runs the
    package's own code, and builds run as the cache owner.
    """
    args = [
        "pip",
        "sync",
        os.fspath(requirements),
        "--python",
        os.fspath(dest / "bin" / "python"),
        "--require-hashes",
        "--link-mode",
        link_mode,
        *_sources(find_links, no_index=bool(find_links) and offline, offline=offline),
    ]
    if compile_bytecode:
        args.append("--compile-bytecode")
    if not allow_source_builds:
        args.append("--no-build")
    hint = "check the lock's hashes and that every locked file is in the wheelhouse or index"
    _run(args, cache_dir=cache_dir, hint=hint, hints=INSTALL_HINTS, cwd=dest.parent)


def compile(
    src: Path,
    *,
    cache_dir: Path,
    python: str | None = None,
    python_version: str | None = None,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
    find_links: Sequence[Path] = (),
    no_index: bool = False,
    offline: bool = False,
    header: bool = True,
    output: Path | None = None,
) -> str:
    """Resolve ``src`` (a requirements.in) into hashed requirements.txt text.

    The output is reproducible: no timestamps, a fixed ``isolate lock`` header (or none), and
    ``# via`` annotations naming ``src`` relative to its own directory. With ``output`` (an
    existing lock), uv prefers the versions already pinned there and rewrites that file.
    """
    args = ["pip", "compile", src.name, "--generate-hashes", "--quiet"]
    if output is not None:
        args += ["--output-file", os.fspath(output)]
    if python:
        args += ["--python", python]
    if python_version:
        args += ["--python-version", python_version]
    if upgrade:
        args.append("--upgrade")
    for package in upgrade_packages:
        args += ["--upgrade-package", package]
    args += _sources(find_links, no_index=no_index, offline=offline)
    args += ["--custom-compile-command", "isolate lock"] if header else ["--no-header"]
    hint = f"check {src.name} and the package sources"
    printed = _run(args, cache_dir=cache_dir, hint=hint, cwd=src.parent)
    return printed if output is None else output.read_text(encoding="utf-8")


def cache_prune(cache_dir: Path) -> None:
    """Remove entries of uv's cache no env or build needs any more."""
    _run(["cache", "prune"], cache_dir=cache_dir, hint="is another uv holding the cache?")


@functools.cache
def version() -> str:
    """uv's version, e.g. ``0.13.9``."""
    out = process.run([uv_bin(), "--version"], env={"PATH": os.defpath}, what="uv --version")
    return out.split()[1]
