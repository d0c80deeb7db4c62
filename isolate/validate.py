"""Validation of DAG documents: structure against the shipped JSON Schema, then meaning.

Every problem is a located, one-line string such as ``tasks[load].retry.retries: expected
integer, got string``. The schema is the single source of truth for structure; the checks
here cover what a schema cannot say (duplicates, unknown upstreams, cycles, cron, dates,
XCom references, template syntax).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from isolate.errors import ValidationError
from isolate.model import XCOM_REF_KEY, DagSpec, is_xcom_ref
from isolate.schedules import schedule_problem

ID_RULE = "1-250 characters of A-Z a-z 0-9 _ . - (and not '.' or '..')"
RESERVED_ENV_PREFIX = "ISOLATE_"
# What the dynamic loader and the C library read from the environment before a program's
# own code runs: glibc's list of variables it drops for setuid programs (unsecvars.h), every
# LD_* of the loader, and not TMPDIR (which only says where programs put their temp files).
LOADER_ENV_PREFIX = "LD_"
LOADER_ENV_NAMES = frozenset(
    {
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "MALLOC_TRACE",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TZDIR",
    }
)

_FORBIDDEN_BY_KIND = {"python": ("command",), "command": ("callable", "args", "kwargs")}
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of the current format, as shipped in ``isolate/schema/``."""
    text = resources.files("isolate").joinpath("schema/dag-v1.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, _schema: Any
) -> Iterator[jsonschema.ValidationError]:
    """``pattern`` with ECMA-262's ``$`` (end of text), not Python's (also before a final newline).

    Plain jsonschema uses ``re.search``, so ``^[a-z]+$`` accepts ``"etl\\n"``:
    https://github.com/python-jsonschema/jsonschema/issues/576
    """
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    # Our schema uses "$" only as an anchor (never escaped or inside a character class).
    return re.compile(pattern.replace("$", r"\Z"))


@cache
def _validator() -> jsonschema.protocols.Validator:
    extend: Any = jsonschema.validators.extend  # untyped in the stubs
    cls: type[jsonschema.protocols.Validator] = extend(
        jsonschema.Draft202012Validator, validators={"pattern": _ecma_pattern}
    )
    return cls(schema())


def is_valid_id(text: str) -> bool:
    """Whether ``text`` is a valid DAG or task id (see :data:`ID_RULE`)."""
    return _ID.match(text) is not None and text not in (".", "..")


@cache
def _jinja() -> SandboxedEnvironment:
    return SandboxedEnvironment()


def where(path: Sequence[Any], doc: Any) -> str:
    """``tasks[load].kwargs.x`` for the JSON path ``["tasks", 3, "kwargs", "x"]``."""
    out = ""
    node = doc
    for part in path:
        if isinstance(part, int):
            label: str = str(part)
            if isinstance(node, list) and 0 <= part < len(node):
                item = node[part]
                task_id = item.get("task_id") if isinstance(item, dict) else None
                # Only a valid id is shown as is: a message stays one safe line.
                if isinstance(task_id, str) and is_valid_id(task_id):
                    label = task_id
                node = item
            else:
                node = None
            out += f"[{label}]"
        else:
            out += _key(str(part), first=not out)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "document"


def _key(name: str, *, first: bool = False) -> str:
    """``.name`` for an identifier, ``[<repr>]`` for any other key (quotes, escapes, newlines)."""
    if _NAME.match(name):
        return name if first else f".{name}"
    return f"[{_short(name)}]"


