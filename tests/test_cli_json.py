"""Every ``--json`` prints JSON; docs/cli.md matches the command tree and the exit codes."""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cli.main import ENV_EXIT_CODE, isolate
from tests.conftest import ETL_DAG
from tests.osusers import os_users, unique

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
PACKAGES = ("isolate", "envcache", "localexec", "cli")
RUN_AS = unique("isojson-etl")


def _leaves(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _leaves(command, (*prefix, name))
        else:
            yield (*prefix, name)


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = isolate
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _has_json(path: tuple[str, ...]) -> bool:
    return any("--json" in getattr(p, "opts", ()) for p in _command(path).params)


JSON_COMMANDS = sorted(p for p in _leaves(isolate) if _has_json(p))


# --- every --json prints JSON ------------------------------------------------------------------


@pytest.fixture
def small_home(cli, make_folder) -> dict[str, str]:
    """A home with one pushed DAG (its env built) and one queued run: names to refer to."""
    folder = make_folder({"etl.py": ETL_DAG})
    pushed = json.loads(cli("push", str(folder), "--json").stdout)
    run = json.loads(cli("trigger", "etl", "--json").stdout)
    return {"folder": str(folder), "env_key": pushed[0]["env_key"], "run_id": run["run_id"]}


# The arguments each --json command gets on the small home; the exit codes it may end with.
ARGS: dict[tuple[str, ...], Callable[[dict[str, str]], list[str]]] = {
    ("push",): lambda h: [h["folder"]],
    ("dags", "list"): lambda h: [],
    ("dags", "show"): lambda h: ["etl"],
    ("dags", "history"): lambda h: ["etl"],
    ("dags", "diff"): lambda h: ["etl", "1", "1"],
    ("trigger",): lambda h: ["etl"],
    ("runs", "list"): lambda h: [],
    ("runs", "show"): lambda h: [h["run_id"]],
    ("runs", "grid"): lambda h: ["etl"],
    ("audit",): lambda h: [],
    ("env", "list"): lambda h: [],
    ("env", "show"): lambda h: [h["env_key"][:12]],
    ("gc",): lambda h: ["--dry-run"],
    ("doctor",): lambda h: [],
}
CODES = {("doctor",): (0, 1)}  # the findings are printed, then exit 1 if any check fails
# Commands whose --json needs more than the small home, and where it is tested.
ELSEWHERE = {
    ("tenants", "list"): "test_tenants_json_parses below (needs root and an OS user)",
    ("tenants", "check"): "test_tenants_json_parses below (needs root and an OS user)",
    ("demo",): "tests/test_demo.py (builds its own throwaway node as root)",
}


def test_every_json_command_is_exercised() -> None:
    assert set(JSON_COMMANDS) == set(ARGS) | set(ELSEWHERE)


def test_every_json_command_prints_json(cli, small_home: dict[str, str]) -> None:
    problems = {}
    for path, args in ARGS.items():
        result = cli(*path, *args(small_home), "--json", expect=None)
        name = " ".join(path)
        if result.exit_code not in CODES.get(path, (0,)):
            problems[name] = f"exit {result.exit_code}: {result.stderr.strip()}"
            continue
        try:
            document = json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            problems[name] = f"not JSON ({exc}): {result.stdout[:200]!r}"
            continue
        problems.update({f"{name}: {p}": "" for p in _shape_problems(path, document)})
    assert problems == {}


def _shape_problems(path: tuple[str, ...], document: Any) -> list[str]:
    """The --json conventions of docs/cli.md that a document breaks."""
    found = []
    if path[-1] in ("list", "history") and not isinstance(document, list):
        found.append(f"a list command printed {type(document).__name__}, not an array")
    if path[-1] in ("show", "check", "diff", "grid") and not isinstance(document, dict):
        found.append(f"a show command printed {type(document).__name__}, not an object")
    for where, value in _strings(document, "$"):
        if re.match(r"\d{4}-\d\d-\d\dT", value):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                found.append(f"{where}: {value!r} is not an ISO 8601 timestamp")
                continue
            if parsed.tzinfo is None:
                found.append(f"{where}: {value!r} has no UTC offset")
    return found


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create the tenant's OS user")
def test_tenants_json_parses(cli, home: Path, tmp_path: Path, monkeypatch) -> None:
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    etc.chmod(0o755)  # root-owned and not writable by others, as the mapping's checks want
    mapping = etc / "tenants.toml"
    mapping.write_text(
        f'[[tenant]]\nname = "etl"\ndags = ["etl*"]\npushers = ["root"]\nrun_as = "{RUN_AS}"\n'
    )
    mapping.chmod(0o644)
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(mapping))
    with os_users(RUN_AS):
        listed = json.loads(cli("tenants", "list", "--json").stdout)
        checked = json.loads(cli("tenants", "check", "etl", "--json").stdout)
    assert isinstance(listed, list) and listed[0]["run_as"] == RUN_AS
    assert checked["tenant"] == "etl" and checked["may_push"] is True


