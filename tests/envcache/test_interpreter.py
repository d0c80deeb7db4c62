"""Probing the target interpreter and refusing ones unprivileged users can't run."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.markers import default_environment

from envcache.errors import InterpreterError
from envcache.interpreter import Interpreter
from tests.envcache.conftest import PYTHON


def test_probe_records_the_target_not_the_current_interpreter(python311: Interpreter) -> None:
    expected = json.loads(
        subprocess.run(
            [
                PYTHON,
                "-c",
                "import json, sys, sysconfig; print(json.dumps([list(sys.version_info), "
                "sysconfig.get_platform(), sys.implementation.cache_tag]))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert python311.path == os.path.realpath(PYTHON)
    assert list(python311.version_info) == expected[0]
    assert python311.platform == expected[1]
    assert python311.cache_tag == expected[2]
    assert python311.implementation == "cpython"
    assert python311.marker_env.keys() == default_environment().keys()
    assert python311.marker_env["python_full_version"] == python311.version
    identity = python311.identity()
    assert json.loads(json.dumps(identity)) == identity
    assert "marker_env" not in identity


def test_probe_refuses_relative_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(InterpreterError, match="must be absolute, e.g. /usr/bin/python3.11"):
        Interpreter.probe("python3")
    with pytest.raises(InterpreterError, match="is not an executable file"):
        Interpreter.probe(tmp_path / "python")
    script = tmp_path / "notpython"
    script.write_text("#!/bin/sh\necho nope >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(InterpreterError, match=r"failed to report itself \(exit 3\): nope"):
        Interpreter.probe(script)


def test_a_world_executable_interpreter_is_accepted(python311: Interpreter) -> None:
    python311.check_accessible()


def test_an_interpreter_under_a_private_home_is_refused() -> None:
    found = sorted(glob.glob("/root/.pyenv/versions/3.*/bin/python3"))
    if not found:
        pytest.skip("no pyenv interpreter under /root on this machine")
    python = Interpreter.probe(found[-1])
    with pytest.raises(InterpreterError) as caught:
        python.check_accessible()
    message = str(caught.value)
    assert "cannot be used by the unprivileged users tasks run as" in message
    assert "/root is mode 0700 (not world-searchable)" in message
    assert f"such as /usr/bin/python{python.version_info[0]}.{python.version_info[1]}" in message


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A world-searchable directory (pytest's tmp_path lives under a 0700 directory)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def test_private_binary_or_stdlib_is_refused(python311: Interpreter, public_dir: Path) -> None:
    tmp_path = public_dir
    binary = tmp_path / "python3.11"
    binary.write_bytes(b"")
    binary.chmod(0o700)
    with pytest.raises(InterpreterError, match=r"python3.11 is mode 0700 \(needs o\+rx\)"):
        dataclasses.replace(python311, path=str(binary)).check_accessible()
    stdlib = tmp_path / "lib" / "python3.11"
    stdlib.mkdir(parents=True)
    (tmp_path / "lib").chmod(0o750)
    with pytest.raises(InterpreterError, match=r"lib is mode 0750 \(not world-searchable\)"):
        dataclasses.replace(python311, stdlib=str(stdlib)).check_accessible()


def test_only_a_shared_cache_asks_for_an_interpreter_other_users_can_run(
    python311: Interpreter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node's cache (root's) serves tenants' users; a plain user's own serves that user."""
    from envcache.cache import EnvCache
    from envcache.lock import Lock

    def private(self: Interpreter) -> None:
        raise InterpreterError(f"interpreter {self.path} cannot be used by other users")

    monkeypatch.setattr(Interpreter, "check_accessible", private)
    assert EnvCache(tmp_path / "default").shared is (os.geteuid() == 0)
    with pytest.raises(InterpreterError, match="cannot be used by other users"):
        EnvCache(tmp_path / "node", shared=True).ensure(Lock(()), python311)
    assert not (tmp_path / "node" / "envs").exists()  # refused before anything was made
    env = EnvCache(tmp_path / "own", shared=False).ensure(Lock(()), python311)
    assert env.python.is_file()
