"""The authoring SDK: ``DAG``, ``PythonTask``, ``CommandTask`` and the ``@task`` decorator.

Familiar to Airflow users::

    with DAG("etl", schedule="@daily", start_date=datetime(2024, 1, 1)) as dag:
        @task
        def extract() -> dict: ...
        @task(retries=3)
        def load(rows: dict) -> None: ...
        report = CommandTask("report", command=["python", "-m", "etl.report", "{{ ds }}"])
        load(extract()) >> report

This module imports only the standard library and :mod:`isolate.errors`: the task runner
puts these two files (and ``isolate/__init__.py``) on a task's import path, so a DAG file
that does ``from isolate import DAG, task`` imports inside the DAG's own env, where the rest
of isolate is not installed. Outside a ``with DAG(...)`` block a decorated function is just
the function: that is how the task process calls it.
"""

from __future__ import annotations

import datetime as dt
import math

from isolate.errors import DagDefinitionError

# Every task imports this module (through its DAG file): typing and zoneinfo would add
# several milliseconds to each start (both import re), so they are for type checkers only,
# and zoneinfo is imported where a time zone is actually used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

__all__ = ["DAG", "CommandTask", "PythonTask", "XComArg", "task"]

# The files of the ``isolate`` package that a task's import path gets, so that DAG modules
# import there: this module, its one dependency and the package's SDK-only __init__.
RUNTIME_FILES = ("__init__.py", "errors.py", "sdk.py")

XCOM_REF_KEY = "$xcom"  # the same key as isolate.model.XCOM_REF_KEY (kept stdlib-only here)

_RETRY_KEYS = (
    "retries",
    "retry_delay",
    "retry_exponential_backoff",
    "max_retry_delay",
    "execution_timeout",
)
_CALLBACK_KEYS = ("on_failure_callback", "on_success_callback", "on_retry_callback")
# Task options that default_args may also give every task of the DAG, as in Airflow.
# weight_rule exists for Airflow users: only "absolute" (a task's priority is its own
# priority_weight) is offered, and it changes nothing.
_TASK_KEYS = ("priority_weight", "weight_rule")
_LIMIT_KEYS = ("memory", "processes", "cpu_time", "open_files")

_active: list[DAG] = []
# While the loader imports DAG files it sets this list; every DAG created lands in it.
_collected: list[DAG] | None = None


def collect_into(target: list[DAG] | None) -> None:
    """Used by the loader: start (a list) or stop (``None``) collecting created DAGs."""
    global _collected
    _collected = target