# --- docs/cli.md -------------------------------------------------------------------------------


def _doc_rows(heading: str) -> list[list[str]]:
    """The body rows of the table under ``## heading`` in docs/cli.md, as lists of cells."""
    section = DOC.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    return rows[2:]  # the header and its rule


def _documented_commands() -> dict[tuple[str, ...], bool]:
    """Each command of the table (its words up to the first placeholder) -> its --json cell."""
    found = {}
    for command, has_json, _what in _doc_rows("Commands"):
        words = command.strip("`").split()
        assert words[0] == "isolate", command
        path = tuple(w for w in words[1:] if re.fullmatch(r"[a-z][a-z-]*", w))
        found[path] = has_json == "yes"
    return found


def test_the_doc_lists_every_command_and_which_take_json() -> None:
    documented = _documented_commands()
    assert sorted(documented) == sorted(_leaves(isolate))
    assert {p for p, has in documented.items() if has} == set(JSON_COMMANDS)


def _classes() -> dict[str, tuple[list[str], int | None]]:
    """Every class of our packages: its base names and the exit_code it sets, if any."""
    found: dict[str, tuple[list[str], int | None]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ClassDef):
                    continue
                code = None
                for stmt in node.body:
                    if (
                        isinstance(stmt, ast.Assign)
                        and [ast.unparse(t) for t in stmt.targets] == ["exit_code"]
                        and isinstance(stmt.value, ast.Constant)
                    ):
                        code = stmt.value.value
                assert node.name not in found or not code, f"two classes named {node.name}"
                found.setdefault(node.name, ([ast.unparse(b) for b in node.bases], code))
    return found


def _code_of(name: str, classes: dict[str, tuple[list[str], int | None]]) -> int | None:
    """The exit code the CLI gives an error of class ``name`` (None: not an expected error)."""
    if name == "EnvCacheError":
        return ENV_EXIT_CODE
    if name not in classes:
        return None
    bases, code = classes[name]
    if code is not None:
        return code
    inherited = {_code_of(base.rpartition(".")[2], classes) for base in bases} - {None}
    assert len(inherited) <= 1, f"{name} inherits several exit codes"
    return inherited.pop() if inherited else None


def _literal_exits() -> set[int]:
    """The codes cli/ passes to sys.exit(...) or click's Exit(...) as literals."""
    codes = set()
    for path in (ROOT / "cli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith(("sys.exit", "Exit"))
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                codes.add(node.args[0].value)
    return codes


def test_the_exit_code_table_matches_the_code() -> None:
    rows = {int(code): raised for code, _meaning, raised in _doc_rows("Exit codes")}
    classes = _classes()
    setters = {name: code for name, (_, code) in classes.items() if code is not None}
    setters["EnvCacheError"] = ENV_EXIT_CODE
    assert set(rows) == {0, *setters.values()} | _literal_exits()
    for name, code in setters.items():
        assert f"`{name}`" in rows[code], f"docs/cli.md: exit code {code} does not name {name}"
    for code, raised in rows.items():
        for name in re.findall(r"`(\w+(?:Error|Exception))`", raised):
            click_class = getattr(click, name, None)
            actual = click_class.exit_code if click_class else _code_of(name, classes)
            assert actual == code, f"docs/cli.md puts {name} under {code}; it exits {actual}"


def test_the_help_epilog_names_the_documented_codes() -> None:
    text = CliRunner().invoke(isolate, ["--help"]).stdout
    epilog = " ".join(text.split("Exit codes:", 1)[1].split())
    documented = {int(code) for code, _meaning, _raised in _doc_rows("Exit codes")}
    assert {int(n) for n in re.findall(r"\b(\d) [a-z]", epilog)} == documented
    assert "docs/cli.md" in epilog
