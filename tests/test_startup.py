"""`isolate` starts fast: what `--help`, `--version`, completion and the store's opening
import, checked in fresh interpreters (the speed itself is bench/bench_startup.py's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cli.main import COMMANDS, isolate
from isolate.store import migrate, revision

HEAVY = ("sqlalchemy", "alembic", "jsonschema", "jinja2", "localexec.scheduler")

PROBE = """
import json, os, sys
from cli.main import isolate
try:
    isolate.main(sys.argv[1:], prog_name="isolate", standalone_mode=True)
except SystemExit:
    pass
sys.stdout.flush()
os.write({fd}, json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})).encode())
"""


def loaded(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    """The heavy top-level modules a fresh `isolate ARGS` imported."""
    read, write = os.pipe()
    heavy = sorted({name.split(".")[0] for name in HEAVY} | {"localexec"})
    code = PROBE.format(heavy=heavy, fd=write)
    subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **(env or {})},
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )
    os.close(write)
    with os.fdopen(read) as fh:
        names = json.loads(fh.read())  # nothing written (the probe failed) fails the test
    return {name for name in names if name in HEAVY or name.split(".")[0] in HEAVY}


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["version"], ["dags", "--help"]])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    assert loaded(args) == set()


@pytest.mark.parametrize("words", ["isolate da", "isolate dags ", "isolate runs ", "isolate env "])
def test_completing_a_command_imports_nothing_heavy(words: str) -> None:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {"_ISOLATE_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    assert loaded([], env) == set()


def test_listing_dags_on_sqlite_loads_neither_sqlalchemy_nor_alembic(tmp_path: Path) -> None:
    env = {"ISOLATE_HOME": str(tmp_path / "home")}
    init = "import sys; from cli.main import main; sys.argv = ['isolate', 'init']; main()"
    subprocess.run(
        [sys.executable, "-c", init], env={**os.environ, **env}, check=False, capture_output=True
    )
    assert loaded(["dags", "list"], env) == set()


def test_the_command_table_says_what_each_command_says() -> None:
    for name in COMMANDS:
        command = isolate.commands[name]
        assert isinstance(command, click.Command)
        assert COMMANDS[name][2] == command.get_short_help_str(limit=1000), name
    assert sorted(isolate.commands) == sorted(COMMANDS)


def test_the_schema_check_knows_the_newest_migration() -> None:
    assert migrate.head_revision() == revision.HEAD_REVISION
