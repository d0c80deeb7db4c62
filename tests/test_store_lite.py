"""The stdlib reader of a SQLite store gives what the store gives, or steps aside."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from isolate.config import load_config
from isolate.services.home import open_store
from isolate.services.listing import dag_summaries
from isolate.store import lite
from tests.conftest import Cli

DAG = """from isolate import DAG, CommandTask
with DAG("{id}"):
    CommandTask("t", command=["true"])
"""


def _push(cli: Cli, make_folder: Callable[..., Path], *dag_ids: str) -> None:
    for dag_id in dag_ids:
        cli("push", str(make_folder({"dag.py": DAG.format(id=dag_id)})))


def test_it_lists_what_the_store_lists(
    home: Path, cli: Cli, make_folder: Callable[..., Path]
) -> None:
    _push(cli, make_folder, "b.second", "a.first")
    changed = make_folder({"dag.py": DAG.format(id="a.first") + "# v2\n"})
    cli("push", str(changed))
    cli("dags", "pause", "b.second")
    config = load_config(None)
    quick = lite.list_dags(config.database_url)
    with open_store(config) as store:
        full = store.list_dags()
    assert quick == full
    assert [(s.dag_id, s.latest_version, s.is_paused) for s in full] == [
        ("a.first", 2, False),
        ("b.second", 1, True),
    ]
    assert all(s.pushed_at is not None and s.pushed_at.tzinfo is not None for s in full)
    assert dag_summaries(config) == full


def test_an_empty_store_lists_nothing(home: Path) -> None:
    assert lite.list_dags(load_config(None).database_url) == []


def test_it_steps_aside_for_what_it_does_not_read(home: Path, tmp_path: Path) -> None:
    url = load_config(None).database_url
    path = Path(url.removeprefix("sqlite:///"))
    for other in (
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        f"sqlite+pysqlite:///{path}",
        f"{url}?timeout=3",
        "sqlite:///:memory:",
        "sqlite://",
    ):
        assert lite.list_dags(other) is None, other
    missing = tmp_path / "missing.db"
    assert lite.list_dags(f"sqlite:///{missing}") is None
    assert not missing.exists()  # looking did not create it
    old = tmp_path / "old.db"
    shutil.copy(path, old)
    with sqlite3.connect(old) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    assert lite.list_dags(f"sqlite:///{old}") is None
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert lite.list_dags(f"sqlite:///{garbage}") is None


def test_a_store_lite_cannot_read_is_the_store_s_to_explain(home: Path, cli: Cli) -> None:
    path = Path(load_config(None).database_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    result = cli("dags", "list", expect=None)
    assert result.exit_code == 6
    assert result.stderr.startswith("isolate: error: database schema is at 0001")
    assert "run `isolate db upgrade`" in result.stderr