def structure_problems(doc: Any) -> list[str]:
    """Problems of ``doc`` against the JSON Schema, located and deduplicated."""
    problems: list[str] = []
    errors = sorted(_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    for error in map(_specific, errors):
        for message in _describe(error):
            line = f"{where(list(error.absolute_path), doc)}: {message}"
            if line not in problems:
                problems.append(line)
    return problems


def _specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For ``anyOf``, the complaint of the branch whose type the instance has, if any.

    ``["ls", 1]`` as a command fails the array branch at ``command[1]`` (a number) and the
    string branch at ``command`` (an array): only the first is worth reading.
    """
    while error.validator in ("anyOf", "oneOf"):
        context = [c for c in error.context or () if c.validator != "type" or c.relative_path]
        if not context:
            break
        error = context[0]
    return error


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: jsonschema.ValidationError) -> Iterator[str]:
    # Typed "Any | Unset" in the stubs; every error iter_errors yields has them set.
    kind: Any = error.validator
    value: Any = error.validator_value
    instance: Any = error.instance
    sub: Any = error.schema
    if kind == "type":
        expected = " or ".join(value) if isinstance(value, list) else str(value)
        yield f"expected {expected}, got {_json_type(instance)}"
    elif kind == "required":
        for name in value:
            if isinstance(instance, dict) and name not in instance:
                yield f"missing required field {name!r}"
    elif kind == "additionalProperties" and isinstance(sub, dict) and "properties" in sub:
        for name in sorted(set(instance) - set(sub["properties"])):
            yield f"unknown field {_short(name)}"
    elif kind == "additionalProperties":
        yield f"expected {_json_type(value) if value is not True else 'any'} values"
    elif kind == "not" and isinstance(instance, dict):
        forbidden = _FORBIDDEN_BY_KIND.get(str(instance.get("kind")), ())
        present = [name for name in forbidden if name in instance]
        names = ", ".join(map(repr, present))
        yield f"field(s) {names} not allowed on a {instance.get('kind')} task"
    elif kind == "const":
        yield f"must be {value!r}, got {_short(instance)}"
    elif kind == "enum":
        yield f"{_short(instance)} is not one of: {', '.join(map(str, value))}"
    elif kind == "pattern":
        yield _pattern_message(str(value), instance)
    elif kind == "propertyNames":
        yield from (f"invalid key: {m}" for c in error.context or () for m in _describe(c))
    elif kind in ("anyOf", "oneOf"):
        yield _any_of_message(error)
    elif kind in ("minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum"):
        yield _bound_message(kind, value, instance)
    else:  # not reached by our schema today; jsonschema's text reprs the whole instance
        yield error.message if len(error.message) <= 200 else error.message[:197] + "..."


def _bound_message(kind: str, bound: Any, instance: Any) -> str:
    # jsonschema's own messages repr the whole instance: a 10,000-item list, one line.
    if kind in ("minLength", "minItems") and bound == 1:
        return "must not be empty"
    if kind == "minLength":
        return f"{_short(instance)} is too short (at least {bound} characters)"
    if kind == "maxLength":
        return f"{_short(instance)} is too long ({len(instance)} characters, at most {bound})"
    if kind == "minItems":
        return f"too few items (at least {bound})"
    if kind == "maxItems":
        return f"too many items ({len(instance)}, at most {bound})"
    side = "less" if kind == "minimum" else "greater"
    return f"{_short(instance)} is {side} than the {kind} of {bound}"


def _pattern_message(pattern: str, instance: Any) -> str:
    defs = schema()["$defs"]
    if pattern == defs["id"]["pattern"]:
        return f"invalid id {_short(instance)}: use {ID_RULE}"
    if pattern == defs["callable"]["pattern"]:
        return f"invalid callable {_short(instance)}: expected 'module.path:attribute'"
    if pattern == defs["sha256"]["pattern"]:
        return f"invalid hash {_short(instance)}: expected 'sha256:' and 64 lowercase hex digits"
    if "A-Za-z_" in pattern:
        return f"{_short(instance)} is not a valid identifier"
    if "0000" in pattern or "\x00" in pattern:
        return f"invalid relative path {_short(instance)}"
    if "kKmMgG" in pattern:
        return f"invalid size {_short(instance)}: expected bytes or a string like '2G'"
    return f"{_short(instance)} does not match {pattern}"


def _any_of_message(error: jsonschema.ValidationError) -> str:
    # Every branch wants another type (see _specific for the other case).
    context = list(error.context or ())
    expected: list[str] = []
    for c in context:
        types = c.validator_value if isinstance(c.validator_value, list) else [c.validator_value]
        expected.extend(str(t) for t in types if str(t) not in expected)
    return f"expected {' or '.join(expected)}, got {_json_type(error.instance)}"


def meaning_problems(doc: Mapping[str, Any]) -> list[str]:
    """Checks beyond structure, on a schema-valid, normalized document."""
    problems: list[str] = []
    problems += _dag_level(doc)
    tasks: list[Mapping[str, Any]] = list(doc["tasks"])
    seen: set[str] = set()
    for task in tasks:
        if task["task_id"] in seen:
            problems.append(f"tasks: duplicate task id {task['task_id']!r}")
        seen.add(task["task_id"])
    for task in tasks:
        problems += _task_level(task, seen)
    if not any("unknown upstream" in p or "depends on itself" in p for p in problems):
        cycle = find_cycle({t["task_id"]: list(t["upstream"]) for t in tasks})
        if cycle:
            problems.append(f"tasks: dependency cycle {' -> '.join(cycle)}")
    return problems


def readable_meaning_problems(doc: Any) -> list[str]:
    """:func:`meaning_problems` of a document that may have failed the schema: a bad id or a
    wrong type elsewhere need not hide a cycle or a bad cron string.

    The checks run only when every field they read has the type they expect (the optional
    ones filled with their defaults), and every task id and env name is printable text, so
    that each message stays one line; otherwise there are none (the schema's problems say
    what is wrong). The messages are those :func:`meaning_problems` gives a valid document.
    """
    if not isinstance(doc, Mapping):
        return []
    top = {
        "schedule": None,
        "timezone": "UTC",
        "fileloc": None,
        "start_date": None,
        "end_date": None,
        **doc,
    }
    env, tasks = top.get("environment"), top.get("tasks")
    if not (
        all(_is_text(top[name], optional=True) for name in _OPTIONAL_TEXT)
        and isinstance(top["timezone"], str)
        and isinstance(env, Mapping)
        and isinstance(env.get("lock"), str)
        and isinstance(env.get("lock_hash"), str)
        and isinstance(tasks, list)
    ):
        return []
    filled = []
    for task in tasks:
        if not isinstance(task, Mapping):
            return []
        item = {"upstream": [], "env": {}, "args": [], "kwargs": {}, **task}
        readable = (
            _is_label(item.get("task_id"))
            and isinstance(item["upstream"], list)
            and all(isinstance(up, str) for up in item["upstream"])
            and isinstance(item["env"], Mapping)
            and all(_is_label(name) for name in item["env"])
            and isinstance(item["args"], list)
            and isinstance(item["kwargs"], Mapping)
            and isinstance(item.get("kind"), str)
            and (item["kind"] == "python" or isinstance(item.get("command"), str | list))
        )
        if not readable:
            return []
        filled.append(item)
    environment = {**env, "lockfile": env.get("lockfile")}
    return meaning_problems({**top, "environment": environment, "tasks": filled})


_OPTIONAL_TEXT = ("schedule", "fileloc", "start_date", "end_date")


def _is_text(value: Any, *, optional: bool = False) -> bool:
    return isinstance(value, str) or (optional and value is None)


def _is_label(value: Any) -> bool:
    """Text that may appear as is in a one-line message."""
    return isinstance(value, str) and value.isprintable() and len(value) <= 250


def _dag_level(doc: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    schedule = doc["schedule"]
    if schedule is not None and (why := schedule_problem(schedule)):
        problems.append(f"schedule: {why}")
    try:
        ZoneInfo(doc["timezone"])
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "America"
        problems.append(f"timezone: unknown time zone {_short(doc['timezone'])}")
    for name, value in (("fileloc", doc["fileloc"]), ("environment.lockfile", env_lockfile(doc))):
        if value is not None and any(part in ("", ".", "..") for part in value.split("/")):
            problems.append(f"{name}: {_short(value)} is not a plain relative path in the bundle")
    dates: dict[str, datetime] = {}
    for name in ("start_date", "end_date"):
        if doc[name] is not None:
            parsed, why = parse_datetime(doc[name])
            if why:
                problems.append(f"{name}: {why}")
            elif parsed is not None:
                dates[name] = parsed
    if schedule is not None and doc["start_date"] is None:
        problems.append("start_date: required when a schedule is set")
    if "start_date" in dates and "end_date" in dates and dates["end_date"] < dates["start_date"]:
        problems.append("end_date: before start_date")
    env = doc["environment"]
    actual = lock_digest(env["lock"])
    if env["lock_hash"] != actual:
        problems.append(f"environment.lock_hash: does not match the lock's content ({actual})")
    return problems


def env_lockfile(doc: Mapping[str, Any]) -> str | None:
    lockfile = doc["environment"]["lockfile"]
    return lockfile if isinstance(lockfile, str) else None


def lock_digest(lock: str) -> str:
    """``sha256:<hex>`` of a lockfile's UTF-8 bytes (its blob's address in the store)."""
    return "sha256:" + hashlib.sha256(lock.encode("utf-8")).hexdigest()


def parse_datetime(text: str) -> tuple[datetime | None, str | None]:
    """An aware UTC datetime from ISO 8601 text, or the reason it is not one."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return (
            None,
            f"invalid date-time {_short(text)}: expected ISO 8601 like 2024-01-31T00:00:00+00:00",
        )
    if value.tzinfo is None or value.utcoffset() is None:
        return None, f"date-time {_short(text)} has no UTC offset: add one, e.g. +00:00"
    try:
        return value.astimezone(UTC), None
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        return None, f"date-time {_short(text)} is out of range in UTC"