class DAG:
    """A DAG definition. Use as a context manager; tasks created inside belong to it."""

    def __init__(
        self,
        dag_id: str,
        *,
        description: str | None = None,
        schedule: str | None = None,
        start_date: dt.datetime | str | None = None,
        end_date: dt.datetime | str | None = None,
        timezone: str = "UTC",
        catchup: bool = False,
        max_active_runs: int = 16,
        max_active_tasks: int = 16,
        params: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        default_args: Mapping[str, Any] | None = None,
        lockfile: str = "requirements.txt",
        requirements: Iterable[str] = (),
    ) -> None:
        if not isinstance(dag_id, str) or not dag_id:
            raise DagDefinitionError(f"DAG id must be a non-empty string, got {dag_id!r}")
        self.dag_id = dag_id
        self.description = description
        self.schedule = schedule
        self.timezone = timezone
        self.start_date = _iso_datetime(start_date, timezone, f"DAG {dag_id}: start_date")
        self.end_date = _iso_datetime(end_date, timezone, f"DAG {dag_id}: end_date")
        self.catchup = catchup
        self.max_active_runs = max_active_runs
        self.max_active_tasks = max_active_tasks
        self.params = _to_json(dict(params or {}), f"DAG {dag_id}: params", None)
        self.tags = sorted(set(tags))
        self.lockfile = lockfile
        # Inputs of `isolate lock` when the folder has no requirements.in; not part of the
        # serialized DAG (the lockfile is).
        self.requirements = list(requirements)
        if not all(isinstance(r, str) and r.strip() for r in self.requirements):
            raise DagDefinitionError(f"DAG {dag_id}: requirements must be non-empty strings")
        self.tasks: dict[str, BaseTask] = {}
        args = dict(default_args or {})
        unknown = sorted(set(args) - set(_RETRY_KEYS) - set(_CALLBACK_KEYS) - set(_TASK_KEYS))
        if unknown:
            raise DagDefinitionError(
                f"DAG {dag_id}: unknown default_args {unknown} "
                f"(known: {', '.join(_RETRY_KEYS + _CALLBACK_KEYS + _TASK_KEYS)})"
            )
        # Given to each task that does not set its own (the document has no DAG-wide field).
        self.task_defaults = {
            "priority_weight": 1,  # Airflow's default
            **_task_options(args, f"DAG {dag_id}: default_args"),
        }
        self.defaults = _retry_fields(args, f"DAG {dag_id}: default_args")
        self.defaults = {k: v for k, v in self.defaults.items() if v is not None}
        self.defaults["callbacks"] = _callbacks(args, f"DAG {dag_id}: default_args")
        if _collected is not None:
            _collected.append(self)

    def __enter__(self) -> DAG:
        _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _active.remove(self)

    def __repr__(self) -> str:
        return f"<DAG {self.dag_id}: {len(self.tasks)} tasks>"

    def add_task(self, new: BaseTask) -> None:
        if new.task_id in self.tasks:
            raise DagDefinitionError(f"DAG {self.dag_id}: task id {new.task_id!r} is used twice")
        self.tasks[new.task_id] = new

    def unique_task_id(self, base: str) -> str:
        """``base``, or ``base__1``, ``base__2``... when a decorated task is called again."""
        if base not in self.tasks:
            return base
        n = 1
        while f"{base}__{n}" in self.tasks:
            n += 1
        return f"{base}__{n}"

    def to_draft(self) -> dict[str, Any]:
        """The DAG as a format document without environment, bundle and file location."""
        return {
            "dag_id": self.dag_id,
            "description": self.description,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "catchup": self.catchup,
            "max_active_runs": self.max_active_runs,
            "max_active_tasks": self.max_active_tasks,
            "params": self.params,
            "tags": self.tags,
            "defaults": self.defaults,
            "tasks": [t.to_draft() for t in self.tasks.values()],
        }


class _Dependable:
    """``a >> b``, ``a << b``, ``[a, b] >> c`` and ``c << [a, b]`` for tasks and XComArgs."""

    def _task(self) -> BaseTask:
        raise NotImplementedError

    def __rshift__(self, other: Any) -> Any:
        for down in _tasks_of(other):
            down._task().add_upstream(self._task())
        return other

    def __lshift__(self, other: Any) -> Any:
        for up in _tasks_of(other):
            self._task().add_upstream(up._task())
        return other

    def __rrshift__(self, other: Any) -> Any:  # [a, b] >> self
        self.__lshift__(other)
        return self

    def __rlshift__(self, other: Any) -> Any:  # [a, b] << self
        self.__rshift__(other)
        return self


def _tasks_of(other: Any) -> list[_Dependable]:
    items = list(other) if isinstance(other, list | tuple | set) else [other]
    for item in items:
        if not isinstance(item, _Dependable):
            raise DagDefinitionError(f"cannot set a dependency on {item!r}: not a task")
    return items


