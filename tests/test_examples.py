"""The example DAG folders of examples/: pushed and run as a user would, every feature they
show (TaskFlow XComs, command tasks, templated fields, retries, callbacks) doing its part."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.test_scheduler import run_scheduler

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def push_and_run(cli: Any, home: Path, tmp_path: Path, name: str, dag_id: str) -> dict[str, Any]:
    folder = shutil.copytree(EXAMPLES / name, tmp_path / name)  # as an author's checkout
    cli("push", str(folder))
    run_id = json.loads(cli("trigger", dag_id, "--json").stdout)["run_id"]
    run_scheduler(home)
    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    shown["tasks"] = {t["task_id"]: t for t in shown["tasks"]}
    shown["logs"] = home / "logs" / dag_id / run_id
    return shown


def test_the_etl_example_passes_xcoms_and_renders_its_report(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    shown = push_and_run(cli, home, tmp_path, "etl", "example.etl")
    tasks = shown["tasks"]
    assert shown["state"] == "success"
    assert {t["state"] for t in tasks.values()} == {"success"}
    assert tasks["summarize"]["xcom"] == {"a": 3, "b": 4}
    assert tasks["load"]["xcom"] == 2
    ds = shown["logical_date"][:10]
    assert f"loaded for {ds}" in (shown["logs"] / "report" / "1.log").read_text()


def test_the_ops_example_retries_renders_and_calls_back(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    shown = push_and_run(cli, home, tmp_path, "ops", "example.ops")
    tasks, logs = shown["tasks"], shown["logs"]
    assert shown["state"] == "success", tasks
    assert {t["state"] for t in tasks.values()} == {"success"}
    ds = shown["logical_date"][:10]
    assert f"{ds.replace('-', '')}.stamp" in (logs / "stage" / "1.log").read_text()
    # The flaky step: try 1 failed (exit 75), its retry callback ran, try 2 succeeded.
    assert tasks["fetch"]["try_number"] == 2
    assert "upstream busy (try 1)" in (logs / "fetch" / "1.log").read_text()
    assert "retrying fetch after try 1" in (logs / "fetch" / "1.on_retry.log").read_text()
    assert "fetched 42 rows" in (logs / "fetch" / "2.log").read_text()
    assert tasks["count"]["xcom"] == {"keep_days": 7, "run": shown["run_id"]}
    assert f"count done for {ds}" in (logs / "count" / "1.on_success.log").read_text()
    assert "older than 7 days" in (logs / "cleanup" / "1.log").read_text()
    assert not list(logs.rglob("*.on_failure.log"))  # nothing failed for good
