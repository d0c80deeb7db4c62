"""Pictures: ``isolate dags show --format dot|svg`` and ``isolate runs grid``."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from isolate.format import load_document
from isolate.graph import dot_string, run_grid, to_dot, topological_order
from isolate.states import RunState, TaskState
from isolate.store import RunRecord
from tests.conftest import ETL_DAG
from tests.docs import command_task, doc_with, python_task
from tests.test_scheduler import run_scheduler

# A node statement ("id" [label="..."];) or an edge ("a" -> "b";), with DOT's quoted strings.
QUOTED = r'"((?:[^"\\]|\\.)*)"'
NODE = re.compile(rf"^\s*{QUOTED} \[label={QUOTED}\];$")
EDGE = re.compile(rf"^\s*{QUOTED} -> {QUOTED};$")
GRAPH = re.compile(rf"^\s*graph \[rankdir=LR, labelloc=t, label={QUOTED}\];$")


def unquote(text: str) -> str:
    """What Graphviz shows for a quoted string that :func:`to_dot` wrote (between quotes):
    ``\\n`` a line break, ``\\x`` the character x, then entities decoded."""
    shown = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], text)
    return shown.replace("&amp;", "&")


def parse_dot(text: str) -> tuple[str, dict[str, str], set[tuple[str, str]]]:
    """The title, nodes (id -> label) and edges of the DOT that :func:`to_dot` writes; every
    line must be one of its statements, so nothing else was smuggled in."""
    lines = text.splitlines()
    head = re.fullmatch(rf"digraph {QUOTED} {{", lines[0])
    assert head is not None and lines[-1] == "}", text
    title = unquote(head[1])
    nodes: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    for line in lines[1:-1]:
        if node := NODE.match(line):
            nodes[unquote(node[1])] = unquote(node[2])
        elif edge := EDGE.match(line):
            edges.add((unquote(edge[1]), unquote(edge[2])))
        elif graph := GRAPH.match(line):
            assert unquote(graph[1]) == title
        else:
            assert line.lstrip().startswith(("node [", "edge [")) and '"' not in line, line
    return title, nodes, edges


def diamond() -> dict:
    return doc_with(
        [
            python_task("load", upstream=["extract", "clean"], retry={"retries": 3}),
            python_task("extract"),
            python_task("clean", upstream=["extract"]),
            command_task("report", ["true"], upstream=["load"], trigger_rule="all_done"),
        ]
    )


def test_topological_order_puts_upstream_first_and_breaks_ties_by_id() -> None:
    spec = load_document(json.dumps(diamond()))
    assert topological_order(spec) == ["extract", "clean", "load", "report"]
    wide = load_document(json.dumps(doc_with([python_task(i) for i in ("c", "a", "b")])))
    assert topological_order(wide) == ["a", "b", "c"]


def test_dot_has_every_task_and_edge_with_its_details() -> None:
    spec = load_document(json.dumps(diamond()))
    title, nodes, edges = parse_dot(to_dot(spec, 4))
    assert title == "etl v4"
    assert set(nodes) == {"extract", "clean", "load", "report"}
    assert edges == {
        ("extract", "clean"),
        ("extract", "load"),
        ("clean", "load"),
        ("load", "report"),
    }
    assert nodes["extract"] == "extract\n(python)"
    assert nodes["load"] == "load\n(python, retries=3)"
    assert nodes["report"] == "report\n(command, all_done)"


@pytest.mark.parametrize(
    "hostile",
    [
        'x"; evil [label="pwned"]; "y',
        "back\\slash\\",
        "line\nbreak\r\x1b[31m",
        "\\N \\G &lt;&amp;",
        "} digraph { a -> b",
    ],
)
def test_dot_escapes_hostile_ids_and_labels(hostile: str) -> None:
    # Validation refuses such ids; the picture must stay well-formed even so.
    spec = load_document(json.dumps(doc_with([python_task("a"), python_task("b")])))
    a, b = spec.tasks
    spec = dataclasses.replace(
        spec,
        dag_id=hostile,
        tasks=(
            dataclasses.replace(a, task_id=hostile),
            dataclasses.replace(b, upstream=(hostile,)),
        ),
    )
    title, nodes, edges = parse_dot(to_dot(spec))
    shown = "".join(ch if ch.isprintable() else "?" for ch in hostile)
    assert title == shown
    assert set(nodes) == {shown, "b"}
    assert nodes[shown] == shown + "\n(python)"
    assert edges == {(shown, "b")}
    assert dot_string('a"b\\') == '"a\\"b\\\\"'


def test_dags_show_dot_and_json_still_work(cli, make_folder) -> None:
    cli("push", str(make_folder({"etl.py": ETL_DAG})))
    title, nodes, edges = parse_dot(cli("dags", "show", "etl", "--format", "dot").stdout)
    assert title == "etl v1"
    assert set(nodes) == {"extract", "load", "report"}
    assert edges == {("extract", "load"), ("load", "report")}
    assert nodes["report"] == "report\n(command, retries=1)"  # the DAG's default_args
    as_format = json.loads(cli("dags", "show", "etl", "--format", "json").stdout)
    assert as_format == json.loads(cli("dags", "show", "etl", "--json").stdout)
    assert "TASK_ID" in cli("dags", "show", "etl", "--format", "text").stdout
    clash = cli("dags", "show", "etl", "--json", "--format", "dot", expect=2)
    assert clash.stderr.count("\n") == 1 and "--json" in clash.stderr
    missing = cli("dags", "show", "etl", "--format", "dot", "--version", "9", expect=3)
    assert "no version 9" in missing.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_dags_show_svg_with_graphviz(cli, make_folder) -> None:
    cli("push", str(make_folder({"etl.py": ETL_DAG})))
    svg = cli("dags", "show", "etl", "--format", "svg").stdout
    assert "<svg" in svg and "</svg>" in svg
    assert all(f">{task}</text>" in svg for task in ("extract", "load", "report"))


def test_dags_show_svg_pipes_dot_through_graphviz(
    cli, make_folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in `dot` that records its arguments and input, so the plumbing is tested
    # whether Graphviz is installed or not.
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat > {tmp_path}/input\necho "<svg/>"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    cli("push", str(make_folder({"etl.py": ETL_DAG})))
    assert cli("dags", "show", "etl", "--format", "svg").stdout == "<svg/>\n"
    assert (tmp_path / "args").read_text() == "-Tsvg\n"
    assert (tmp_path / "input").read_text() == cli("dags", "show", "etl", "--format", "dot").stdout
    fake.write_text("#!/bin/sh\necho 'Error: <stdin>: syntax error in line 1' >&2\nexit 1\n")
    failed = cli("dags", "show", "etl", "--format", "svg", expect=1)
    assert (
        failed.stderr
        == "isolate: error: Graphviz's dot failed: Error: <stdin>: syntax error in line 1\n"
    )


def test_dags_show_svg_without_graphviz_is_one_line(
    cli, make_folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("push", str(make_folder({"etl.py": ETL_DAG})))
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    result = cli("dags", "show", "etl", "--format", "svg", expect=1)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "install graphviz" in result.stderr


V1 = """
    from isolate import DAG, CommandTask

    with DAG("pics") as dag:
        CommandTask("extract", command=["true"]) >> CommandTask("old_step", command=["false"]) \\
            >> CommandTask("load", command=["true"])
