"""Fuzzing the loader: whatever the input, it returns a DagSpec or raises ValidationError.

Every document it accepts must also be canonical: ``canonical_json`` is a fixpoint and the
result validates against the shipped JSON Schema. The ``@example`` decorators are crashes
or bad acceptances this file found once; they stay as regression tests.
"""

from __future__ import annotations

import copy
import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from isolate.errors import ValidationError
from isolate.format import MAX_INT, MIN_INT, canonical_json, load_document, load_object, spec_hash
from isolate.model import TRIGGER_RULES, DagSpec
from isolate.schedules import PRESETS
from isolate.validate import lock_digest, schema
from tests.docs import dumps, full_doc


def fuzz(max_examples: int) -> settings:
    """Settings of one fuzz test: the numbers keep the whole file under ~30 s."""
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(schema())


def assert_canonical(spec: DagSpec) -> None:
    """An accepted document: its canonical JSON is a schema-valid fixpoint."""
    text = canonical_json(spec)
    again = load_document(text)
    assert canonical_json(again) == text
    assert spec_hash(again) == spec_hash(spec)
    SCHEMA_VALIDATOR.validate(json.loads(text))


def check(data: Any) -> None:
    """``load_document`` gives a canonical DagSpec or a one-line ValidationError, nothing else."""
    try:
        spec = load_document(data)
    except ValidationError as exc:
        assert exc.problems
        assert all(isinstance(p, str) and p for p in exc.problems)
        message = str(exc)
        assert "\n" not in message, message
        assert len(message) < 5000, message[:200]
        return
    assert_canonical(spec)


# --- strategies ------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from([2**63, -(2**63) - 1, 10**30, 1e308, -0.0, 2.0, ""])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# Values that reach deeper checks than random text does.
TRICKY: list[Any] = [
    ".",
    "..",
    "a" * 250,
    "a" * 251,
    "etl\n",
    "a b",
    "m:f",
    "pkg.mod:Class.attr",
    "mod:f\n",
    "{{ ds }}",
    "{{ ds",
    "{% if %}",
    "{# x",
    "{{ " + "9" * 5000 + " }}",
    "{{ " + "(" * 2000 + " }}",
    {"$xcom": "extract"},
    {"$xcom": "nope"},
    {"$xcom": 1},
    "@daily",
    "@once",
    "@nope",
    "0 0 30 2 *",
    "R * * * *",
    "61 * * * *",
    "* * * * * *",
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2099-01-01T00:00:00+14:00",
    "UTC",
    "America",
    "Europe/Amsterdam",
    "../etc",
    "2G",
    "0",
    "9" * 30,
    "9" * 5000,
    "ISOLATE_X",
    "python",
    "command",
    "all_done",
    "sha256:" + "0" * 64,
    lock_digest(""),
    "/abs/path",
    1,
    0,
    -1,
    2.0,
    0.5,
    10**30,
    MAX_INT,
    True,
    None,
    [],
    {},
    ["ls"],
]
values = json_values | st.sampled_from(TRICKY)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


BASE = full_doc()
PATHS = _paths(BASE)[1:]  # every value's place in the full document, but not the root
KEY_PATHS = [p for p in PATHS if isinstance(p[-1], str)]


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


DICT_PATHS = [p for p in _paths(BASE) if isinstance(_get(BASE, p), dict)]