class BaseTask(_Dependable):
    """Options common to every task kind."""

    kind = ""

    def __init__(
        self,
        task_id: str,
        *,
        dag: DAG | None = None,
        trigger_rule: str = "all_success",
        env: Mapping[str, str] | None = None,
        limits: Mapping[str, int | str] | None = None,
        doc: str | None = None,
        **options: Any,
    ) -> None:
        owner = dag or (_active[-1] if _active else None)
        if owner is None:
            raise DagDefinitionError(
                f"task {task_id!r} is not in a DAG: create it inside 'with DAG(...)' or pass dag="
            )
        if not isinstance(task_id, str) or not task_id:
            raise DagDefinitionError(f"DAG {owner.dag_id}: task id must be a non-empty string")
        where = f"DAG {owner.dag_id}: task {task_id}"
        unknown = sorted(set(options) - set(_RETRY_KEYS) - set(_CALLBACK_KEYS) - set(_TASK_KEYS))
        if unknown:
            raise DagDefinitionError(f"{where}: unknown argument(s) {unknown}")
        bad_limits = sorted(set(limits or {}) - set(_LIMIT_KEYS))
        if bad_limits:
            raise DagDefinitionError(
                f"{where}: unknown limit(s) {bad_limits} (known: {_LIMIT_KEYS})"
            )
        self.dag = owner
        self.task_id = task_id
        self.trigger_rule = trigger_rule
        self.env = dict(env or {})
        self.limits = {k: (limits or {}).get(k) for k in _LIMIT_KEYS}
        self.doc = doc
        self.retry = _retry_fields(options, where)
        self.callbacks = _callbacks(options, where)
        own = {**owner.task_defaults, **_task_options(options, where)}
        self.priority_weight = own["priority_weight"]
        self.upstream: set[str] = set()
        self._where = where
        owner.add_task(self)

    def _task(self) -> BaseTask:
        return self

    def add_upstream(self, other: BaseTask) -> None:
        if other.dag is not self.dag:
            raise DagDefinitionError(
                f"{self._where}: cannot depend on task {other.task_id!r} of DAG {other.dag.dag_id}"
            )
        self.upstream.add(other.task_id)

    def set_upstream(self, other: Any) -> None:
        self << other

    def set_downstream(self, other: Any) -> None:
        self >> other

    @property
    def output(self) -> XComArg:
        """This task's return value, to pass to another task (Airflow's ``.output``)."""
        return XComArg(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dag.dag_id}.{self.task_id}>"

    def to_draft(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "kind": self.kind,
            "doc": self.doc,
            "upstream": sorted(self.upstream),
            "trigger_rule": self.trigger_rule,
            "env": self.env,
            "limits": self.limits,
            "retry": self.retry,
            "callbacks": self.callbacks,
            "priority_weight": self.priority_weight,
        }