"""
V2 = """
    from isolate import DAG, CommandTask

    with DAG("pics") as dag:
        CommandTask("extract", command=["true"]) >> CommandTask("new_step", command=["true"]) \\
            >> CommandTask("load", command=["true"])
"""


def test_grid_keeps_rows_of_tasks_only_older_versions_have(cli, make_folder, home: Path) -> None:
    assert "no DAG 'pics'" in cli("runs", "grid", "pics", expect=3).stderr
    folder = make_folder({"dag.py": V1})
    cli("push", str(folder))
    assert cli("runs", "grid", "pics").stdout == "pics: no runs yet\n"
    first = json.loads(cli("trigger", "pics", "--json").stdout)["run_id"]
    (folder / "dag.py").write_text(textwrap.dedent(V2))
    cli("push", str(folder))
    second = json.loads(cli("trigger", "pics", "--json").stdout)["run_id"]
    third = json.loads(cli("trigger", "pics", "--version", "1", "--json").stdout)["run_id"]
    run_scheduler(home)

    grid = json.loads(cli("runs", "grid", "pics", "--json").stdout)
    assert grid["dag_id"] == "pics"
    assert [(r["run_id"], r["version"], r["state"]) for r in grid["runs"]] == [
        (first, 1, "failed"),
        (second, 2, "success"),
        (third, 1, "failed"),
    ]
    rows = {t["task_id"]: (t["in_latest"], t["cells"]) for t in grid["tasks"]}
    assert [t["task_id"] for t in grid["tasks"]] == ["extract", "new_step", "load", "old_step"]
    assert rows == {
        "extract": (True, ["success", "success", "success"]),
        "new_step": (True, [None, "success", None]),
        "load": (True, ["upstream_failed", "success", "upstream_failed"]),
        "old_step": (False, ["failed", None, "failed"]),
    }
    limited = json.loads(cli("runs", "grid", "pics", "--limit", "1", "--json").stdout)
    assert [r["run_id"] for r in limited["runs"]] == [third]
    assert [t["task_id"] for t in limited["tasks"]] == ["extract", "new_step", "load", "old_step"]

    text = cli("runs", "grid", "pics").stdout
    assert "\x1b[" not in text  # no colours when not a terminal
    lines = text.splitlines()
    assert lines[:6] == [
        "pics: 3 most recent runs, oldest on the left",
        "TASK       1 2 3",
        "(run)      F S F",
        "extract    S S S",
        "new_step     S",
        "load       U S U",
    ]
    assert lines[6] == "old_step*  F   F"
    assert "* not in the latest version (v2)" in lines
    assert any(line.startswith("S success  F failed") for line in lines)
    assert any(line.startswith("2  ") and second in line for line in lines)


def test_grid_cells_for_tasks_without_instances_and_unknown_versions() -> None:
    spec = load_document(json.dumps(doc_with([python_task("a"), python_task("b", upstream=["a"])])))
    run = _run("r1", version=1)
    grid = run_grid(
        spec, [run], {1: spec}, {"r1": {"a": TaskState.RUNNING, "zz": TaskState.QUEUED}}
    )
    assert [(r.task_id, r.in_latest, r.cells) for r in grid.rows] == [
        ("a", True, (TaskState.RUNNING,)),
        ("b", True, (TaskState.NONE,)),  # in the run's version, no instance (yet)
        ("zz", False, (TaskState.QUEUED,)),  # an instance no version lists: shown, not lost
    ]


def _run(run_id: str, version: int) -> RunRecord:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    return RunRecord(
        dag_id="etl",
        run_id=run_id,
        version=version,
        run_type="manual",
        logical_date=now,
        state=RunState.RUNNING,
        conf={},
        created_by="me",
        created_at=now,
        started_at=now,
        ended_at=None,
    )