def _replaced(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    _get(doc, path[:-1])[path[-1]] = value
    return doc


# --- (a) arbitrary bytes and text ------------------------------------------------------


@fuzz(400)
@given(st.binary(max_size=300))
@example(b"\xff\xfe{}")
@example(b"\xef\xbb\xbf{}")  # a UTF-8 BOM
@example(b"[" * 100_000)
@example(b'{"x": ' + b"1" * 5000 + b"}")
@example(b'{"a": 1, "a": 1}')
@example(b'"\\ud800"')
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@fuzz(200)
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    check(text)


@fuzz(200)
@given(st.data())
def test_corrupted_document_bytes(data: st.DataObject) -> None:
    """A valid document with some bytes changed: mostly broken JSON, sometimes subtle."""
    raw = bytearray(dumps(BASE).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.sampled_from(b'{}[]",:\\0 9aZ\xff\x00.-/'))
    check(bytes(raw))


# --- (b) arbitrary JSON values ---------------------------------------------------------


@fuzz(300)
@given(json_values)
@example({"format_version": 1, "dag_id": 10**5000})
@example({"format_version": 1, "params": {"n": -(10**5000)}})
@example({"format_version": 2**70})
@example({"format_version": 0})
@example({"format_version": 1.0})
def test_arbitrary_json_values(value: Any) -> None:
    try:
        text = json.dumps(value)
    except ValueError:  # Python's own int/str limit: not text the loader can ever see
        text = None
    if text is not None:
        check(text)
    try:
        spec = load_object(value)
    except ValidationError as exc:
        assert "\n" not in str(exc)
        return
    assert_canonical(spec)


@fuzz(200)
@given(st.dictionaries(st.sampled_from(sorted(BASE)), values, max_size=8))
def test_documents_made_of_known_fields(doc: dict[str, Any]) -> None:
    check(dumps({"format_version": 1, **doc}))


# --- (c) mutations of a valid document -------------------------------------------------


@fuzz(500)
@given(st.sampled_from(PATHS), values)
@example(("start_date",), "0001-01-01T00:00:00+01:00")
@example(("end_date",), "9999-12-31T23:59:59-01:00")
@example(("timezone",), "America")
@example(("tasks", 0, "limits", "memory"), "9" * 5000)
@example(("tasks", 0, "limits", "memory"), "9" * 30)
@example(("tasks", 0, "limits", "memory"), 2.0)
@example(("tasks", 0, "args", 1), "{{ " + "9" * 5000 + " }}")
@example(("tasks", 0, "args", 1), "{{ " + "(" * 5000 + " }}")
@example(("tasks", 0, "task_id"), "load\n")
@example(("dag_id",), "etl\n")
@example(("tasks", 2, "command"), ["ls", 1])
@example(("description",), "x" * 30_000)
def test_replace_a_value(path: tuple[Any, ...], value: Any) -> None:
    check(dumps(_replaced(path, value)))


@fuzz(200)
@given(st.sets(st.sampled_from(KEY_PATHS), min_size=1, max_size=3))
def test_delete_keys(paths: set[tuple[Any, ...]]) -> None:
    doc = copy.deepcopy(BASE)
    for path in sorted(paths, key=len, reverse=True):
        parent = _get(doc, path[:-1]) if _exists(doc, path[:-1]) else None
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    check(dumps(doc))


def _exists(doc: Any, path: tuple[Any, ...]) -> bool:
    try:
        _get(doc, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


@fuzz(200)
@given(
    st.sampled_from(DICT_PATHS),
    st.text(max_size=12) | st.sampled_from(["upstream", "command", "callable", "args", "$xcom"]),
    values,
)
def test_add_a_key(path: tuple[Any, ...], key: str, value: Any) -> None:
    doc = copy.deepcopy(BASE)
    _get(doc, path)[key] = value
    check(dumps(doc))


# --- (d) generated valid documents -----------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "_.-"
ids = st.text(ID_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
callables = st.builds(
    lambda mod, attr: ".".join(mod) + ":" + ".".join(attr),
    st.lists(names, min_size=1, max_size=3),
    st.lists(names, min_size=1, max_size=2),
)
# Plain text without template markers ("{{", "{%", "{#"), which would mostly be syntax errors,
# and without NUL, which argv and environment values cannot carry.
plain = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="{\x00"), max_size=20)
safe_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(MIN_INT, MAX_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | plain,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(plain.filter(lambda k: k != "$xcom"), inner, max_size=3)
    ),
    max_leaves=8,
)
seconds = st.integers(0, 31622400) | st.floats(0, 31622400)
counts = st.integers(1, MAX_INT)
sizes = counts | st.builds(
    lambda n, unit, suffix: f"{n}{unit}{suffix}",
    st.integers(1, 1024),
    st.sampled_from(["", "k", "K", "M", "g", "G"]),
    st.sampled_from(["", "B", "iB"]),
)
offsets = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(timedelta(hours=-8)),
        timezone(timedelta(hours=14)),
    ]
)
datetimes = st.datetimes(datetime(1970, 1, 1), datetime(2200, 1, 1), timezones=offsets)
schedules = st.sampled_from([*PRESETS, "*/5 * * * *", "0 3 * * 1-5", "15 2 1 */2 *", "0 0 29 2 *"])
timezones = st.sampled_from(["UTC", "Europe/Amsterdam", "America/New_York", "Asia/Kolkata"])
callbacks = st.fixed_dictionaries(
    {},
    optional={name: st.none() | callables for name in ("on_failure", "on_success", "on_retry")},
)


def _maybe(
    draw: st.DrawFn, doc: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]
) -> None:
    if draw(st.booleans()):
        doc[key] = draw(strategy)


