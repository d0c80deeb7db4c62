"""Env builders: the base owns the build steps, backends fill the hooks.

:class:`UvBuilder` (the default) creates the venv and installs with uv, hardlinking files from
uv's cache. :class:`VirtualenvPipBuilder` uses virtualenv and pip, for sites without uv and as
the benchmark baseline. The cache (cache.py) owns everything around a build: locking, the
temporary directory, sharing package trees (trees.py), bytecode (bytecode.py), the manifest,
permissions and the atomic rename.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from envcache import process, uv

UV_CACHE_INFO = "uv_cache.json"
"""uv's record of an installed local wheel's file time; removed from envs (see below)."""


@dataclass(frozen=True)
class Sources:
    """Where packages come from. Hashes pin their content whatever the source."""

    find_links: tuple[Path, ...] = ()
    offline: bool = False
    allow_source_builds: bool = False
    """Build sdists? Off by default: a build runs the package's code as the cache owner."""


class Builder(ABC):
    """Turns a hashed requirements file into a venv; subclasses fill the hooks."""

    name: ClassVar[str]
    """Part of the env key: envs of different builders never collide."""
    format_version: ClassVar[int]
    """Part of the env key: bump when the builder's output changes in a way that matters."""
    link_mode: ClassVar[str]
    """How installed files get into the env: ``hardlink`` (from the tool's cache) or ``copy``."""
    cache_dir_name: ClassVar[str]
    """The tool's cache directory under the env cache's root."""

    def build(
        self, dest: Path, python: str, requirements: Path, *, sources: Sources, cache_dir: Path
    ) -> dict[str, str]:
        """Create a venv at the empty ``dest`` for ``python`` holding exactly ``requirements``,
        without bytecode: the cache shares package trees, then compiles (see bytecode.py).

        Returns the versions of the tools used, for the manifest. Raises BuildError.
        """
        self._create(dest, python, cache_dir)
        self._install(dest, requirements, sources, cache_dir)
        return self.tool_versions(dest)

    @abstractmethod
    def _create(self, dest: Path, python: str, cache_dir: Path) -> None:
        """Create an empty venv at ``dest``."""

    @abstractmethod
    def _install(self, dest: Path, requirements: Path, sources: Sources, cache_dir: Path) -> None:
        """Install exactly ``requirements`` (hash-checked, no bytecode) into ``dest``."""

    @abstractmethod
    def tool_versions(self, dest: Path) -> dict[str, str]:
        """Versions of the tools that built ``dest``, e.g. ``{"uv": "0.13.9"}``."""

    def prune_cache(self, cache_dir: Path) -> None:  # noqa: B027 - an optional hook
        """Drop tool cache entries no env needs (after gc); by default there is nothing to do."""


class UvBuilder(Builder):
    """``uv venv --relocatable`` and ``uv pip sync``, hardlinking from uv's cache."""

    name = "uv"
    format_version = 2  # 2: without uv_cache.json (see drop_uv_cache_info)
    link_mode = "hardlink"
    cache_dir_name = "uv-cache"

    def _create(self, dest: Path, python: str, cache_dir: Path) -> None:
        uv.venv(dest, python, cache_dir=cache_dir)

    def _install(self, dest: Path, requirements: Path, sources: Sources, cache_dir: Path) -> None:
        uv.sync(
            dest,
            requirements,
            find_links=sources.find_links,
            offline=sources.offline,
            cache_dir=cache_dir,
            link_mode=self.link_mode,
            compile_bytecode=False,  # the cache compiles, reproducibly (bytecode.py)
            allow_source_builds=sources.allow_source_builds,
        )
        drop_uv_cache_info(dest)

    def tool_versions(self, dest: Path) -> dict[str, str]:
        return {"uv": uv.version()}

    def prune_cache(self, cache_dir: Path) -> None:
        if cache_dir.is_dir():
            uv.cache_prune(cache_dir)


class VirtualenvPipBuilder(Builder):
    """``python -m virtualenv`` with the target interpreter, then ``pip install --no-deps``.

    virtualenv runs from the current interpreter; pip runs inside the new env. The env is not
    relocatable: its console scripts name the build directory, but ``bin/python`` (all a task
    uses) works after the rename.
    """

    name = "virtualenv-pip"
    format_version = 1
    link_mode = "copy"
    cache_dir_name = "pip-cache"

    def _create(self, dest: Path, python: str, cache_dir: Path) -> None:
        argv = [
            sys.executable,
            "-m",
            "virtualenv",
            "--python",
            python,
            "--no-download",
            "--no-periodic-update",
            "--no-setuptools",
            "--app-data",
            os.fspath(cache_dir / "virtualenv"),
            os.fspath(dest),
        ]
        env = {
            "PATH": os.defpath,
            "HOME": os.fspath(cache_dir),
            "VIRTUALENV_CONFIG_FILE": os.devnull,
        }
        hint = "check that the interpreter runs"
        process.run(argv, env=env, what="virtualenv", hint=hint, cwd=dest.parent)

    def _install(self, dest: Path, requirements: Path, sources: Sources, cache_dir: Path) -> None:
        argv = [
            os.fspath(dest / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--isolated",  # ignore PIP_* variables and user/site config files
            "--disable-pip-version-check",
            "--no-input",
            "--require-hashes",
            "--no-deps",
            "--no-compile",  # the cache compiles, reproducibly (bytecode.py)
            "--cache-dir",
            os.fspath(cache_dir / "pip"),
            *[f"--find-links={os.fspath(link)}" for link in sources.find_links],
            "-r",
            os.fspath(requirements),
        ]
        if sources.offline:
            argv.append("--no-index")  # pip has no --offline: only the wheelhouse is reachable
        if not sources.allow_source_builds:
            argv.append("--only-binary=:all:")
        env = {"PATH": os.defpath, "HOME": os.fspath(cache_dir), "PIP_CONFIG_FILE": os.devnull}
        hint = "check the lock's hashes and that every locked file is in the wheelhouse or index"
        process.run(
            argv, env=env, what="pip install", hint=hint, hints=uv.INSTALL_HINTS, cwd=dest.parent
        )

    def tool_versions(self, dest: Path) -> dict[str, str]:
        pips = sorted(dest.glob("lib/python*/site-packages/pip-*.dist-info"))
        pip_version = pips[-1].name.removeprefix("pip-").removesuffix(".dist-info") if pips else ""
        return {"virtualenv": importlib.metadata.version("virtualenv"), "pip": pip_version}


def drop_uv_cache_info(dest: Path) -> None:
    """Remove the ``uv_cache.json`` uv writes into a ``*.dist-info``, and its line in RECORD.

    uv records there, for a wheel installed from a local file (a ``--find-links``
    wheelhouse), the wheel file's modification time: its own check of whether an installed
    copy is stale. An env is never synced again, and the file would make the same wheel
    install differently from two copies of a wheelhouse, so identical packages would not share
    a tree (trees.py) and builds would not be reproducible. Installers write RECORD anew for
    every install, but it is replaced, never written in place, in case it is a hardlink.
    """
    for info in dest.glob("lib/python3.*/site-packages/*.dist-info"):
        marker = info / UV_CACHE_INFO
        if info.is_symlink() or marker.is_symlink() or not marker.is_file():
            continue
        marker.unlink()
        record = info / "RECORD"
        if record.is_symlink() or not record.is_file():
            continue
        entry = f"{info.name}/{UV_CACHE_INFO},"
        lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith(entry)]
        if len(kept) != len(lines):
            replacement = record.with_name(".RECORD.new")
            replacement.write_text("".join(kept), encoding="utf-8")
            os.replace(replacement, record)
