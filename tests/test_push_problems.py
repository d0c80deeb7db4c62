"""A folder with nothing to lock needs no lockfile; a push reports every problem at once."""

from __future__ import annotations

import json

from isolate.validate import readable_meaning_problems
from tests.docs import command_task, doc_with

NO_REQUIREMENTS_DAG = """
    from isolate import DAG, CommandTask

    with DAG("plain") as dag:
        CommandTask("t", command=["true"])
"""


def test_a_folder_without_lockfile_pushes_an_env_with_no_packages(cli, make_folder) -> None:
    folder = make_folder({"dag.py": NO_REQUIREMENTS_DAG}, lock=None)
    (pushed,) = json.loads(cli("push", str(folder), "--json").stdout)
    assert pushed["status"] == "new" and pushed["env_key"]
    shown = cli("dags", "show", "plain").stdout
    assert "lockfile:  - (no packages: the env is the node's interpreter alone)" in shown
    spec = json.loads(cli("dags", "show", "plain", "--json").stdout)["spec"]
    assert spec["environment"]["lock"] == ""


def test_a_push_lists_every_problem_and_stores_nothing(cli, make_folder) -> None:
    folder = make_folder(
        {
            "a.py": "from isolate import DAG\nDAG('a', schedule='every day', "
            "start_date='2024-01-01T00:00:00+00:00', requirements=['six'])\n",
            "b.py": "from isolate import DAG\nDAG('b b')\n",
        },
        lock=None,
    )
    refused = cli("push", str(folder), expect=4)
    line = refused.stderr.strip()
    assert "\n" not in line
    assert "dag a: lockfile 'requirements.txt' is not in the folder" in line
    assert "dag a: schedule: invalid cron expression 'every day'" in line
    assert "b.py: dag_id: invalid id 'b b'" in line
    assert json.loads(cli("dags", "list", "--json").stdout) == []


def test_meaning_checks_run_on_a_document_the_schema_refuses() -> None:
    doc = doc_with(
        [command_task("a", ["true"], upstream=["b"]), command_task("b", ["true"], upstream=["a"])],
        dag_id="not valid!",
        schedule="every day",
    )
    schedule, start, cycle = readable_meaning_problems(doc)
    assert schedule.startswith("schedule: invalid cron expression 'every day'")
    assert start == "start_date: required when a schedule is set"
    assert cycle == "tasks: dependency cycle a -> b -> a"


def test_meaning_checks_skip_what_they_cannot_read() -> None:
    task = command_task("a", ["true"])
    for broken in (
        doc_with([{**task, "task_id": "a\nb"}]),  # not one line: the schema's message only
        doc_with([{**task, "upstream": "b"}]),
        doc_with([{**task, "env": {"X\n": "1"}}]),
        doc_with([task], timezone=3),
        {**doc_with([task]), "environment": None},
        {**doc_with([task]), "tasks": {"a": task}},
        ["not", "a", "document"],
    ):
        assert readable_meaning_problems(broken) == []
