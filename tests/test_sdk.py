"""The authoring SDK: DAG context, task classes, dependencies and the TaskFlow decorator."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

import isolate
from isolate import DAG, CommandTask, PythonTask, XComArg, task
from isolate.errors import DagDefinitionError, ValidationError
from isolate.format import canonical_json, load_object
from isolate.model import DagSpec
from isolate.sdk import RUNTIME_FILES
from tests.docs import BUNDLE_HASH, environment


@task
def extract() -> list[int]:
    return [1, 2, 3]


@task(retries=4, execution_timeout=timedelta(minutes=2))
def load(rows: list[int], scale: int = 1) -> int:
    return sum(rows) * scale


def on_failure(context: dict[str, object]) -> None:
    """A module-level callback."""


def tasks_of(dag: DAG) -> dict[str, dict[str, object]]:
    return {t["task_id"]: t for t in dag.to_draft()["tasks"]}


def test_classic_tasks_and_all_dependency_spellings() -> None:
    with DAG("deps") as dag:
        a = PythonTask("a", callable="pkg.mod:fn", args=[1], kwargs={"x": "{{ ds }}"})
        b = CommandTask("b", command=["echo", "hi"])
        c = CommandTask("c", command="echo $HOME | wc -c")
        d = PythonTask("d", callable="pkg.mod:fn")
        e = PythonTask("e", callable="pkg.mod:fn")
        assert (a >> b) is b
        [a, b] >> c
        d << [a, c]
        e.set_upstream(d)
        a >> [e]
    tasks = tasks_of(dag)
    assert tasks["b"]["upstream"] == ["a"]
    assert tasks["c"]["upstream"] == ["a", "b"]
    assert tasks["d"]["upstream"] == ["a", "c"]
    assert tasks["e"]["upstream"] == ["a", "d"]
    assert tasks["a"]["kwargs"] == {"x": "{{ ds }}"}
    assert tasks["c"]["command"] == "echo $HOME | wc -c"
    assert tasks["b"]["kind"] == "command" and tasks["a"]["kind"] == "python"


def test_taskflow_wires_dependencies_and_xcom_references() -> None:
    with DAG("flow") as dag:
        rows = extract()
        assert isinstance(rows, XComArg)
        total = load(rows, scale=2)
        both = load({"nested": [rows]})
    tasks = tasks_of(dag)
    assert set(tasks) == {"extract", "load", "load__1"}
    assert tasks["load"]["args"] == [{"$xcom": "extract"}]
    assert tasks["load"]["kwargs"] == {"scale": 2}
    assert tasks["load"]["upstream"] == ["extract"]
    assert tasks["load__1"]["args"] == [{"nested": [{"$xcom": "extract"}]}]
    assert tasks["load"]["callable"] == f"{__name__}:load"
    assert tasks["load"]["retry"]["retries"] == 4
    assert tasks["load"]["retry"]["execution_timeout"] == 120
    assert isinstance(total, XComArg) and isinstance(both, XComArg)


def test_decorated_function_is_the_plain_function_outside_a_dag() -> None:
    assert load([1, 2], scale=3) == 9
    assert load.function([4]) == 4
    assert extract.__name__ == "extract" and extract.__wrapped__() == [1, 2, 3]


def test_override_and_output_of_classic_tasks() -> None:
    with DAG("over") as dag:
        first = PythonTask("first", callable="m:f")
        load.override(task_id="custom", retries=0)(first.output)
    tasks = tasks_of(dag)
    assert tasks["custom"]["upstream"] == ["first"]
    assert tasks["custom"]["retry"]["retries"] == 0
    assert tasks["custom"]["args"] == [{"$xcom": "first"}]


def test_default_args_callbacks_and_naive_dates_in_the_dag_time_zone() -> None:
    with DAG(
        "cfg",
        schedule="0 6 * * *",
        timezone="Europe/Paris",
        start_date=datetime(2024, 7, 1),
        end_date=date(2024, 12, 31),
        default_args={
            "retries": 2,
            "retry_delay": timedelta(seconds=90),
            "on_failure_callback": on_failure,
        },
        tags=["b", "a", "b"],
    ) as dag:
        PythonTask("t", callable="m:f", on_retry_callback="m:cb", limits={"memory": "1G"})
    draft = dag.to_draft()
    assert draft["start_date"] == "2024-07-01T00:00:00+02:00"
    assert draft["end_date"] == "2024-12-31T00:00:00+01:00"
    assert draft["defaults"]["retries"] == 2 and draft["defaults"]["retry_delay"] == 90
    assert draft["defaults"]["callbacks"]["on_failure"] == f"{__name__}:on_failure"
    assert draft["tags"] == ["a", "b"]
    t = draft["tasks"][0]
    assert t["callbacks"]["on_retry"] == "m:cb"
    assert t["limits"]["memory"] == "1G"


def _spec(dag: DAG) -> DagSpec:
    return load_object(
        {
            **dag.to_draft(),
            "format_version": 1,
            "environment": environment(),
            "bundle": {"hash": BUNDLE_HASH},
        }
    )


@task(priority_weight=7)
def urgent() -> None:
    """A TaskFlow task with a priority of its own."""


def test_max_active_tasks_and_priority_weight_as_in_airflow() -> None:
    with DAG(
        "prio",
        max_active_tasks=3,
        default_args={"priority_weight": 5, "retries": 1, "weight_rule": "absolute"},
    ) as dag:
        PythonTask("inherits", callable="m:f")
        CommandTask("own", command=["true"], priority_weight=-2)
        PythonTask("none_inherits", callable="m:f", priority_weight=None)
        urgent()
        urgent.override(task_id="urgent_again", priority_weight=9)()
    draft = dag.to_draft()
    assert draft["max_active_tasks"] == 3
    assert "priority_weight" not in draft["defaults"]  # no DAG-wide field: given to each task
    weights = {t["task_id"]: t["priority_weight"] for t in draft["tasks"]}
    assert weights == {
        "inherits": 5,
        "own": -2,
        "none_inherits": 5,
        "urgent": 7,
        "urgent_again": 9,
    }
    spec = _spec(dag)
    assert spec.max_active_tasks == 3
    assert {t.task_id: t.priority_weight for t in spec.tasks} == weights


def test_without_them_a_dag_gets_airflows_defaults_and_its_old_document() -> None:
    with DAG("plain") as dag:
        PythonTask("t", callable="m:f")
    draft = dag.to_draft()
    assert draft["max_active_tasks"] == 16 and draft["tasks"][0]["priority_weight"] == 1
    text = canonical_json(_spec(dag))
    assert "max_active_tasks" not in text and "priority_weight" not in text


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DAG("d", max_active_tasks=0), "max_active_tasks: 0 is less than the minimum of 1"),
        (
            lambda: PythonTask("x", callable="m:f", dag=DAG("d"), priority_weight="high"),
            "tasks[x].priority_weight: expected integer, got string",
        ),
        (lambda: DAG("d", max_active_tasks=True), "max_active_tasks: expected integer"),
    ],
)
def test_bad_values_are_refused_by_the_format(build, message: str) -> None:
    dag = build()
    with pytest.raises(ValidationError) as info:
        _spec(dag if isinstance(dag, DAG) else dag.dag)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PythonTask("x", callable="m:f"), "not in a DAG"),
        (lambda: DAG("d", default_args={"owner": "me"}), "unknown default_args ['owner']"),
        (
            lambda: PythonTask("x", callable="m:f", dag=DAG("d"), pool="p"),
            "unknown argument(s) ['pool']",
        ),
        (
            lambda: PythonTask("x", callable="m:f", dag=DAG("d"), limits={"gpu": 1}),
            "unknown limit(s)",
        ),
        (
            lambda: PythonTask(
                "x", callable="m:f", dag=DAG("d"), kwargs={"when": datetime(2024, 1, 1)}
            ),
            "kwargs.when: datetime is not JSON",
        ),
        (
            lambda: PythonTask("x", callable="m:f", dag=DAG("d"), args=[float("nan")]),
            "args[0]: nan",
        ),
        (
            lambda: PythonTask("x", callable="m:f", dag=DAG("d"), kwargs={"r": {"$xcom": "y"}}),
            "reserved",
        ),
        (lambda: PythonTask("x", callable="m:f", dag=DAG("d"), kwargs={1: 2}), "not a string"),
        (
            lambda: CommandTask("x", command=["echo", 1], dag=DAG("d")),
            "command items must be strings",
        ),
        (lambda: DAG(""), "non-empty string"),
        (
            lambda: DAG("d", start_date=datetime(2024, 1, 1), timezone="Nowhere/Land"),
            "unknown time zone",
        ),
        (lambda: DAG("d", default_args={"retry_delay": "5m"}), "expected a timedelta or seconds"),
        (
            lambda: PythonTask("x", callable="m:f", dag=DAG("d"), weight_rule="downstream"),
            "task x: weight_rule 'downstream' is not supported: a task's priority is its own "
            "priority_weight (Airflow's 'absolute' rule)",
        ),
        (
            lambda: DAG("d", default_args={"weight_rule": "upstream"}),
            "default_args: weight_rule 'upstream' is not supported",
        ),
    ],
)
def test_definition_errors_are_clear(build, message: str) -> None:
    with pytest.raises(DagDefinitionError) as info:
        build()
    assert message in str(info.value)


def test_duplicate_task_ids_and_cross_dag_edges_are_refused() -> None:
    with DAG("one") as one:
        PythonTask("a", callable="m:f")
        with pytest.raises(DagDefinitionError, match="task id 'a' is used twice"):
            PythonTask("a", callable="m:f")
        a = one.tasks["a"]
    with DAG("two"):
        b = PythonTask("b", callable="m:f")
        with pytest.raises(DagDefinitionError, match="of DAG one"):
            a >> b
        with pytest.raises(DagDefinitionError, match="pass task.output"):
            PythonTask("c", callable="m:f", args=[b])
        with pytest.raises(DagDefinitionError, match="not a task"):
            b >> "c"


def test_functions_that_cannot_be_imported_by_path_are_refused() -> None:
    def local() -> None:
        pass

    with DAG("d"):
        with pytest.raises(DagDefinitionError, match="module-level function"):
            PythonTask("x", callable=local)
        with pytest.raises(DagDefinitionError, match="module-level function"):
            task(local)()
        with pytest.raises(DagDefinitionError, match="module-level function"):
            PythonTask("y", callable=lambda: None)


def test_the_sdk_imports_with_the_standard_library_alone(tmp_path: Path) -> None:
    """What a task's interpreter gets: only RUNTIME_FILES, no site-packages, no isolate install."""
    package = tmp_path / "path" / "isolate"
    package.mkdir(parents=True)
    for name in RUNTIME_FILES:
        shutil.copy(Path(isolate.__file__).parent / name, package / name)
    (tmp_path / "path" / "flow.py").write_text(
        textwrap.dedent(
            """
            from isolate import DAG, task

            @task
            def double(x):
                return 2 * x

            with DAG("flow") as dag:
                double(double(1))
            """
        )
    )
    probe = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])  # as the runner will: the task's path, explicitly
        import flow
        assert flow.double(21) == 42
        assert sorted(flow.dag.tasks) == ["double", "double__1"]
        names = {m.split(".")[0] for m in sys.modules}
        assert not names & {"jinja2", "jsonschema", "sqlalchemy", "click", "croniter"}, names
        assert set(m for m in sys.modules if m.startswith("isolate")) == {
            "isolate", "isolate.sdk", "isolate.errors"}
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(tmp_path / "path")],
        capture_output=True,
        text=True,
        env={},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
