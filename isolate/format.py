"""The serialized DAG format: parsing, upgrading, normalizing, canonical JSON and hashing.

``load_document`` is the only way from bytes to a :class:`~isolate.model.DagSpec`, and it
raises only :class:`~isolate.errors.ValidationError` whatever the input. ``canonical_json``
is the one serialization: sorted keys, no insignificant whitespace, every optional field
present, tasks sorted by id. The same DAG gives the same bytes and hash anywhere.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

from isolate.config import Settings
from isolate.errors import FormatVersionError, UsageError, ValidationError
from isolate.model import (
    LATER_DAG_FIELDS,
    LATER_TASK_FIELDS,
    Callbacks,
    DagSpec,
    Defaults,
    Limits,
    Lockfile,
    RetryOverrides,
    RetryPolicy,
    TaskSpec,
)
from isolate.units import parse_size
from isolate.validate import (
    is_valid_id,
    meaning_problems,
    parse_datetime,
    structure_problems,
    where,
)

FORMAT_VERSION = 1
MAX_DEPTH = 64
# Integers must fit in 64 bits: every JSON reader we care about (and the store's columns)
# handles them, and a 4,300-digit integer would fail Python's own int/str conversion.
MIN_INT, MAX_INT = -(2**63), 2**63 - 1

Upgrader = Callable[[dict[str, Any]], dict[str, Any]]
# UPGRADERS[n] turns a format-n document into a format-(n+1) one. Format 1 is the first
# published format, so the chain is empty; the next format adds its step here.
UPGRADERS: Mapping[int, Upgrader] = {}

_TOP_DEFAULTS: dict[str, Any] = {
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
    "defaults": {},
}
_RETRY_DEFAULTS = RetryPolicy()
_SECONDS = ("retry_delay", "max_retry_delay", "execution_timeout")
_CALLBACKS = ("on_failure", "on_success", "on_retry")
_LIMITS = ("memory", "processes", "cpu_time", "open_files")


def load_document(
    data: bytes | bytearray | str,
    *,
    max_bytes: int = Settings.max_spec_bytes,
    upgraders: Mapping[int, Upgrader] = UPGRADERS,
) -> DagSpec:
    """Parse, upgrade and validate a document. Raises only :class:`ValidationError`."""
    return load_object(parse(data, max_bytes=max_bytes), upgraders=upgraders)


def load_object(obj: Any, *, upgraders: Mapping[int, Upgrader] = UPGRADERS) -> DagSpec:
    """Validate an already-parsed document (e.g. one built by the SDK)."""
    try:
        _check_values(obj)
        doc = upgrade(obj, upgraders=upgraders)
        problems = structure_problems(doc)
        if problems:
            raise ValidationError(problems, subject=_subject(doc))
        doc, problems = _normalize(doc)
        problems += meaning_problems(doc)
        if problems:
            raise ValidationError(problems, subject=_subject(doc))
        return _build(doc)
    except RecursionError:
        raise ValidationError(f"document nested deeper than {MAX_DEPTH} levels") from None


def parse(data: bytes | bytearray | str, *, max_bytes: int) -> Any:
    """JSON text to Python values, refusing what JSON alone would let through."""
    if isinstance(data, str):
        size = len(data.encode("utf-8", "surrogatepass"))
    elif isinstance(data, bytes | bytearray):
        size = len(data)
    else:
        raise ValidationError(f"document must be bytes or text, not {type(data).__name__}")
    if size > max_bytes:
        raise ValidationError(
            f"document is {size} bytes, over the cap of {max_bytes} (setting max_spec_bytes)"
        )
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        return json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except UnicodeDecodeError as exc:
        raise ValidationError(f"document is not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise ValidationError(f"document nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError
        raise ValidationError(f"document is not valid JSON: {exc}") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValidationError(f"duplicate key {_short(key)} in a JSON object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValidationError(f"{name} is not allowed: JSON numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValidationError(f"number {text[:40]} is too large")
    return value


def _bounded_int(text: str) -> int:
    # Checked before int(): Python refuses to convert more than 4,300 digits.
    if len(text.lstrip("-")) > 19 or not MIN_INT <= int(text) <= MAX_INT:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValidationError(f"integer {shown} is out of range: integers must fit in 64 bits")
    return int(text)


def _check_values(obj: Any) -> None:
    """Depth cap, 64-bit integers and valid Unicode everywhere, iteratively.

    No recursion on hostile input; ``path`` only locates the message.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(obj, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise ValidationError(f"document nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(value, path, obj)
        elif isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    kind = type(key).__name__
                    raise ValidationError(
                        f"{where(path, obj)}: object key of type {kind} is not text"
                    )
                _check_text(key, path, obj)
                stack.append((item, (*path, key)))
        elif isinstance(value, list | tuple):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif value is not None and not isinstance(value, bool | int | float):
            raise ValidationError(
                f"{where(path, obj)}: value of type {type(value).__name__} is not JSON"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(f"{where(path, obj)}: NaN and infinite numbers are not allowed")
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not MIN_INT <= value <= MAX_INT
        ):
            raise ValidationError(
                f"{where(path, obj)}: integer out of range: integers must fit in 64 bits"
            )


def _check_text(text: str, path: tuple[str | int, ...], doc: Any) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{where(path, doc)}: string {text[:40]!r} is not valid Unicode (lone surrogate)"
        ) from None


def upgrade(doc: Any, *, upgraders: Mapping[int, Upgrader] = UPGRADERS) -> Any:
    """Bring a document of an older format version up to :data:`FORMAT_VERSION`."""
    if not isinstance(doc, dict):
        return doc  # the schema check names the problem
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValidationError(
            f"format_version: expected an integer format version, got {_short(version)}"
            if "format_version" in doc
            else "document: missing required field 'format_version'"
        )
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"format_version: document uses format {version}, this isolate reads up to "
            f"{FORMAT_VERSION}: upgrade isolate to load it"
        )
    oldest = min(upgraders, default=FORMAT_VERSION)
    if version < oldest:
        raise ValidationError(
            f"format_version: unknown format {version} (oldest readable: {oldest})"
        )
    while version < FORMAT_VERSION:
        if version not in upgraders:
            raise ValidationError(f"format_version: no upgrade from format {version}")
        try:
            doc = upgraders[version](copy.deepcopy(doc))  # may edit it in place
        except (LookupError, TypeError, ValueError, AttributeError) as exc:
            # An old document too broken to upgrade is still only a bad document.
            raise ValidationError(
                f"format_version: cannot upgrade this format-{version} document "
                f"({type(exc).__name__}: {str(exc)[:100]})"
            ) from None
        version += 1
        if not isinstance(doc, dict) or doc.get("format_version") != version:
            raise ValidationError(f"format_version: upgrade to {version} produced a wrong version")
    return doc


