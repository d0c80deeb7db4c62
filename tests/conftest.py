from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import isolate

ETL_DAG = """
    from datetime import datetime, timedelta
    from isolate import DAG, CommandTask, PythonTask, task

    with DAG("etl", schedule="@daily", start_date=datetime(2024, 1, 1),
             default_args={"retries": 1, "retry_delay": timedelta(seconds=30)}) as dag:
        @task
        def extract():
            return [1, 2, 3]

        @task
        def load(rows):
            return sum(rows)

        report = CommandTask("report", command=["echo", "{{ ds }}"])
        load(extract()) >> report
"""


def write_folder(root: Path, files: dict[str, str], lock: str | None = "") -> Path:
    """A DAG folder with the given files (dedented) and, unless None, a requirements.txt."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    if lock is not None and "requirements.txt" not in files:
        (root / "requirements.txt").write_text(lock)
    return root


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(files: dict[str, str], lock: str | None = "", name: str | None = None) -> Path:
        return write_folder(tmp_path / (name or f"dags{next(counter)}"), files, lock)

    return make


Cli = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialized isolate home (SQLite), also exported as ISOLATE_HOME."""
    path = tmp_path / "home"
    for name in list(__import__("os").environ):
        if name.startswith("ISOLATE_") and not name.startswith("ISOLATE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ISOLATE_HOME", str(path))
    result = CliRunner().invoke(isolate, ["init"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def cli(home: Path) -> Cli:
    """Run an isolate command in-process against ``home``; returns click's Result."""

    def run(*args: str, expect: int | None = 0) -> Result:
        result = CliRunner().invoke(isolate, list(args), catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (result.exit_code, result.output, result.stderr)
        return result

    return run