class PythonTask(BaseTask):
    """Calls ``callable`` (``"pkg.module:attr"`` or a module-level function) in the DAG's env."""

    kind = "python"

    def __init__(
        self,
        task_id: str,
        callable: str | Callable[..., Any],
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(task_id, **options)
        self.callable = _import_path(callable, self._where)
        self.args = _to_json(list(args), f"{self._where}: args", self)
        self.kwargs = _to_json(dict(kwargs or {}), f"{self._where}: kwargs", self)

    def to_draft(self) -> dict[str, Any]:
        return {
            **super().to_draft(),
            "callable": self.callable,
            "args": self.args,
            "kwargs": self.kwargs,
        }


class CommandTask(BaseTask):
    """Runs ``command``: an argv list (no shell) or one shell string, with the env's bin on PATH."""

    kind = "command"

    def __init__(self, task_id: str, command: Sequence[str] | str, **options: Any) -> None:
        super().__init__(task_id, **options)
        if isinstance(command, str):
            self.command: list[str] | str = command
        else:
            self.command = list(command)
            if not all(isinstance(part, str) for part in self.command):
                raise DagDefinitionError(f"{self._where}: command items must be strings")

    def to_draft(self) -> dict[str, Any]:
        return {**super().to_draft(), "command": self.command}


class XComArg(_Dependable):
    """The future return value of a task; passing it to another task wires both together."""

    def __init__(self, task: BaseTask) -> None:
        self.task = task

    def _task(self) -> BaseTask:
        return self.task

    def __repr__(self) -> str:
        return f"<XComArg of {self.task!r}>"


class TaskFunction:
    """What ``@task`` makes of a function: a task factory inside a DAG, the function outside."""

    def __init__(self, function: Callable[..., Any], task_id: str | None, options: dict[str, Any]):
        self.function = function
        self.task_id = task_id or function.__name__
        self.options = options
        self.__wrapped__ = function
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__
        self.__qualname__ = function.__qualname__
        self.__module__ = function.__module__

    def override(self, **options: Any) -> TaskFunction:
        """A copy with other task options, e.g. ``extract.override(task_id="e2", retries=2)()``."""
        task_id = options.pop("task_id", self.task_id)
        return TaskFunction(self.function, task_id, {**self.options, **options})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not _active:
            return self.function(*args, **kwargs)
        dag = self.options.get("dag") or _active[-1]
        made = PythonTask(
            dag.unique_task_id(self.task_id),
            _import_path(self.function, f"DAG {dag.dag_id}: @task {self.task_id}"),
            args=args,
            kwargs=kwargs,
            **self.options,
        )
        return XComArg(made)


def task(
    python_callable: Callable[..., Any] | None = None, *, task_id: str | None = None, **options: Any
) -> Any:
    """TaskFlow decorator: ``@task`` or ``@task(task_id=..., retries=..., env=..., ...)``."""

    def wrap(function: Callable[..., Any]) -> TaskFunction:
        return TaskFunction(function, task_id, options)

    return wrap(python_callable) if python_callable is not None else wrap


def _import_path(target: str | Callable[..., Any], where: str) -> str:
    if isinstance(target, str):
        return target
    function = target.function if isinstance(target, TaskFunction) else target
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise DagDefinitionError(
            f"{where}: {qualname or target!r} must be a module-level function of the DAG folder "
            "(or give the callable as 'module:attr')"
        )
    return f"{module}:{qualname}"


def _to_json(value: Any, where: str, consumer: BaseTask | None) -> Any:
    """JSON data from Python values; XComArgs become references and upstream edges."""
    if isinstance(value, XComArg):
        if consumer is None:
            raise DagDefinitionError(f"{where}: a task's output cannot be used here")
        consumer.add_upstream(value.task)
        return {XCOM_REF_KEY: value.task.task_id}
    if isinstance(value, BaseTask):
        raise DagDefinitionError(f"{where}: pass task.output (its return value), not the task")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DagDefinitionError(f"{where}: {value} is not allowed (JSON numbers are finite)")
        return value
    if isinstance(value, list | tuple):
        return [_to_json(v, f"{where}[{i}]", consumer) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if set(value) == {XCOM_REF_KEY}:
            raise DagDefinitionError(
                f"{where}: a dict with the single key {XCOM_REF_KEY!r} is reserved"
            )
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise DagDefinitionError(f"{where}: dict key {key!r} is not a string")
            out[key] = _to_json(item, f"{where}.{key}", consumer)
        return out
    raise DagDefinitionError(
        f"{where}: {type(value).__name__} is not JSON; pass a string, number, list or dict "
        "(for dates, a template such as '{{ ds }}')"
    )


def _seconds(value: Any, where: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DagDefinitionError(f"{where}: expected a timedelta or seconds, got {value!r}")
    return int(value) if float(value).is_integer() else value


def _retry_fields(args: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {key: args.get(key) for key in _RETRY_KEYS}
    for key in ("retry_delay", "max_retry_delay", "execution_timeout"):
        out[key] = _seconds(out[key], f"{where}: {key}")
    return out


def _task_options(args: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The task options set in ``args`` (``priority_weight``; the format checks its value),
    after refusing a ``weight_rule`` other than Airflow's "absolute"."""
    rule = args.get("weight_rule")
    if rule is not None and str(getattr(rule, "value", rule)) != "absolute":
        raise DagDefinitionError(
            f"{where}: weight_rule {rule!r} is not supported: a task's priority is its own "
            "priority_weight (Airflow's 'absolute' rule)"
        )
    return {key: args[key] for key in ("priority_weight",) if args.get(key) is not None}


def _callbacks(args: Mapping[str, Any], where: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in _CALLBACK_KEYS:
        value = args.get(key)
        out[key.removesuffix("_callback")] = None if value is None else _import_path(value, where)
    return out


def _iso_datetime(value: Any, timezone: str, where: str) -> str | None:
    """ISO text; a naive datetime is read in the DAG's time zone, as Airflow does."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise DagDefinitionError(f"{where}: expected a datetime, got {value!r}")
    moment: dt.datetime = value
    if moment.tzinfo is None:
        try:
            from zoneinfo import ZoneInfo

            moment = moment.replace(tzinfo=ZoneInfo(timezone))
        except (ValueError, KeyError, OSError):
            raise DagDefinitionError(f"{where}: unknown time zone {timezone!r}") from None
    return moment.isoformat()