def _normalize(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Fill defaults and put every field into its one canonical spelling."""
    problems: list[str] = []
    doc = {**_TOP_DEFAULTS, "params": {}, **raw}  # a fresh dict: never hand out the default
    doc["tags"] = sorted(set(doc["tags"]))
    for name in ("start_date", "end_date"):
        if doc[name] is not None:
            parsed, _ = parse_datetime(doc[name])
            if parsed is not None:
                doc[name] = parsed.astimezone(UTC).isoformat()
    defaults = {
        **{name: getattr(_RETRY_DEFAULTS, name) for name in RetryPolicy.__dataclass_fields__},
        **raw.get("defaults", {}),
    }
    defaults["retries"] = int(defaults["retries"])
    for name in _SECONDS:
        defaults[name] = _number(defaults[name])
    defaults["callbacks"] = {name: defaults.get("callbacks", {}).get(name) for name in _CALLBACKS}
    doc["defaults"] = defaults
    doc["max_active_runs"] = int(doc["max_active_runs"])
    _later_fields(doc, LATER_DAG_FIELDS)
    tasks = []
    for task in raw["tasks"]:
        tasks.append(_normalize_task(task, problems))
    doc["tasks"] = sorted(tasks, key=lambda t: t["task_id"])
    return doc, problems


def _normalize_task(raw: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    task: dict[str, Any] = {
        "task_id": raw["task_id"],
        "kind": raw["kind"],
        "doc": raw.get("doc"),
        "upstream": sorted(set(raw.get("upstream", []))),
        "trigger_rule": raw.get("trigger_rule", "all_success"),
        "env": dict(raw.get("env", {})),
    }
    limits = {name: raw.get("limits", {}).get(name) for name in _LIMITS}
    for name in _LIMITS:
        if limits[name] is not None:
            at = f"tasks[{task['task_id']}].limits.{name}"
            value = limits[name]
            if isinstance(value, float):  # JSON Schema counts 2.0 as an integer; parse_size not
                value = int(value)
            try:
                limits[name] = parse_size(value) if name == "memory" else int(value)
            except UsageError as exc:
                problems.append(f"{at}: {exc}")
            except ValueError:  # parse_size leaks int()'s 4,300-digit limit
                problems.append(f"{at}: invalid size {_short(value)}: too large")
            else:
                if limits[name] == 0:
                    problems.append(f"{at}: must be at least 1")
                elif limits[name] > MAX_INT:
                    problems.append(f"{at}: {_short(value)} is more than {MAX_INT} bytes")
    task["limits"] = limits
    retry = {name: raw.get("retry", {}).get(name) for name in RetryOverrides.__dataclass_fields__}
    if retry["retries"] is not None:
        retry["retries"] = int(retry["retries"])
    for name in _SECONDS:
        retry[name] = _number(retry[name])
    task["retry"] = retry
    task["callbacks"] = {name: raw.get("callbacks", {}).get(name) for name in _CALLBACKS}
    if task["kind"] == "python":
        task["callable"] = raw["callable"]
        task["args"] = list(raw.get("args", []))
        task["kwargs"] = dict(raw.get("kwargs", {}))
    else:
        task["command"] = raw["command"]
    for name in LATER_TASK_FIELDS:
        if name in raw:
            task[name] = raw[name]
    _later_fields(task, LATER_TASK_FIELDS)
    return task


def _later_fields(doc: dict[str, Any], later: Mapping[str, Any]) -> None:
    """Integer fields added after format 1 was published: kept only when not the default
    (see ``isolate.model.LATER_DAG_FIELDS``), so older documents keep their hash."""
    for name, default in later.items():
        if name not in doc:
            continue
        value = int(doc[name])  # JSON Schema counts 4.0 as an integer
        if value == default:
            del doc[name]
        else:
            doc[name] = value


def _number(value: Any) -> Any:
    """Seconds as an int when whole, so ``300`` and ``300.0`` hash the same."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _subject(doc: Any) -> str | None:
    dag_id = doc.get("dag_id") if isinstance(doc, dict) else None
    return f"dag {dag_id}" if isinstance(dag_id, str) and is_valid_id(dag_id) else None


def _build(doc: dict[str, Any]) -> DagSpec:
    defaults = doc["defaults"]
    return DagSpec(
        format_version=doc["format_version"],
        dag_id=doc["dag_id"],
        description=doc["description"],
        fileloc=doc["fileloc"],
        schedule=doc["schedule"],
        timezone=doc["timezone"],
        start_date=doc["start_date"],
        end_date=doc["end_date"],
        catchup=doc["catchup"],
        max_active_runs=doc["max_active_runs"],
        params=doc["params"],
        tags=tuple(doc["tags"]),
        defaults=Defaults(
            retry=RetryPolicy(**{k: v for k, v in defaults.items() if k != "callbacks"}),
            callbacks=Callbacks(**defaults["callbacks"]),
        ),
        tasks=tuple(_build_task(t) for t in doc["tasks"]),
        lockfile=Lockfile.from_document(doc["environment"]),
        bundle_hash=doc["bundle"]["hash"],
        **{name: doc.get(name, default) for name, default in LATER_DAG_FIELDS.items()},
    )


def _build_task(task: dict[str, Any]) -> TaskSpec:
    command = task.get("command")
    return TaskSpec(
        task_id=task["task_id"],
        kind=task["kind"],
        doc=task["doc"],
        upstream=tuple(task["upstream"]),
        trigger_rule=task["trigger_rule"],
        env=task["env"],
        limits=Limits(**task["limits"]),
        retry=RetryOverrides(**task["retry"]),
        callbacks=Callbacks(**task["callbacks"]),
        callable=task.get("callable"),
        args=tuple(task.get("args", ())),
        kwargs=task.get("kwargs"),
        command=tuple(command) if isinstance(command, list) else command,
        **{name: task.get(name, default) for name, default in LATER_TASK_FIELDS.items()},
    )


def canonical_json(spec: DagSpec) -> str:
    """The one serialization of a DAG version (UTF-8 text, sorted keys, compact)."""
    return json.dumps(
        spec.to_document(),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def spec_hash(spec: DagSpec) -> str:
    """``sha256:<hex>`` of :func:`canonical_json`: the version's identity."""
    return "sha256:" + hashlib.sha256(canonical_json(spec).encode("utf-8")).hexdigest()
