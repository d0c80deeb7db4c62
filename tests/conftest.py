from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import isolate
from tests.databases import SKIP_REASON, backend_label, drop_schema, server_urls
from tests.envcache.wheels import make_wheel, sha256_of
from tests.osusers import clear_isolate_env

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


# World-executable on the test machine; envs must be usable by unprivileged users.
PYTHON = "/usr/bin/python3.11"
BIG = tuple(f"pkg{i:02d}" for i in range(10))


@dataclass
class Wheelhouse:
    """A directory of wheels and their sha256 hashes, to write real lockfiles from."""

    path: Path
    hashes: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, version: str, **kwargs: object) -> None:
        wheel = make_wheel(self.path, name, version, **kwargs)  # type: ignore[arg-type]
        self.hashes[f"{name}=={version}"] = sha256_of(wheel)

    def lock(self, *pins: str) -> str:
        """requirements.txt text for pins like ``tinylib==1.0``, with their real hashes."""
        return "".join(f"{pin} \\\n    --hash={self.hashes[pin]}\n" for pin in pins)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    house = Wheelhouse(tmp_path_factory.mktemp("wheelhouse"))
    house.add("tinylib", "1.0")
    house.add("tinylib", "2.0")
    house.add("otherlib", "1.0")
    for name in BIG:
        body = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(50))
        house.add(name, "1.0", files={f"{name}/__init__.py": body, f"{name}/data.py": body})
    return house


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
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_HOME", str(path))
    monkeypatch.setenv("ISOLATE_OFFLINE", "true")  # tests never reach for the network
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", PYTHON)
    # The suite runs as root on a throwaway node with no tenant mapping (tests of the
    # mapping and of the refusal set their own).
    monkeypatch.setenv("ISOLATE_ALLOW_ROOT_TASKS", "true")
    result = CliRunner().invoke(isolate, ["init"])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def unconfined(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Landlock and no bubblewrap for the tasks of a test whose tasks report through
    files outside their sandbox, or their host pids (tests/test_sandbox.py tests those)."""
    monkeypatch.setenv("ISOLATE_LANDLOCK", "off")
    monkeypatch.setenv("ISOLATE_BUBBLEWRAP", "off")


@pytest.fixture
def cli(home: Path) -> Cli:
    """Run an isolate command in-process against ``home``; returns click's Result."""

    def run(*args: str, expect: int | None = 0) -> Result:
        result = CliRunner().invoke(isolate, list(args), catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (result.exit_code, result.output, result.stderr)
        return result

    return run


def _database_params() -> list[object]:
    params: list[object] = [pytest.param("sqlite", id="sqlite")]
    urls = server_urls()
    params += [pytest.param(url, id=backend_label(url)) for url in urls]
    if not urls:
        params.append(pytest.param("", id="servers", marks=pytest.mark.skip(reason=SKIP_REASON)))
    return params


@pytest.fixture(params=_database_params())
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend under test: SQLite, plus the servers configured."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'isolate.db'}"
        return
    drop_schema(request.param)
    yield request.param
    drop_schema(request.param)


@pytest.fixture(autouse=True)
def _isolate_logger_restored() -> Iterator[None]:
    """``isolate scheduler`` run in-process configures the ``isolate`` logger for a daemon
    (a handler on the stderr of that moment, no propagation): undo it after each test, so
    later tests' ``caplog`` sees records and nothing writes to a closed capture stream."""
    logger = logging.getLogger("isolate")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]
