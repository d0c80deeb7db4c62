"""Run part of the test suite again as a freshly created plain user, from a test run by root.

The suite normally runs as root, which may write into read-only directories, rename them and
read every file whatever its mode: code that only works as root passes unnoticed. A plain
user cannot use the suite's own virtualenv (tox's ``.tox/`` is private to root, and its
``bin/python`` is a symlink to a pyenv interpreter in root's private home), so
:func:`plain_user` gives it one of its own: a venv of the world-executable system
interpreter holding this venv's packages (hardlinked, so it takes well under a second) and
console scripts, the project itself still imported from the checkout by the editable
install. The user has a private home for pytest's temporary files and Hypothesis' database;
the checkout is only read.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from envcache import tree, uv
from tests.conftest import PYTHON
from tests.osusers import os_users, unique

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600.0


@dataclass(frozen=True)
class PlainRun:
    """What a command run as the plain user did: its exit status and output."""

    returncode: int
    output: str

    @property
    def summary(self) -> str:
        """The last line: pytest's counts, e.g. ``88 passed, 2 skipped in 12.3s``."""
        lines = self.output.strip().splitlines()
        return lines[-1] if lines else ""


def skip_unless_possible() -> None:
    """Skip the calling test, saying why, where a plain user's run cannot be set up."""
    if os.geteuid() != 0:
        pytest.skip("runs the tests again as a plain user: only root can create one")
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests must run in a virtualenv, whose packages the plain user gets")
    if not _usable_by_others(Path(PYTHON), stat.S_IXOTH):
        pytest.skip(f"{PYTHON} is not executable by other users")
    if not _usable_by_others(REPO / "pyproject.toml", stat.S_IROTH):
        pytest.skip(f"the checkout {REPO} is not readable by other users")


@dataclass(frozen=True)
class PlainUser:
    """A plain user, its private home and a Python of its own with the suite's packages."""

    user: pwd.struct_passwd
    python: Path
    home: Path
    work: Path
    """Root's, readable by everyone: for what the user should reach but not change."""

    @property
    def environ(self) -> dict[str, str]:
        """A clean environment for the user's processes (and the suite's ISOLATE_TEST_*)."""
        return {
            "HOME": os.fspath(self.home),
            "PATH": "/usr/bin:/bin",
            "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",  # the checkout is root's
            "HYPOTHESIS_STORAGE_DIRECTORY": os.fspath(self.home / ".hypothesis"),
            **{k: v for k, v in os.environ.items() if k.startswith("ISOLATE_TEST_")},
        }

    def run(self, argv: Sequence[str], *, timeout: float = TIMEOUT) -> PlainRun:
        """Run ``argv`` as the user in the checkout; stdout and stderr together."""
        try:
            done = subprocess.run(
                argv,
                cwd=REPO,
                env=self.environ,
                user=self.user.pw_uid,
                group=self.user.pw_gid,
                extra_groups=[],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout if isinstance(exc.stdout, str) else ""
            return PlainRun(-1, f"{output}\ntimed out after {timeout:.0f} s")
        return PlainRun(done.returncode, done.stdout)

    def isolate(self, *args: str) -> PlainRun:
        """The ``isolate`` command, as the user."""
        return self.run([os.fspath(self.python), "-c", "from cli.main import main; main()", *args])

    def pytest(self, paths: Sequence[str]) -> PlainRun:
        """``pytest -q PATHS``, as the user."""
        basetemp = os.fspath(self.home / "pytest")
        options = ["-q", "-p", "no:cacheprovider", "--basetemp", basetemp, "-rfE"]
        return self.run([os.fspath(self.python), "-m", "pytest", *options, *paths])


@contextmanager
def plain_user(name: str = "isoplain") -> Iterator[PlainUser]:
    """A new user (removed after) and its Python; call :func:`skip_unless_possible` first."""
    with _workdir() as work, os_users(unique(name)) as users:
        user = users[unique(name)]
        python = _mirror_venv(work / "venv")
        home = work / "home"
        home.mkdir(mode=0o700)
        os.chown(home, user.pw_uid, user.pw_gid)
        yield PlainUser(user, python, home, work)


def run_as_plain_user(paths: Sequence[str], *, name: str = "isoplain") -> PlainRun:
    """``pytest -q PATHS`` in the checkout as a new user; call :func:`skip_unless_possible`
    first."""
    with plain_user(name) as user:
        return user.pytest(paths)


@contextmanager
def _workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: it is private to root. Removed as root, whoever made the files.
    work = Path(tempfile.mkdtemp(prefix="isolate-plain-user-", dir="/tmp"))
    try:
        work.chmod(0o755)
        yield work
    finally:
        tree.remove_tree(work)


def _mirror_venv(dest: Path) -> Path:
    """A venv at ``dest`` of the system interpreter with this venv's packages and uv."""
    done = subprocess.run(
        [
            uv.uv_bin(),
            "venv",
            "--quiet",
            "--no-config",
            "--no-python-downloads",
            "--no-cache",
            "--python",
            PYTHON,
            os.fspath(dest),
        ],
        env={"PATH": os.defpath},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot create the plain user's venv: {done.stderr.strip()}")
    (target,) = dest.glob("lib/python3.*/site-packages")
    sources = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    for source in sorted(sources):
        shutil.copytree(source, target, symlinks=True, copy_function=_link, dirs_exist_ok=True)
    _link(uv.uv_bin(), os.fspath(dest / "bin" / "uv"))
    _copy_scripts(Path(sysconfig.get_path("scripts")), dest / "bin")
    return dest / "bin" / "python"


def _copy_scripts(source: Path, target: Path) -> None:
    """The console scripts (``isolate``, ``pytest``...) of ``source``, for ``target``'s python."""
    ours = f"#!{source / 'python'}".encode()
    for script in sorted(source.iterdir()):
        destination = target / script.name
        if destination.exists() or not script.is_file() or script.is_symlink():
            continue
        with script.open("rb") as handle:
            first, rest = handle.readline(), handle.read()
        if first.rstrip() == ours:
            destination.write_bytes(f"#!{target / 'python'}\n".encode() + rest)
            destination.chmod(0o755)


def _link(source: str, target: str) -> None:
    """Hardlink (others may read the files, nobody but root writes them), else copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _usable_by_others(path: Path, needed: int) -> bool:
    """Whether users other than the owner reach ``path`` and have ``needed`` on it."""
    real = path.resolve()
    try:
        if any(not parent.stat().st_mode & stat.S_IXOTH for parent in real.parents):
            return False
        return real.stat().st_mode & needed == needed
    except OSError:
        return False