def _optional_fields(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    chosen = draw(st.sets(st.sampled_from(sorted(fields))))
    return {name: draw(fields[name]) for name in sorted(chosen)}


@st.composite
def tasks_strategy(draw: st.DrawFn) -> list[dict[str, Any]]:
    task_ids = draw(st.lists(ids, min_size=1, max_size=8, unique=True))
    tasks = []
    for i, task_id in enumerate(task_ids):
        # Edges only to earlier ids: acyclic by construction; duplicates are allowed input.
        upstream: list[str] = []
        if i:
            upstream = draw(st.lists(st.sampled_from(task_ids[:i]), max_size=4))
        task: dict[str, Any] = {
            "task_id": task_id,
            "kind": draw(st.sampled_from(["python", "command"])),
        }
        write_upstream: bool = draw(st.booleans())
        if upstream or write_upstream:
            task["upstream"] = upstream
        refs: list[Any] = [{"$xcom": up} for up in upstream]
        if task["kind"] == "python":
            task["callable"] = draw(callables)
            arg = safe_json | st.sampled_from(refs or [None]) | st.just("{{ ds }}")
            _maybe(draw, task, "args", st.lists(arg, max_size=4))
            _maybe(draw, task, "kwargs", st.dictionaries(names, arg, max_size=4))
        else:
            argv = st.lists(plain | st.just("{{ ds_nodash }}"), min_size=1, max_size=4)
            task["command"] = draw(argv | plain.filter(bool))
        env_names = names.filter(lambda n: not n.startswith("ISOLATE_"))
        optional = {
            "doc": st.none() | plain,
            "trigger_rule": st.sampled_from(TRIGGER_RULES),
            "env": st.dictionaries(env_names, plain | st.just("{{ params.x }}"), max_size=3),
            "limits": st.fixed_dictionaries(
                {},
                optional={
                    "memory": st.none() | sizes,
                    "processes": st.none() | counts,
                    "cpu_time": st.none() | counts,
                    "open_files": st.none() | counts,
                },
            ),
            "retry": st.fixed_dictionaries(
                {},
                optional={
                    "retries": st.none() | st.integers(0, 1000),
                    "retry_delay": st.none() | seconds,
                    "retry_exponential_backoff": st.none() | st.booleans(),
                    "max_retry_delay": st.none() | seconds,
                    "execution_timeout": st.none() | seconds,
                },
            ),
            "callbacks": callbacks,
            "priority_weight": st.integers(-(2**31), 2**31 - 1) | st.sampled_from([1, 1.0, 5.0]),
        }
        task.update(_optional_fields(draw, optional))
        tasks.append(task)
    return draw(st.permutations(tasks))


@st.composite
def valid_docs(draw: st.DrawFn) -> dict[str, Any]:
    lock = draw(st.text(max_size=60))
    doc: dict[str, Any] = {
        "format_version": 1,
        "dag_id": draw(ids),
        "tasks": draw(tasks_strategy()),
        "environment": {
            "lockfile": draw(st.sampled_from(["requirements.txt", "locks/prod.txt", "uv.lock"])),
            "lock": lock,
            "lock_hash": lock_digest(lock),
        },
        "bundle": {"hash": "sha256:" + draw(st.text("0123456789abcdef", min_size=64, max_size=64))},
    }
    optional = {
        "description": st.none() | st.text(max_size=40),
        "fileloc": st.none() | st.sampled_from(["dags/etl.py", "etl.py", "a b/c.py"]),
        "timezone": timezones,
        "catchup": st.booleans(),
        "max_active_runs": st.integers(1, 10000),
        "max_active_tasks": st.integers(1, 2**31 - 1) | st.sampled_from([16, 16.0, 3.0]),
        "params": st.dictionaries(st.text(max_size=8), safe_json, max_size=4),
        "tags": st.lists(st.text(min_size=1, max_size=10), max_size=5),
        "defaults": st.fixed_dictionaries(
            {},
            optional={
                "retries": st.integers(0, 1000),
                "retry_delay": seconds,
                "retry_exponential_backoff": st.booleans(),
                "max_retry_delay": st.none() | seconds,
                "execution_timeout": st.none() | seconds,
                "callbacks": callbacks,
            },
        ),
    }
    doc.update(_optional_fields(draw, optional))
    dates = sorted(draw(st.lists(datetimes, min_size=2, max_size=2)))
    if draw(st.booleans()):
        doc["schedule"] = draw(schedules)
        doc["start_date"] = dates[0].isoformat()
    if draw(st.booleans()):
        doc["end_date"] = dates[1].isoformat().replace("+00:00", "Z")
    return doc


@fuzz(150)
@given(valid_docs(), st.randoms(use_true_random=False))
def test_generated_valid_documents_load_canonically(doc: dict[str, Any], rng: Any) -> None:
    spec = load_document(dumps(doc))
    assert spec.dag_id == doc["dag_id"]
    assert sorted(spec.task_ids) == sorted(t["task_id"] for t in doc["tasks"])
    assert list(spec.task_ids) == sorted(spec.task_ids)
    assert_canonical(spec)
    # The same DAG written differently: shuffled tasks and keys, other whitespace.
    shuffled = copy.deepcopy(doc)
    rng.shuffle(shuffled["tasks"])
    items = list(shuffled.items())
    rng.shuffle(items)
    other = load_document(json.dumps(dict(items), indent=rng.choice([None, 1, "\t"])))
    assert canonical_json(other) == canonical_json(spec)
    assert spec_hash(other) == spec_hash(spec)


@fuzz(100)
@given(valid_docs(), st.data())
def test_mutated_generated_documents(doc: dict[str, Any], data: st.DataObject) -> None:
    """(c) again, on random DAG shapes instead of the one full document."""
    paths = _paths(doc)[1:]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        if not _exists(doc, path[:-1]):
            continue
        parent = _get(doc, path[:-1])
        if isinstance(parent, dict) and data.draw(st.booleans()):
            parent.pop(path[-1], None)
        elif isinstance(parent, dict | list):
            # An earlier mutation may have turned a dict on the path into a list.
            if isinstance(parent, list) and (
                not isinstance(path[-1], int) or path[-1] >= len(parent)
            ):
                continue
            parent[path[-1]] = data.draw(values)
    check(dumps(doc))
