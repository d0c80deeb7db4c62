"""The shipped JSON Schema: valid itself, agrees with canonical documents and the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import jsonschema
import pytest

from isolate import model
from isolate.format import canonical_json, load_document
from isolate.model import TRIGGER_RULES, DagSpec
from isolate.validate import ID_RULE, schema, structure_problems
from tests.docs import command_task, doc_with, dumps, full_doc, minimal_doc, python_task

Doc = dict[str, Any]
DRAFT = "https://json-schema.org/draft/2020-12/schema"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def shipped() -> Doc:
    text = resources.files("isolate").joinpath("schema/dag-v1.schema.json").read_text("utf-8")
    loaded: Doc = json.loads(text)
    return loaded


def test_schema_ships_with_the_package_and_is_what_validation_uses() -> None:
    assert shipped() == schema()


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    document = shipped()
    assert document["$schema"] == DRAFT
    jsonschema.Draft202012Validator.check_schema(document)
    assert jsonschema.validators.validator_for(document) is jsonschema.Draft202012Validator


def test_every_reference_resolves() -> None:
    document = shipped()
    refs: list[str] = []
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref  # local references only: the file stands alone
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part]
        assert isinstance(target, dict), ref


def _variants() -> list[Doc]:
    """Documents that exercise each branch: kinds, argv/shell commands, nulls, sizes."""
    return [
        minimal_doc(),
        full_doc(),
        doc_with([command_task("c", "echo hi")]),
        doc_with([command_task("c", ["echo", "hi"], limits={"memory": "512M"})]),
        doc_with(
            [python_task("a", retry={"retries": None, "max_retry_delay": None})],
            schedule="@once",
            start_date="2024-06-01T12:00:00-07:00",
            defaults={"callbacks": {"on_success": "m:done"}},
        ),
    ]


@pytest.mark.parametrize("doc", _variants(), ids=["minimal", "full", "shell", "argv", "nulls"])
def test_canonical_documents_validate(validator: jsonschema.Draft202012Validator, doc: Doc) -> None:
    canonical = json.loads(canonical_json(load_document(dumps(doc))))
    errors = [e.message for e in validator.iter_errors(canonical)]
    assert errors == []


@pytest.mark.parametrize("doc", _variants(), ids=["minimal", "full", "shell", "argv", "nulls"])
def test_input_documents_validate(validator: jsonschema.Draft202012Validator, doc: Doc) -> None:
    assert [e.message for e in validator.iter_errors(doc)] == []


def _invalid(mutate: Callable[[Doc], object]) -> Doc:
    doc = minimal_doc()
    mutate(doc)
    return doc


def _task(doc: Doc) -> Doc:
    task: Doc = doc["tasks"][0]
    return task


# Structural problems (tests/test_format.py checks the loader's messages for each).
INVALID: dict[str, Doc] = {
    "unknown top-level field": _invalid(lambda d: d.update(owner="me")),
    "unknown task field": _invalid(lambda d: _task(d).update(retries=1)),
    "unknown retry field": _invalid(lambda d: _task(d).update(retry={"tries": 1})),
    "unknown limits field": _invalid(lambda d: _task(d).update(limits={"mem": 1})),
    "unknown callback": _invalid(lambda d: _task(d).update(callbacks={"on_error": "m:f"})),
    "unknown environment field": _invalid(lambda d: d["environment"].update(python="3")),
    "missing dag_id": _invalid(lambda d: d.pop("dag_id")),
    "missing tasks": _invalid(lambda d: d.pop("tasks")),
    "missing bundle": _invalid(lambda d: d.pop("bundle")),
    "missing format_version": _invalid(lambda d: d.pop("format_version")),
    "newer format_version": _invalid(lambda d: d.update(format_version=2)),
    "missing callable": _invalid(lambda d: _task(d).pop("callable")),
    "missing command": doc_with([{"task_id": "c", "kind": "command"}]),
    "dag_id wrong type": _invalid(lambda d: d.update(dag_id=5)),
    "catchup wrong type": _invalid(lambda d: d.update(catchup="yes")),
    "retries wrong type": _invalid(lambda d: _task(d).update(retry={"retries": "x"})),
    "negative delay": _invalid(lambda d: d.update(defaults={"retry_delay": -1})),
    "empty id": _invalid(lambda d: d.update(dag_id="")),
    "long id": _invalid(lambda d: d.update(dag_id="a" * 251)),
    "id with space": _invalid(lambda d: _task(d).update(task_id="a b")),
    "id with slash": _invalid(lambda d: _task(d).update(task_id="a/b")),
    "unicode id": _invalid(lambda d: d.update(dag_id="é")),
    "id .": _invalid(lambda d: d.update(dag_id=".")),
    "id ..": _invalid(lambda d: _task(d).update(task_id="..")),
    "upstream id": _invalid(lambda d: _task(d).update(upstream=["a b"])),
    "callable without colon": _invalid(lambda d: _task(d).update(callable="pkg.mod")),
    "callable with two colons": _invalid(lambda d: _task(d).update(callable="a:b:c")),
    "callable with leading dot": _invalid(lambda d: _task(d).update(callable=".a:b")),
    "callable with trailing colon": _invalid(lambda d: _task(d).update(callable="a:")),
    "callable with dashes": _invalid(lambda d: _task(d).update(callable="my-pkg:f")),
    "bad callback": _invalid(lambda d: d.update(defaults={"callbacks": {"on_retry": "x"}})),
    "command on python task": _invalid(lambda d: _task(d).update(command=["ls"])),
    "callable on command task": doc_with([command_task("c", ["ls"], callable="m:f")]),
    "args on command task": doc_with([command_task("c", ["ls"], args=[])]),
    "empty argv": doc_with([command_task("c", [])]),
    "unknown kind": _invalid(lambda d: _task(d).update(kind="bash")),
    "unknown trigger rule": _invalid(lambda d: _task(d).update(trigger_rule="sometimes")),
    "env name": _invalid(lambda d: _task(d).update(env={"1X": "y"})),
    "env value": _invalid(lambda d: _task(d).update(env={"X": 1})),
    "kwargs name": _invalid(lambda d: _task(d).update(kwargs={"a-b": 1})),
    "bad memory": _invalid(lambda d: _task(d).update(limits={"memory": "lots"})),
    "zero processes": _invalid(lambda d: _task(d).update(limits={"processes": 0})),
    "bad hash": _invalid(lambda d: d["bundle"].update(hash="sha256:abc")),
    "absolute lockfile": _invalid(lambda d: d["environment"].update(lockfile="/etc/x")),
    "not an object": [],  # type: ignore[dict-item]
    "task not an object": _invalid(lambda d: d.update(tasks=["a"])),
}


@pytest.mark.parametrize("doc", list(INVALID.values()), ids=list(INVALID))
def test_invalid_documents_are_rejected_by_the_schema(
    validator: jsonschema.Draft202012Validator, doc: Any
) -> None:
    assert not validator.is_valid(doc)
    assert structure_problems(doc) != []


def test_a_non_object_task_gets_only_its_type_error() -> None:
    """The kind-specific if/then rules apply only to objects (no nonsense second message)."""
    assert structure_problems(_invalid(lambda d: d.update(tasks=["a"]))) == [
        "tasks[0]: expected object, got string"
    ]


def test_trailing_newline_is_rejected_as_ecma_262_says() -> None:
    """Python's ``$`` matches before a final newline; JSON Schema's (ECMA-262) does not.

    Plain jsonschema follows Python here, so the project's validator is the one to ask.
    """
    for doc in (
        _invalid(lambda d: d.update(dag_id="etl\n")),
        _invalid(lambda d: _task(d).update(callable="m:f\n")),
        _invalid(lambda d: d["bundle"].update(hash="sha256:" + "0" * 64 + "\n")),
    ):
        assert structure_problems(doc) != []


# --- schema and model agree ------------------------------------------------------------


def _load(doc: Doc) -> DagSpec:
    return load_document(dumps(doc))


@pytest.mark.parametrize("kind", ["python", "command"])
def test_task_properties_match_task_document(kind: str) -> None:
    properties = set(schema()["$defs"]["task"]["properties"])
    only = {"python": {"callable", "args", "kwargs"}, "command": {"command"}}
    expected = properties - only["command" if kind == "python" else "python"]
    task = python_task("a") if kind == "python" else command_task("a", ["ls"])
    spec = _load(doc_with([task]))
    # Fields added after format 1 was published are written only when not the default.
    assert set(model.task_document(spec.tasks[0])) == expected - set(model.LATER_TASK_FIELDS)
    task["priority_weight"] = 5
    assert set(model.task_document(_load(doc_with([task])).tasks[0])) == expected


@pytest.mark.parametrize(
    ("definition", "section"),
    [
        ("limits", lambda doc: doc["tasks"][0]["limits"]),
        ("retry_overrides", lambda doc: doc["tasks"][0]["retry"]),
        ("callbacks", lambda doc: doc["tasks"][0]["callbacks"]),
        ("callbacks", lambda doc: doc["defaults"]["callbacks"]),
        ("defaults", lambda doc: doc["defaults"]),
    ],
)
def test_nested_properties_match_the_document(
    definition: str, section: Callable[[Doc], Doc]
) -> None:
    document = _load(minimal_doc()).to_document()
    assert set(section(document)) == set(schema()["$defs"][definition]["properties"])


def test_top_level_properties_match_the_document() -> None:
    document = _load(minimal_doc()).to_document()
    top = schema()["properties"]
    assert set(document) == set(top) - set(model.LATER_DAG_FIELDS)
    assert set(_load(full_doc()).to_document()) == set(top)
    assert set(document["environment"]) == set(top["environment"]["properties"])
    assert set(document["bundle"]) == set(top["bundle"]["properties"])


def test_schema_enumerations_match_the_model() -> None:
    task = schema()["$defs"]["task"]["properties"]
    assert tuple(task["trigger_rule"]["enum"]) == TRIGGER_RULES
    assert task["kind"]["enum"] == ["python", "command"]
    assert schema()["properties"]["format_version"] == {"const": 1}


def test_id_rule_text_matches_the_id_pattern() -> None:
    pattern = schema()["$defs"]["id"]["pattern"]
    assert "A-Za-z0-9_.-" in pattern
    assert "{1,250}" in pattern
    assert "1-250" in ID_RULE
