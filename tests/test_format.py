"""The serialized DAG format: every validation error, the canonical form, format evolution.

Every rejection test asserts the located message (``where: what``), not only the type.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from isolate import format as fmt
from isolate.diff import diff_specs
from isolate.errors import FormatVersionError, ValidationError
from isolate.format import FORMAT_VERSION, canonical_json, load_document, load_object, spec_hash
from isolate.model import DagSpec
from isolate.validate import lock_digest
from tests.docs import (
    command_task,
    doc_with,
    dumps,
    environment,
    full_doc,
    minimal_doc,
    python_task,
)

Doc = dict[str, Any]
Mutation = Callable[[Doc], object]
REPO = Path(__file__).resolve().parents[1]


def problems(data: Any, **kwargs: Any) -> list[str]:
    """The problems ``load_document`` reports for a document (dict) or raw JSON text/bytes."""
    text = data if isinstance(data, str | bytes | bytearray) else dumps(data)
    with pytest.raises(ValidationError) as info:
        load_document(text, **kwargs)
    assert info.value.problems, "a ValidationError always names its problems"
    return info.value.problems


def assert_problem(found: list[str], where: str, what: str) -> None:
    """Some problem is located at ``where`` and says ``what``."""
    prefix = f"{where}: "
    assert any(p.startswith(prefix) and what in p for p in found), (
        f"no problem '{prefix}...{what}...' in {found}"
    )


def mutated(mutate: Mutation, base: Callable[[], Doc] = minimal_doc) -> Doc:
    doc = base()
    mutate(doc)
    return doc


def task0(doc: Doc) -> Doc:
    task: Doc = doc["tasks"][0]
    return task


def load(doc: Any) -> DagSpec:
    return load_document(dumps(doc))


# --- unknown, missing and wrongly typed fields -----------------------------------------

UNKNOWN_FIELDS: list[tuple[str, Mutation, str, str]] = [
    ("top level", lambda d: d.update(owner="me"), "document", "unknown field 'owner'"),
    ("task", lambda d: task0(d).update(retries=1), "tasks[a]", "unknown field 'retries'"),
    ("retry", lambda d: task0(d).update(retry={"tries": 1}), "tasks[a].retry", "'tries'"),
    ("limits", lambda d: task0(d).update(limits={"mem": 1}), "tasks[a].limits", "'mem'"),
    (
        "callbacks",
        lambda d: task0(d).update(callbacks={"on_error": "m:f"}),
        "tasks[a].callbacks",
        "unknown field 'on_error'",
    ),
    ("defaults", lambda d: d.update(defaults={"timeout": 1}), "defaults", "'timeout'"),
    (
        "defaults.callbacks",
        lambda d: d.update(defaults={"callbacks": {"on_fail": "m:f"}}),
        "defaults.callbacks",
        "unknown field 'on_fail'",
    ),
    (
        "environment",
        lambda d: d["environment"].update(python="3.11"),
        "environment",
        "unknown field 'python'",
    ),
    ("bundle", lambda d: d["bundle"].update(size=1), "bundle", "unknown field 'size'"),
]

MISSING_FIELDS: list[tuple[str, Mutation, str, str]] = [
    ("dag_id", lambda d: d.pop("dag_id"), "document", "missing required field 'dag_id'"),
    ("tasks", lambda d: d.pop("tasks"), "document", "missing required field 'tasks'"),
    ("environment", lambda d: d.pop("environment"), "document", "'environment'"),
    ("bundle", lambda d: d.pop("bundle"), "document", "missing required field 'bundle'"),
    (
        "format_version",
        lambda d: d.pop("format_version"),
        "document",
        "missing required field 'format_version'",
    ),
    ("task_id", lambda d: task0(d).pop("task_id"), "tasks[0]", "field 'task_id'"),
    ("kind", lambda d: task0(d).pop("kind"), "tasks[a]", "missing required field 'kind'"),
    ("callable", lambda d: task0(d).pop("callable"), "tasks[a]", "field 'callable'"),
    (
        "command",
        lambda d: d.update(tasks=[{"task_id": "c", "kind": "command"}]),
        "tasks[c]",
        "missing required field 'command'",
    ),
    ("lock", lambda d: d["environment"].pop("lock"), "environment", "field 'lock'"),
    ("lock_hash", lambda d: d["environment"].pop("lock_hash"), "environment", "'lock_hash'"),
    ("lockfile", lambda d: d["environment"].pop("lockfile"), "environment", "'lockfile'"),
    ("bundle hash", lambda d: d["bundle"].pop("hash"), "bundle", "missing required field 'hash'"),
]

WRONG_TYPES: list[tuple[str, Mutation, str, str]] = [
    ("dag_id", lambda d: d.update(dag_id=5), "dag_id", "expected string, got integer"),
    ("tasks", lambda d: d.update(tasks={}), "tasks", "expected array, got object"),
    ("task", lambda d: d.update(tasks=["a"]), "tasks[0]", "expected object, got string"),
    ("catchup", lambda d: d.update(catchup="yes"), "catchup", "expected boolean, got string"),
    ("max_active_runs", lambda d: d.update(max_active_runs="3"), "max_active_runs", "got string"),
    ("max_active_runs bool", lambda d: d.update(max_active_runs=True), "max_active_runs", "bool"),
    ("max_active_runs 0", lambda d: d.update(max_active_runs=0), "max_active_runs", "minimum"),
    ("max_active_tasks", lambda d: d.update(max_active_tasks="3"), "max_active_tasks", "string"),
    (
        "max_active_tasks bool",
        lambda d: d.update(max_active_tasks=True),
        "max_active_tasks",
        "bool",
    ),
    ("max_active_tasks 0", lambda d: d.update(max_active_tasks=0), "max_active_tasks", "minimum"),
    (
        "max_active_tasks 1.5",
        lambda d: d.update(max_active_tasks=1.5),
        "max_active_tasks",
        "number",
    ),
    (
        "priority_weight",
        lambda d: task0(d).update(priority_weight="high"),
        "tasks[a].priority_weight",
        "expected integer, got string",
    ),
    (
        "priority_weight null",
        lambda d: task0(d).update(priority_weight=None),
        "tasks[a].priority_weight",
        "expected integer, got null",
    ),
    ("params", lambda d: d.update(params=[]), "params", "expected object, got array"),
    ("tags", lambda d: d.update(tags="x"), "tags", "expected array, got string"),
    ("tag", lambda d: d.update(tags=[1]), "tags[0]", "expected string, got integer"),
    ("schedule", lambda d: d.update(schedule=5), "schedule", "expected string or null"),
    ("description", lambda d: d.update(description=[]), "description", "got array"),
    ("start_date", lambda d: d.update(start_date=20240101), "start_date", "got integer"),
    ("defaults", lambda d: d.update(defaults=[]), "defaults", "expected object, got array"),
    ("retries", lambda d: d.update(defaults={"retries": "3"}), "defaults.retries", "string"),
    (
        "retry_delay negative",
        lambda d: d.update(defaults={"retry_delay": -1}),
        "defaults.retry_delay",
        "less than the minimum of 0",
    ),
    (
        "task retry_delay",
        lambda d: task0(d).update(retry={"retry_delay": "5m"}),
        "tasks[a].retry.retry_delay",
        "expected number or null, got string",
    ),
    (
        "task retries",
        lambda d: task0(d).update(retry={"retries": "x"}),
        "tasks[a].retry.retries",
        "expected integer or null, got string",
    ),
    (
        "backoff",
        lambda d: task0(d).update(retry={"retry_exponential_backoff": "yes"}),
        "tasks[a].retry.retry_exponential_backoff",
        "expected boolean or null, got string",
    ),
    ("upstream", lambda d: task0(d).update(upstream="b"), "tasks[a].upstream", "expected array"),
    ("env value", lambda d: task0(d).update(env={"X": 1}), "tasks[a].env.X", "expected string"),
    ("env", lambda d: task0(d).update(env=["X"]), "tasks[a].env", "expected object, got array"),
    ("args", lambda d: task0(d).update(args={}), "tasks[a].args", "expected array, got object"),
    ("kwargs", lambda d: task0(d).update(kwargs=[]), "tasks[a].kwargs", "expected object"),
    (
        "kwargs key",
        lambda d: task0(d).update(kwargs={"not-a-name": 1}),
        "tasks[a].kwargs",
        "'not-a-name' is not a valid identifier",
    ),
    ("callable", lambda d: task0(d).update(callable=5), "tasks[a].callable", "got integer"),
    ("doc", lambda d: task0(d).update(doc=5), "tasks[a].doc", "expected string or null"),
    (
        "command",
        lambda d: d.update(tasks=[command_task("c", 5)]),  # type: ignore[arg-type]
        "tasks[c].command",
        "expected array or string, got integer",
    ),
    (
        "empty argv",
        lambda d: d.update(tasks=[command_task("c", [])]),
        "tasks[c].command",
        "must not be empty",
    ),
    (
        "argv item",
        lambda d: d.update(tasks=[command_task("c", ["ls", 1])]),  # type: ignore[list-item]
        "tasks[c].command[1]",
        "expected string, got integer",
    ),
    (
        "empty shell",
        lambda d: d.update(tasks=[command_task("c", "")]),
        "tasks[c].command",
        "must not be empty",
    ),
    (
        "trigger_rule",
        lambda d: task0(d).update(trigger_rule="sometimes"),
        "tasks[a].trigger_rule",
        "'sometimes' is not one of: all_success, all_failed",
    ),
    (
        "kind",
        lambda d: task0(d).update(kind="bash"),
        "tasks[a].kind",
        "'bash' is not one of: python, command",
    ),
    (
        "processes 0",
        lambda d: task0(d).update(limits={"processes": 0}),
        "tasks[a].limits.processes",
        "less than the minimum of 1",
    ),
    (
        "cpu_time",
        lambda d: task0(d).update(limits={"cpu_time": "1h"}),
        "tasks[a].limits.cpu_time",
        "expected integer or null, got string",
    ),
    (
        "memory word",
        lambda d: task0(d).update(limits={"memory": "lots"}),
        "tasks[a].limits.memory",
        "invalid size 'lots'",
    ),
    (
        "memory in other digits",  # Python's \d matches "٢", ECMA-262's does not
        lambda d: task0(d).update(limits={"memory": "٢G"}),
        "tasks[a].limits.memory",
        "invalid size '٢G'",
    ),
    (
        "memory zero",
        lambda d: task0(d).update(limits={"memory": "0"}),
        "tasks[a].limits.memory",
        "must be at least 1",
    ),
    (
        "memory over 64 bits",
        lambda d: task0(d).update(limits={"memory": "9" * 30}),
        "tasks[a].limits.memory",
        "is more than 9223372036854775807 bytes",
    ),
    (
        "memory 5000 digits",
        lambda d: task0(d).update(limits={"memory": "9" * 5000}),
        "tasks[a].limits.memory",
        "too large",
    ),
    (
        "lock_hash format",
        lambda d: d["environment"].update(lock_hash="md5:abc"),
        "environment.lock_hash",
        "invalid hash 'md5:abc'",
    ),
    (
        "bundle hash uppercase",
        lambda d: d["bundle"].update(hash="sha256:" + "B" * 64),
        "bundle.hash",
        "expected 'sha256:' and 64 lowercase hex digits",
    ),
    (
        "absolute lockfile",
        lambda d: d["environment"].update(lockfile="/etc/passwd"),
        "environment.lockfile",
        "invalid relative path",
    ),
    ("absolute fileloc", lambda d: d.update(fileloc="/home/me/dag.py"), "fileloc", "path"),
]


@pytest.mark.parametrize(
    ("mutate", "where", "what"),
    [pytest.param(*case[1:], id=case[0]) for case in UNKNOWN_FIELDS + MISSING_FIELDS + WRONG_TYPES],
)
def test_structural_problem_is_located(mutate: Mutation, where: str, what: str) -> None:
    assert_problem(problems(mutated(mutate)), where, what)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda d: d.update(description="x" * 30_000),
            "description: '" + "x" * 56 + "... is too long (30000 characters, at most 20000)",
        ),
        (
            lambda d: d.update(tasks=[python_task(f"t{i}") for i in range(10_001)]),
            "tasks: too many items (10001, at most 10000)",
        ),
        (lambda d: d.update(tags=["x"] * 101), "tags: too many items (101, at most 100)"),
        (lambda d: d.update(tags=[""]), "tags[0]: must not be empty"),
        (
            lambda d: d.update(max_active_runs=10_001),
            "max_active_runs: 10001 is greater than the maximum of 10000",
        ),
        (
            lambda d: d.update({"x" * 100_000: 1}),
            "document: unknown field '" + "x" * 56 + "...",
        ),
        (
            lambda d: d.update(max_active_tasks=2**31),
            "max_active_tasks: 2147483648 is greater than the maximum of 2147483647",
        ),
        (
            lambda d: task0(d).update(priority_weight=2**31),
            "tasks[a].priority_weight: 2147483648 is greater than the maximum of 2147483647",
        ),
        (
            lambda d: task0(d).update(priority_weight=-(2**31) - 1),
            "tasks[a].priority_weight: -2147483649 is less than the minimum of -2147483648",
        ),
    ],
    ids=[
        "long text",
        "many tasks",
        "many tags",
        "empty tag",
        "maximum",
        "long field name",
        "max_active_tasks maximum",
        "priority_weight maximum",
        "priority_weight minimum",
    ],
)
def test_messages_about_big_values_stay_short(mutate: Mutation, problem: str) -> None:
    assert problems(mutated(mutate)) == [problem]


def test_message_names_the_dag_and_the_place() -> None:
    with pytest.raises(ValidationError) as info:
        load(mutated(lambda d: task0(d).update(retry={"retries": "x"})))
    assert str(info.value) == (
        "dag etl: tasks[a].retry.retries: expected integer or null, got string"
    )
    assert info.value.subject == "dag etl"


def test_integral_floats_count_as_integers() -> None:
    """JSON Schema says 3.0 is an integer; the canonical form then holds the int."""
    doc = mutated(lambda d: d.update(max_active_runs=3.0))
    task0(doc).update(retry={"retries": 2.0}, limits={"memory": 2.0, "processes": 4.0})
    spec = load(doc)
    assert spec.max_active_runs == 3
    assert isinstance(spec.max_active_runs, int)
    assert spec.tasks[0].retry.retries == 2
    assert spec.tasks[0].limits.memory == 2
    assert '"max_active_runs":3,' in canonical_json(spec)
    doc = mutated(lambda d: d.update(max_active_tasks=3.0))
    task0(doc).update(priority_weight=-7.0)
    spec = load(doc)
    assert isinstance(spec.max_active_tasks, int) and spec.max_active_tasks == 3
    assert isinstance(spec.tasks[0].priority_weight, int) and spec.tasks[0].priority_weight == -7
    assert '"max_active_tasks":3,' in canonical_json(spec)
    assert '"priority_weight":-7,' in canonical_json(spec)


# --- fields added after format 1 was published ------------------------------------------

# The spec hashes of minimal_doc() and of full_doc() without max_active_tasks and
# priority_weight, as computed before those fields existed: documents already stored must
# keep their canonical bytes, or an unchanged DAG pushed again would become a new version.
MINIMAL_HASH = "sha256:8c1b5d314b161b22ebbbbd550508d8f836e1fe5e94ca0149731561653a9ad766"
FULL_WITHOUT_LATER_FIELDS_HASH = (
    "sha256:3877118439c2a37dea240dbccdefe9417b8a72bb88d9598d7220569d6c019443"
)


def _without_later_fields(doc: Doc) -> Doc:
    doc.pop("max_active_tasks", None)
    for task in doc["tasks"]:
        task.pop("priority_weight", None)
    return doc


def test_a_document_stored_before_the_later_fields_loads_with_their_defaults() -> None:
    old = _without_later_fields(full_doc())
    spec = load(old)
    assert spec.max_active_tasks == 16
    assert {t.priority_weight for t in spec.tasks} == {1}
    assert spec_hash(load(minimal_doc())) == MINIMAL_HASH
    assert spec_hash(spec) == FULL_WITHOUT_LATER_FIELDS_HASH
    assert canonical_json(load_document(canonical_json(spec))) == canonical_json(spec)


def test_the_later_fields_are_written_only_when_they_are_not_the_default() -> None:
    explicit = _without_later_fields(full_doc())
    explicit["max_active_tasks"] = 16
    for task in explicit["tasks"]:
        task["priority_weight"] = 1
    assert spec_hash(load(explicit)) == FULL_WITHOUT_LATER_FIELDS_HASH
    assert load(explicit) == load(_without_later_fields(full_doc()))
    spec = load(full_doc())
    assert spec.max_active_tasks == 4 and spec.task("load").priority_weight == 10
    document = json.loads(canonical_json(spec))
    assert document["max_active_tasks"] == 4
    assert {t["task_id"]: t.get("priority_weight") for t in document["tasks"]} == {
        "cleanup": None,
        "extract": None,
        "load": 10,
        "report": None,
    }
    assert spec_hash(spec) != FULL_WITHOUT_LATER_FIELDS_HASH


def test_a_diff_compares_an_omitted_later_field_as_its_default() -> None:
    change = diff_specs(load(_without_later_fields(full_doc())), load(full_doc()))
    assert change.dag_fields == {"max_active_tasks": (16, 4)}
    assert change.tasks_changed == {"load": {"priority_weight": (1, 10)}}


# --- graph problems --------------------------------------------------------------------


def test_duplicate_task_ids() -> None:
    doc = doc_with([python_task("a"), python_task("b"), python_task("a")])
    assert problems(doc) == ["tasks: duplicate task id 'a'"]


def test_unknown_upstream_id() -> None:
    doc = doc_with([python_task("a"), python_task("b", upstream=["a", "zz"])])
    assert problems(doc) == ["tasks[b].upstream: unknown upstream task 'zz'"]


def test_self_dependency() -> None:
    doc = doc_with([python_task("a", upstream=["a"])])
    assert problems(doc) == ["tasks[a].upstream: task depends on itself"]


def test_two_cycle_is_named() -> None:
    doc = doc_with([python_task("a", upstream=["b"]), python_task("b", upstream=["a"])])
    assert problems(doc) == ["tasks: dependency cycle a -> b -> a"]


def test_three_cycle_is_named() -> None:
    doc = doc_with(
        [
            python_task("x", upstream=["z"]),
            python_task("y", upstream=["x"]),
            python_task("z", upstream=["y"]),
        ]
    )
    (problem,) = problems(doc)
    assert problem.startswith("tasks: dependency cycle ")
    names = problem.removeprefix("tasks: dependency cycle ").split(" -> ")
    assert len(names) == 4
    assert names[0] == names[-1]
    assert sorted(names[:-1]) == ["x", "y", "z"]
    # Each step follows an edge downstream: names[i] is upstream of names[i + 1].
    upstream_of = {"x": "z", "y": "x", "z": "y"}
    assert all(upstream_of[b] == a for a, b in itertools.pairwise(names))


def test_cycle_reachable_only_from_a_task_outside_it() -> None:
    """``a`` (first in search order) is not on the cycle; the message names only b and c."""
    doc = doc_with(
        [
            python_task("a", upstream=["b"]),
            python_task("b", upstream=["c"]),
            python_task("c", upstream=["b"]),
            python_task("d"),
        ]
    )
    assert problems(doc) == ["tasks: dependency cycle b -> c -> b"]


def test_long_chain_does_not_hit_the_recursion_limit() -> None:
    tasks = [python_task("t0")] + [
        python_task(f"t{i}", upstream=[f"t{i - 1}"]) for i in range(1, 3000)
    ]
    assert len(load(doc_with(tasks)).tasks) == 3000
    tasks[0]["upstream"] = ["t2999"]
    (problem,) = problems(doc_with(tasks))
    assert problem.startswith("tasks: dependency cycle ")
    assert problem.count(" -> ") == 3000


# --- schedules -------------------------------------------------------------------------

START = "2024-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("schedule", "what"),
    [
        ("* * *", "invalid cron expression '* * *': expected 5 fields"),
        ("* * * * * *", "expected 5 fields"),
        ("", "must not be empty"),
        ("61 * * * *", "invalid cron expression '61 * * * *'"),
        ("0 24 * * *", "invalid cron expression '0 24 * * *'"),
        ("0 0 32 * *", "invalid cron expression"),
        ("0 0 0 * *", "invalid cron expression"),
        ("0 0 * 13 *", "invalid cron expression"),
        ("0 0 * * 8", "invalid cron expression"),
        ("*/0 * * * *", "invalid cron expression"),
        ("% * * * *", "invalid cron expression"),
        ("0 0 30 2 *", "cron expression '0 0 30 2 *' never fires"),
        ("R * * * *", "random (R) and hashed (H) values not allowed"),
        ("0 H * * *", "random (R) and hashed (H) values not allowed"),
        ("@daly", "unknown preset '@daly' (use one of @once, @hourly, @daily"),
        ("@daily ", "unknown preset '@daily '"),
    ],
)
def test_invalid_schedule(schedule: str, what: str) -> None:
    doc = mutated(lambda d: d.update(schedule=schedule, start_date=START))
    assert_problem(problems(doc), "schedule", what)


@pytest.mark.parametrize(
    "schedule",
    ["@once", "@daily", "@annually", "*/5 * * * *", "0 3 * * 1-5", "0 0 29 2 *", "0 0 L * *"],
)
def test_valid_schedule(schedule: str) -> None:
    assert load(mutated(lambda d: d.update(schedule=schedule, start_date=START))).schedule == (
        schedule
    )


def test_schedule_needs_a_start_date() -> None:
    doc = mutated(lambda d: d.update(schedule="@daily"))
    assert problems(doc) == ["start_date: required when a schedule is set"]


# --- ids and callables -----------------------------------------------------------------

BAD_IDS = ["", "a" * 251, "a b", "a/b", "é", "ünïcode", ".", "..", "etl\n", "a\tb", "a:b", "日本"]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_dag_id(bad: str) -> None:
    found = problems(mutated(lambda d: d.update(dag_id=bad)))
    assert_problem(found, "dag_id", f"invalid id {bad!r}"[:40])
    assert_problem(found, "dag_id", "use 1-250 characters of A-Z a-z 0-9 _ . -")


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_task_id(bad: str) -> None:
    """The task is located by index: an invalid id is never echoed as a location."""
    assert_problem(problems(doc_with([python_task(bad)])), "tasks[0].task_id", "invalid id")


@pytest.mark.parametrize("bad", ["a b", "..", ""], ids=repr)
def test_bad_upstream_id(bad: str) -> None:
    found = problems(doc_with([python_task("a", upstream=[bad])]))
    assert_problem(found, "tasks[a].upstream[0]", "invalid id")


@pytest.mark.parametrize("good", ["a" * 250, "A-z_0.9", "...", ".a", "-", "_"])
def test_good_ids(good: str) -> None:
    spec = load(doc_with([python_task(good)], dag_id=good))
    assert spec.dag_id == good
    assert spec.task_ids == (good,)


BAD_CALLABLES = [
    "nocolon",
    "a:b:c",
    ".a:b",
    "a:",
    ":f",
    "my-pkg:f",
    "pkg:my-func",
    "a..b:f",
    "a.:f",
    "1mod:f",
    "mod:f()",
    "mod: f",
    "mod:f\n",
    "",
]


@pytest.mark.parametrize("bad", BAD_CALLABLES, ids=repr)
def test_bad_callable(bad: str) -> None:
    found = problems(mutated(lambda d: task0(d).update(callable=bad)))
    assert_problem(found, "tasks[a].callable", "expected 'module.path:attribute'")


@pytest.mark.parametrize("where", ["tasks[a].callbacks.on_failure", "defaults.callbacks.on_retry"])
def test_bad_callback(where: str) -> None:
    doc = minimal_doc()
    if where.startswith("tasks"):
        task0(doc)["callbacks"] = {"on_failure": "pkg.mod"}
    else:
        doc["defaults"] = {"callbacks": {"on_retry": "pkg.mod"}}
    assert_problem(problems(doc), where, "invalid callable 'pkg.mod'")


@pytest.mark.parametrize("good", ["m:f", "pkg.sub.mod:Class.method", "_p:_f", "a1.b2:c3"])
def test_good_callables(good: str) -> None:
    assert load(mutated(lambda d: task0(d).update(callable=good))).tasks[0].callable == good


# --- kind-specific fields --------------------------------------------------------------


def test_command_on_a_python_task() -> None:
    found = problems(mutated(lambda d: task0(d).update(command=["ls"])))
    assert found == ["tasks[a]: field(s) 'command' not allowed on a python task"]


@pytest.mark.parametrize("field", ["callable", "args", "kwargs"])
def test_python_fields_on_a_command_task(field: str) -> None:
    value = {"callable": "m:f", "args": [], "kwargs": {}}[field]
    found = problems(doc_with([command_task("c", ["ls"], **{field: value})]))
    assert found == [f"tasks[c]: field(s) {field!r} not allowed on a command task"]


# --- dates and time zones --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "what"),
    [
        ("start_date", "yesterday", "invalid date-time 'yesterday': expected ISO 8601"),
        ("start_date", "2024-02-30T00:00:00Z", "invalid date-time"),
        ("end_date", "2024-01-01T25:00:00Z", "invalid date-time"),
        ("start_date", "2024-01-01T00:00:00", "has no UTC offset: add one"),
        ("start_date", "2024-01-01", "has no UTC offset"),
        ("start_date", "0001-01-01T00:00:00+01:00", "is out of range in UTC"),
        ("end_date", "9999-12-31T23:59:59-01:00", "is out of range in UTC"),
        ("timezone", "Mars/Base", "unknown time zone 'Mars/Base'"),
        ("timezone", "America", "unknown time zone 'America'"),  # a directory of zones
        ("timezone", "../../etc/passwd", "unknown time zone"),
        ("timezone", "", "must not be empty"),
    ],
)
def test_bad_dates_and_time_zones(field: str, value: str, what: str) -> None:
    assert_problem(problems(mutated(lambda d: d.update({field: value}))), field, what)


def test_end_before_start() -> None:
    doc = mutated(
        lambda d: d.update(start_date="2024-01-02T00:00:00Z", end_date="2024-01-02T00:30:00+01:00")
    )
    assert problems(doc) == ["end_date: before start_date"]


# --- XComs, templates, environment, lock -----------------------------------------------


def test_xcom_reference_to_a_task_that_is_not_upstream() -> None:
    doc = doc_with([python_task("a", args=[{"$xcom": "b"}]), python_task("b")])
    assert problems(doc) == ["tasks[a].args[0]: XCom reference to 'b', which is not upstream"]


def test_nested_xcom_reference_is_located() -> None:
    doc = doc_with([python_task("a", kwargs={"x": {"y": [1, {"$xcom": "zz"}]}})])
    assert problems(doc) == [
        "tasks[a].kwargs.x.y[1]: XCom reference to 'zz', which is not upstream"
    ]


def test_xcom_reference_must_be_a_task_id() -> None:
    doc = doc_with([python_task("a", kwargs={"x": {"$xcom": 5}})])
    assert problems(doc) == ["tasks[a].kwargs.x: XCom reference to 5, which is not upstream"]


def test_xcom_reference_to_upstream_is_fine() -> None:
    doc = doc_with([python_task("a", upstream=["b"], args=[{"$xcom": "b"}]), python_task("b")])
    assert load(doc).task("a").xcom_sources() == ["b"]


@pytest.mark.parametrize(
    ("task", "where", "what"),
    [
        (python_task("a", kwargs={"x": "{{ ds "}), "tasks[a].kwargs.x", "template syntax error"),
        (python_task("a", args=["ok", "{% if %}"]), "tasks[a].args[1]", "template syntax error"),
        (python_task("a", env={"X": "{{ }}"}), "tasks[a].env.X", "template syntax error"),
        (command_task("a", ["echo", "{# open"]), "tasks[a].command[1]", "template syntax error"),
        (command_task("a", "echo {{ ds"), "tasks[a].command", "template syntax error"),
        (
            python_task("a", kwargs={"x": {"odd key": "{% for %}"}}),
            "tasks[a].kwargs.x['odd key']",
            "template syntax error",
        ),
        (
            python_task("a", args=["{{ " + "9" * 5000 + " }}"]),
            "tasks[a].args[0]",
            "number literal too long",
        ),
        (
            python_task("a", args=["{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"]),
            "tasks[a].args[0]",
            "template nested too deeply",
        ),
    ],
)
def test_template_syntax_errors(task: Doc, where: str, what: str) -> None:
    assert_problem(problems(doc_with([task])), where, what)


def test_templates_stay_strings() -> None:
    text = "{{ ds }} {{ params.x }} {{ xcom('extract') }} {% if x %}y{% endif %} {# c #}"
    spec = load(
        doc_with([python_task("extract"), python_task("a", args=[text], upstream=["extract"])])
    )
    assert spec.task("a").args == (text,)


@pytest.mark.parametrize(
    ("env", "where", "what"),
    [
        ({"ISOLATE_HOME": "/x"}, "tasks[a].env.ISOLATE_HOME", "names starting with ISOLATE_"),
        ({"1BAD": "x"}, "tasks[a].env", "'1BAD' is not a valid identifier"),
        ({"A-B": "x"}, "tasks[a].env", "'A-B' is not a valid identifier"),
        ({"": "x"}, "tasks[a].env", "'' is not a valid identifier"),
        ({"X\n": "x"}, "tasks[a].env", "is not a valid identifier"),
    ],
)
def test_bad_env(env: dict[str, str], where: str, what: str) -> None:
    assert_problem(problems(doc_with([python_task("a", env=env)])), where, what)


def test_lock_hash_must_match_the_lock() -> None:
    doc = mutated(lambda d: d["environment"].update(lock="six==1.17.0\n"))
    expected = lock_digest("six==1.17.0\n")
    assert problems(doc) == [
        f"environment.lock_hash: does not match the lock's content ({expected})"
    ]


# --- raw input: JSON, encoding, size, depth, numbers -----------------------------------


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        ("{", "document is not valid JSON"),
        ("", "document is not valid JSON"),
        ("{} x", "document is not valid JSON: Extra data"),
        ("{'a': 1}", "document is not valid JSON"),
        ('{"a": 1,}', "document is not valid JSON"),
        ('{"a": 1, "a": 2}', "duplicate key 'a' in a JSON object"),
        ('{"tasks": [{"kind": 1, "kind": 2}]}', "duplicate key 'kind' in a JSON object"),
        ('{"x": NaN}', "NaN is not allowed: JSON numbers must be finite"),
        ('{"x": Infinity}', "Infinity is not allowed"),
        ('{"x": -Infinity}', "-Infinity is not allowed"),
        ('{"x": 1e999}', "number 1e999 is too large"),
        ('{"x": -1e999}', "number -1e999 is too large"),
        (b"\xff", "document is not UTF-8 (byte 0)"),
        (b'{"dag_id": "\xc0\xaf"}', "document is not UTF-8 (byte 12)"),  # overlong "/"
        (b'{"dag_id": "\xed\xa0\x80"}', "document is not UTF-8"),  # an encoded surrogate
        ('{"dag_id": "\\ud800"}', "dag_id: string '\\ud800' is not valid Unicode"),
        ('{"\\udfff": 1}', "document: string '\\udfff' is not valid Unicode"),
        ("[" * 100_000, "document nested deeper than 64 levels"),
        ('{"x": ' + "1" * 5000 + "}", "integer 1111111111111111111111111111111111111... is out"),
        ('{"x": 9223372036854775808}', "integer 9223372036854775808 is out of range"),
        ('{"x": -9223372036854775809}', "integer -9223372036854775809 is out of range"),
        ("[]", "document: expected object, got array"),
        ('"etl"', "document: expected object, got string"),
        ("1", "document: expected object, got integer"),
        ("null", "document: expected object, got null"),
        ("true", "document: expected object, got boolean"),
    ],
)
def test_bad_raw_input(raw: str | bytes, what: str) -> None:
    found = problems(raw)
    assert any(what in p for p in found), found


def test_nesting_just_over_the_cap_is_located() -> None:
    value: Any = 1
    for _ in range(fmt.MAX_DEPTH - 2):  # the leaf is at params.x[0][0]...: MAX_DEPTH levels
        value = [value]
    assert load(mutated(lambda d: d.update(params={"x": value}))).params["x"] == value
    too_deep = mutated(lambda d: d.update(params={"x": [value]}))
    assert problems(too_deep) == [f"document nested deeper than {fmt.MAX_DEPTH} levels"]


def test_64_bit_integers_are_fine() -> None:
    params = {"max": 2**63 - 1, "min": -(2**63)}
    assert load(mutated(lambda d: d.update(params=params))).params == params


def test_huge_integers_from_python_are_located() -> None:
    """``load_object`` (the SDK's way in) must not trip over int/str conversion limits."""
    with pytest.raises(ValidationError) as info:
        load_object(mutated(lambda d: d.update(params={"n": 10**5000})))
    assert info.value.problems == ["params.n: integer out of range: integers must fit in 64 bits"]


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (float("nan"), "params.x: NaN and infinite numbers are not allowed"),
        ({1: "a"}, "params.x: object key of type int is not text"),
        ({"a", "b"}, "params.x: value of type set is not JSON"),
        (b"raw", "params.x: value of type bytes is not JSON"),
    ],
)
def test_python_values_that_are_not_json(value: Any, what: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_object(mutated(lambda d: d.update(params={"x": value})))
    assert info.value.problems == [what]


@pytest.mark.parametrize("data", [123, None, memoryview(b"{}"), ["{}"]])
def test_input_of_another_type(data: Any) -> None:
    with pytest.raises(ValidationError) as info:
        load_document(data)
    assert info.value.problems == [f"document must be bytes or text, not {type(data).__name__}"]


def test_size_cap() -> None:
    text = dumps(minimal_doc())
    size = len(text.encode())
    assert load_document(text, max_bytes=size).dag_id == "etl"
    assert load_document(text.encode(), max_bytes=size).dag_id == "etl"
    assert problems(text, max_bytes=size - 1) == [
        f"document is {size} bytes, over the cap of {size - 1} (setting max_spec_bytes)"
    ]


def test_size_cap_counts_utf8_bytes_of_text() -> None:
    text = dumps(mutated(lambda d: d.update(description="é" * 10)))
    text = text.replace("\\u00e9", "é")
    size = len(text.encode())
    assert size == len(text) + 10
    assert problems(text, max_bytes=size - 1)[0].startswith(f"document is {size} bytes")


def test_bytearray_is_accepted() -> None:
    assert load_document(bytearray(dumps(minimal_doc()).encode())).dag_id == "etl"


# --- several problems at once ----------------------------------------------------------


def test_structural_problems_are_reported_together() -> None:
    doc = minimal_doc()
    doc["owner"] = "me"
    doc["catchup"] = "yes"
    doc["tasks"].append(python_task("b c", callable="nocolon"))
    with pytest.raises(ValidationError) as info:
        load(doc)
    found = info.value.problems
    assert_problem(found, "document", "unknown field 'owner'")
    assert_problem(found, "catchup", "expected boolean")
    assert_problem(found, "tasks[1].task_id", "invalid id 'b c'")
    assert_problem(found, "tasks[1].callable", "invalid callable 'nocolon'")
    assert len(found) == 4


def test_meaning_problems_are_reported_together() -> None:
    doc = doc_with(
        [
            python_task("a", env={"ISOLATE_X": "1"}, args=["{{ oops"]),
            python_task("a"),
            python_task("b", upstream=["zz"], kwargs={"k": {"$xcom": "a"}}),
        ],
        schedule="61 * * * *",
        start_date="2024-01-01T00:00:00Z",
        end_date="2023-01-01T00:00:00Z",
        timezone="Nowhere/City",
    )
    doc["environment"]["lock"] = "changed"
    with pytest.raises(ValidationError) as info:
        load(doc)
    found = info.value.problems
    assert_problem(found, "schedule", "invalid cron expression '61 * * * *'")
    assert_problem(found, "timezone", "unknown time zone 'Nowhere/City'")
    assert_problem(found, "end_date", "before start_date")
    assert_problem(found, "environment.lock_hash", "does not match")
    assert_problem(found, "tasks", "duplicate task id 'a'")
    assert_problem(found, "tasks[a].env.ISOLATE_X", "reserved")
    assert_problem(found, "tasks[a].args[0]", "template syntax error")
    assert_problem(found, "tasks[b].upstream", "unknown upstream task 'zz'")
    assert_problem(found, "tasks[b].kwargs.k", "XCom reference to 'a', which is not upstream")
    assert len(found) == 9
    assert str(info.value).endswith("(and 4 more)")
    assert str(info.value).startswith("dag etl: ")


# --- the canonical form ----------------------------------------------------------------


def canonical(doc: Any) -> str:
    return canonical_json(load(doc))


def test_defaults_are_filled_in() -> None:
    document = json.loads(canonical(minimal_doc()))
    assert document == {
        "format_version": 1,
        "dag_id": "etl",
        "description": None,
        "fileloc": None,
        "schedule": None,
        "timezone": "UTC",
        "start_date": None,
        "end_date": None,
        "catchup": False,
        "max_active_runs": 16,
        "params": {},
        "tags": [],
        "defaults": {
            "retries": 0,
            "retry_delay": 300,
            "retry_exponential_backoff": False,
            "max_retry_delay": None,
            "execution_timeout": None,
            "callbacks": {"on_failure": None, "on_success": None, "on_retry": None},
        },
        "tasks": [
            {
                "task_id": "a",
                "kind": "python",
                "doc": None,
                "upstream": [],
                "trigger_rule": "all_success",
                "env": {},
                "limits": {"memory": None, "processes": None, "cpu_time": None, "open_files": None},
                "retry": {
                    "retries": None,
                    "retry_delay": None,
                    "retry_exponential_backoff": None,
                    "max_retry_delay": None,
                    "execution_timeout": None,
                },
                "callbacks": {"on_failure": None, "on_success": None, "on_retry": None},
                "callable": "etl.jobs:run",
                "args": [],
                "kwargs": {},
            }
        ],
        "environment": environment(),
        "bundle": {"hash": "sha256:" + "b" * 64},
    }


def test_canonical_json_is_compact_sorted_utf8() -> None:
    text = canonical(mutated(lambda d: d.update(description="naïve ☃")))
    assert text == json.dumps(
        json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert "naïve ☃" in text
    assert "\n" not in text
    digest = hashlib.sha256(canonical(minimal_doc()).encode()).hexdigest()
    assert spec_hash(load(minimal_doc())) == f"sha256:{digest}"


def test_tasks_upstream_and_tags_are_sorted_and_deduplicated() -> None:
    doc = doc_with(
        [
            python_task("c", upstream=["b", "a", "b"]),
            python_task("a"),
            python_task("b", upstream=["a", "a"]),
        ],
        tags=["z", "a", "z", "m"],
    )
    spec = load(doc)
    assert spec.task_ids == ("a", "b", "c")
    assert spec.task("c").upstream == ("a", "b")
    assert spec.task("b").upstream == ("a",)
    assert spec.tags == ("a", "m", "z")


def test_whole_float_seconds_hash_like_ints() -> None:
    ints = mutated(lambda d: d.update(defaults={"retry_delay": 300, "execution_timeout": 60}))
    task0(ints)["retry"] = {"max_retry_delay": 600}
    floats = mutated(lambda d: d.update(defaults={"retry_delay": 300.0, "execution_timeout": 60.0}))
    task0(floats)["retry"] = {"max_retry_delay": 600.0}
    assert canonical(ints) == canonical(floats)
    assert spec_hash(load(ints)) == spec_hash(load(floats))
    assert '"retry_delay":300,' in canonical(floats)


def test_fractional_seconds_are_kept() -> None:
    doc = mutated(lambda d: d.update(defaults={"retry_delay": 2.5}))
    assert load(doc).defaults.retry.retry_delay == 2.5


@pytest.mark.parametrize(
    ("memory", "size"),
    [("2G", 2 * 1024**3), ("512M", 512 * 1024**2), ("64KiB", 65536), ("1t", 1024**4), (7, 7)],
)
def test_memory_sizes_become_bytes(memory: Any, size: int) -> None:
    spec = load(mutated(lambda d: task0(d).update(limits={"memory": memory})))
    assert spec.tasks[0].limits.memory == size


def test_two_gigabytes_hash_like_their_bytes() -> None:
    text = mutated(lambda d: task0(d).update(limits={"memory": "2G"}))
    number = mutated(lambda d: task0(d).update(limits={"memory": 2147483648}))
    assert canonical(text) == canonical(number)
    assert '"memory":2147483648' in canonical(text)


@pytest.mark.parametrize(
    "start",
    [
        "2024-01-01T01:00:00+01:00",
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:00:00Z",
        "2023-12-31T19:00:00-05:00",
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00:00.000+00:00",
    ],
)
def test_dates_are_normalized_to_utc(start: str) -> None:
    spec = load(mutated(lambda d: d.update(start_date=start)))
    assert spec.start_date == "2024-01-01T00:00:00+00:00"


def test_input_order_and_whitespace_do_not_matter() -> None:
    doc = full_doc()
    reordered: Doc = dict(reversed(list(doc.items())))
    reordered["tasks"] = [dict(reversed(list(t.items()))) for t in reversed(doc["tasks"])]
    reordered["params"] = dict(reversed(list(doc["params"].items())))
    reordered["tags"] = list(reversed(doc["tags"]))
    texts = [
        json.dumps(doc),
        json.dumps(reordered),
        json.dumps(doc, indent=4),
        json.dumps(reordered, indent="\t", separators=(" ,\n ", " : "), ensure_ascii=False),
    ]
    specs = [load_document(text) for text in texts]
    assert len({canonical_json(s) for s in specs}) == 1
    assert len({spec_hash(s) for s in specs}) == 1
    assert all(spec == specs[0] for spec in specs)


def test_task_order_is_irrelevant_for_any_permutation() -> None:
    doc = full_doc()
    expected = canonical(doc)
    rng = random.Random(7)
    for _ in range(10):
        rng.shuffle(doc["tasks"])
        assert canonical(doc) == expected


@pytest.mark.parametrize("build", [minimal_doc, full_doc])
def test_canonical_json_is_a_fixpoint(build: Callable[[], Doc]) -> None:
    first = canonical(build())
    second = canonical_json(load_document(first))
    assert second == first
    assert canonical_json(load_document(second.encode())) == first


@pytest.mark.parametrize("build", [minimal_doc, full_doc])
def test_to_document_is_the_normalized_document(build: Callable[[], Doc]) -> None:
    doc = build()
    spec = load(doc)
    normalized, extra = fmt._normalize(fmt.upgrade(copy.deepcopy(doc)))
    assert extra == []
    assert spec.to_document() == normalized
    assert spec.to_document() == json.loads(canonical_json(spec))


def test_specs_compare_equal_and_do_not_share_the_default_params() -> None:
    first, second = load(minimal_doc()), load(minimal_doc())
    assert first == DagSpec(**{f: getattr(second, f) for f in DagSpec.__dataclass_fields__})
    assert first.params is not second.params
    assert first.params is not fmt._TOP_DEFAULTS["params"]


_HASH_SCRIPT = """
import json, sys
from isolate.format import canonical_json, load_document, spec_hash
spec = load_document(sys.stdin.read())
print(spec_hash(spec))
print(canonical_json(spec))
"""


@pytest.mark.parametrize("seed", ["0", "1", "12345"])
def test_canonical_json_is_identical_in_another_process(seed: str) -> None:
    doc = full_doc()
    # Sets would show hash-seed dependence: make upstream/tag/param orders matter if they could.
    doc["tags"] = [f"t{i}" for i in range(30, 0, -1)]
    doc["params"] = {f"p{i}": i for i in range(30, 0, -1)}
    spec = load(doc)
    result = subprocess.run(
        [sys.executable, "-c", _HASH_SCRIPT],
        input=dumps(doc),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": seed},
        check=True,
        timeout=60,
    )
    their_hash, their_json = result.stdout.splitlines()
    assert their_hash == spec_hash(spec)
    assert their_json == canonical_json(spec)


def test_equal_documents_hash_equal_and_different_ones_differ() -> None:
    base = spec_hash(load(full_doc()))
    assert spec_hash(load(full_doc())) == base
    changed = full_doc()
    changed["tasks"][0]["upstream"] = []
    changed["tasks"][0]["args"] = ["x"]
    assert spec_hash(load(changed)) != base
    assert spec_hash(load(mutated(lambda d: d.update(catchup=False), full_doc))) != base
    assert spec_hash(load(mutated(lambda d: d.update(max_active_tasks=5), full_doc))) != base
    other_weight = mutated(lambda d: d["tasks"][1].update(priority_weight=2), full_doc)
    assert spec_hash(load(other_weight)) != base


# --- format evolution ------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 99, 2**40])
def test_newer_format_is_refused_clearly(version: int) -> None:
    with pytest.raises(FormatVersionError) as info:
        load(mutated(lambda d: d.update(format_version=version)))
    assert info.value.problems == [
        f"format_version: document uses format {version}, this isolate reads up to "
        f"{FORMAT_VERSION}: upgrade isolate to load it"
    ]


def test_newer_format_is_refused_before_reading_the_rest() -> None:
    """A future format may look like nothing we know; only its version is read."""
    with pytest.raises(FormatVersionError):
        load({"format_version": 2, "dag": {"id": "etl"}, "steps": []})


@pytest.mark.parametrize("version", ["1", 1.0, 1.5, True, None, [1], {"v": 1}])
def test_format_version_must_be_an_integer(version: Any) -> None:
    found = problems(mutated(lambda d: d.update(format_version=version)))
    assert found == [f"format_version: expected an integer format version, got {version!r}"]


@pytest.mark.parametrize("version", [0, -1])
def test_older_format_without_upgrader_is_refused(version: int) -> None:
    found = problems(mutated(lambda d: d.update(format_version=version)))
    assert found == [f"format_version: unknown format {version} (oldest readable: 1)"]


def _upgrade_0_to_1(doc: Doc) -> Doc:
    """A hypothetical format 0: tasks named their upstream tasks ``deps``."""
    tasks = []
    for task in doc["tasks"]:
        task = dict(task)
        if "deps" in task:
            task["upstream"] = task.pop("deps")
        tasks.append(task)
    return {**doc, "tasks": tasks, "format_version": 1}


UPGRADE_0 = {0: _upgrade_0_to_1}


def _format_0(doc: Doc) -> Doc:
    old = copy.deepcopy(doc)
    old["format_version"] = 0
    for task in old["tasks"]:
        if "upstream" in task:
            task["deps"] = task.pop("upstream")
    return old


def test_older_format_is_upgraded_to_the_same_spec() -> None:
    current = full_doc()
    old = _format_0(current)
    assert any("deps" in t for t in old["tasks"])
    upgraded = load_document(dumps(old), upgraders=UPGRADE_0)
    assert upgraded == load(current)
    assert spec_hash(upgraded) == spec_hash(load(current))
    assert canonical_json(upgraded) == canonical(current)
    assert upgraded.format_version == FORMAT_VERSION
    # The current format goes through an upgrader-aware loader unchanged.
    assert load_document(dumps(current), upgraders=UPGRADE_0) == load(current)


def test_upgrade_does_not_change_the_callers_document() -> None:
    old = _format_0(full_doc())
    before = copy.deepcopy(old)
    load_object(old, upgraders=UPGRADE_0)
    assert old == before


def test_an_upgrader_may_edit_its_document_in_place() -> None:
    def in_place(doc: Doc) -> Doc:
        for task in doc["tasks"]:
            task["upstream"] = task.pop("deps", [])
        doc["format_version"] = 1
        return doc

    old = _format_0(full_doc())
    before = copy.deepcopy(old)
    assert load_object(old, upgraders={0: in_place}) == load(full_doc())
    assert old == before


def test_upgraded_documents_are_validated_like_current_ones() -> None:
    old = _format_0(doc_with([python_task("a", upstream=["b"]), python_task("b", upstream=["a"])]))
    assert problems(old, upgraders=UPGRADE_0) == ["tasks: dependency cycle a -> b -> a"]


def test_upgrade_chain_yielding_a_wrong_version_is_rejected() -> None:
    old = _format_0(minimal_doc())
    found = problems(old, upgraders={0: lambda d: {**d, "format_version": 0}})
    assert found == ["format_version: upgrade to 1 produced a wrong version"]
    found = problems(old, upgraders={0: lambda d: {**d, "format_version": 2}})
    assert found == ["format_version: upgrade to 1 produced a wrong version"]
    found = problems(old, upgraders={0: lambda d: [d]})
    assert found == ["format_version: upgrade to 1 produced a wrong version"]


def test_version_older_than_the_oldest_upgrader_is_rejected() -> None:
    old = mutated(lambda d: d.update(format_version=-1))
    assert problems(old, upgraders=UPGRADE_0) == [
        "format_version: unknown format -1 (oldest readable: 0)"
    ]


def test_gap_in_the_upgrade_chain_is_rejected() -> None:
    old = mutated(lambda d: d.update(format_version=-1))
    found = problems(old, upgraders={-1: lambda d: {**d, "format_version": 0}})
    assert found == ["format_version: no upgrade from format 0"]


def test_two_step_chain() -> None:
    def from_minus_1(doc: Doc) -> Doc:
        return {**doc, "format_version": 0, "tasks": doc["steps"]} | {"steps": None}

    def drop_steps(doc: Doc) -> Doc:
        return _upgrade_0_to_1({k: v for k, v in doc.items() if k != "steps"})

    old = _format_0(full_doc())
    old["format_version"] = -1
    old["steps"] = old.pop("tasks")
    spec = load_document(dumps(old), upgraders={-1: from_minus_1, 0: drop_steps})
    assert spec == load(full_doc())


def test_old_document_too_broken_to_upgrade_is_a_validation_error() -> None:
    broken = {"format_version": 0, "dag_id": "etl", "tasks": 5}
    found = problems(broken, upgraders=UPGRADE_0)
    assert found == [
        "format_version: cannot upgrade this format-0 document "
        "(TypeError: 'int' object is not iterable)"
    ]
    found = problems({"format_version": 0}, upgraders=UPGRADE_0)
    assert found == ["format_version: cannot upgrade this format-0 document (KeyError: 'tasks')"]


def test_shipped_upgraders_are_a_contiguous_chain_to_the_current_format() -> None:
    versions = sorted(fmt.UPGRADERS)
    assert versions == list(range(FORMAT_VERSION - len(versions), FORMAT_VERSION))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["tasks"][0].update(kwargs={"x": "{{ xcom('nowhere') }}"}),
            "tasks[t].kwargs.x: xcom('nowhere') reads a task that is not upstream",
        ),
        (
            lambda d: d["tasks"][0].update(env={"A": "x\x00y"}),
            "tasks[t].env.A: NUL characters cannot be passed to a process",
        ),
        (
            lambda d: d.update(fileloc="../up.py"),
            "fileloc: '../up.py' is not a plain relative path",
        ),
        (
            lambda d: d["environment"].update(lockfile="a//b.txt"),
            "environment.lockfile: 'a//b.txt' is not a plain relative path",
        ),
    ],
)
def test_run_time_hazards_are_refused_at_push(change, message: str) -> None:
    doc = minimal_doc()
    doc["tasks"] = [{"task_id": "t", "kind": "python", "callable": "m:f"}]
    change(doc)
    with pytest.raises(ValidationError) as info:
        load_object(doc)
    assert message in str(info.value)


def test_xcom_template_reading_an_upstream_task_is_fine() -> None:
    doc = minimal_doc()
    doc["tasks"] = [
        {"task_id": "a", "kind": "python", "callable": "m:f"},
        {
            "task_id": "b",
            "kind": "command",
            "command": ["echo", "{{ xcom('a') }}"],
            "upstream": ["a"],
        },
    ]
    assert load_object(doc).task("b").command == ("echo", "{{ xcom('a') }}")
