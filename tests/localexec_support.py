"""Fixtures of the supervisor and bootstrap tests: a real env, the runtime files, attempts."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from envcache.cache import EnvCache
from envcache.interpreter import Interpreter
from envcache.lockfile import parse_requirements
from localexec.attempt import Attempt, make_context
from localexec.runtime import RuntimeFiles, install_runtime
from tests.conftest import PYTHON

LOGICAL_DATE = dt.datetime(2024, 3, 5, 6, 7, 8, tzinfo=dt.UTC)
MakeAttempt = Callable[..., Attempt]


@pytest.fixture(scope="session")
def env_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/python`` of a real, read-only env from the env cache (an empty lock: no network)."""
    if not os.access(PYTHON, os.X_OK):
        pytest.skip(f"{PYTHON} is not installed on this machine")
    cache = EnvCache(tmp_path_factory.mktemp("envcache"), offline=True)
    env = cache.ensure(parse_requirements(""), Interpreter.probe(PYTHON))
    return env.python


@pytest.fixture(scope="session")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> RuntimeFiles:
    return install_runtime(tmp_path_factory.mktemp("runtime"))


@pytest.fixture
def make_attempt(tmp_path: Path, env_python: Path, runtime: RuntimeFiles) -> MakeAttempt:
    """An attempt of a task whose bundle holds ``files`` (dedented); keywords override."""
    counter = itertools.count(1)

    def make(files: dict[str, str] | None = None, **overrides: Any) -> Attempt:
        n = next(counter)
        bundle = tmp_path / f"bundle{n}"
        bundle.mkdir()
        for name, text in (files or {}).items():
            (bundle / name).write_text(textwrap.dedent(text))
        work = tmp_path / f"work{n}"
        work.mkdir()
        context = make_context(
            dag_id="etl",
            task_id=overrides.pop("task_id", "extract"),
            run_id="manual__1",
            logical_date=LOGICAL_DATE,
            try_number=1,
            params=overrides.pop("params", {"x": 7}),
            conf={"who": "me"},
        )
        options: dict[str, Any] = {
            "kind": "python",
            "python": env_python,
            "bootstrap": runtime.bootstrap,
            "bundle_dir": bundle,
            "sdk_dir": runtime.sdk_dir,
            "work_dir": work,
            "log_path": tmp_path / f"try{n}.log",
            "context": context,
            "version": 3,
            "env_key": "abc123",
            "kill_grace": 0.5,
        }
        options.update(overrides)
        return Attempt(**options)

    return make