def _task_level(task: Mapping[str, Any], known: set[str]) -> list[str]:
    at = f"tasks[{task['task_id']}]"
    problems: list[str] = []
    for up in task["upstream"]:
        if up == task["task_id"]:
            problems.append(f"{at}.upstream: task depends on itself")
        elif up not in known:
            problems.append(f"{at}.upstream: unknown upstream task {up!r}")
    for name in task["env"]:
        if name.startswith(RESERVED_ENV_PREFIX):
            problems.append(
                f"{at}.env.{name}: names starting with {RESERVED_ENV_PREFIX} are reserved"
            )
    upstream = set(task["upstream"])
    for path, value in _strings_and_refs(task):
        if is_xcom_ref(value):
            ref = value[XCOM_REF_KEY]
            if not isinstance(ref, str) or ref not in upstream:
                problems.append(
                    f"{at}.{path}: XCom reference to {_short(ref)}, which is not upstream"
                )
        elif "\x00" in value and (path.startswith(("env", "command"))):
            problems.append(f"{at}.{path}: NUL characters cannot be passed to a process")
        elif any(marker in value for marker in _TEMPLATE_MARKERS):
            try:
                tree = _jinja().parse(value)
                for source in _xcom_calls(tree):
                    if source not in upstream:
                        problems.append(
                            f"{at}.{path}: xcom({_short(source)}) reads a task that is not "
                            "upstream: add it to upstream"
                        )
            except TemplateSyntaxError as exc:
                problems.append(
                    f"{at}.{path}: template syntax error: {str(exc.message)[:200]} "
                    f"(line {exc.lineno})"
                )
            except ValueError:  # Jinja's lexer calls int() on a 5,000-digit literal
                problems.append(f"{at}.{path}: template syntax error: number literal too long")
            except RecursionError:
                problems.append(f"{at}.{path}: template nested too deeply")
    return problems


def _xcom_calls(tree: nodes.Template) -> Iterator[str]:
    """Task ids read by ``{{ xcom('task_id') }}`` calls with a literal id."""
    for call in tree.find_all(nodes.Call):
        if (
            isinstance(call.node, nodes.Name)
            and call.node.name == "xcom"
            and call.args
            and isinstance(call.args[0], nodes.Const)
            and isinstance(call.args[0].value, str)
        ):
            yield call.args[0].value


def _strings_and_refs(task: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every templated string (and XCom reference) of a task, with its location."""
    roots: list[tuple[str, Any]] = [("env", task["env"])]
    if task["kind"] == "python":
        roots += [("args", task["args"]), ("kwargs", task["kwargs"])]
    else:
        roots.append(("command", task["command"]))
    stack = list(reversed(roots))
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) or is_xcom_ref(value):
            yield path, value
        elif isinstance(value, dict):
            stack.extend((f"{path}{_key(k)}", v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))


def is_loader_variable(name: str) -> bool:
    """Whether the dynamic loader or the C library interpret ``name`` before a program runs
    (``LD_PRELOAD``, ``GCONV_PATH``, ...): never part of a task's environment."""
    return name.startswith(LOADER_ENV_PREFIX) or name in LOADER_ENV_NAMES


def push_problems(spec: DagSpec) -> list[str]:
    """What a push refuses beyond :func:`meaning_problems`: checks added after versions were
    stored, which must stay readable (the task process drops what they let through)."""
    return [
        f"tasks[{task.task_id}].env.{name}: {name} is read by the dynamic loader or the C "
        "library before a program starts: not allowed in a task's env"
        for task in spec.tasks
        for name in task.env
        if is_loader_variable(name)
    ]


def check_push(spec: DagSpec) -> None:
    """Raise :class:`ValidationError` with every :func:`push_problems` of ``spec``."""
    problems = push_problems(spec)
    if problems:
        raise ValidationError(problems, subject=f"dag {spec.dag_id}")


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, ..., a]`` (following upstream edges), or ``None``.

    Iterative depth-first search, so a 10,000-task chain does not hit the recursion limit.
    Edges to unknown nodes are ignored (they are reported separately).
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in sorted(graph):
        if root in state:
            continue
        path: list[str] = [root]
        state[root] = 1
        iters = [iter(sorted(graph[root]))]
        while iters:
            node = next(iters[-1], None)
            if node is None:
                state[path.pop()] = 2
                iters.pop()
            elif node in graph and state.get(node) == 1:
                cycle = [*path[path.index(node) :], node]
                return list(reversed(cycle))
            elif node in graph and node not in state:
                state[node] = 1
                path.append(node)
                iters.append(iter(sorted(graph[node])))
    return None
