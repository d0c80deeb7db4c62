"""The task process's entry script: the "dumb worker" that runs inside a DAG's own env.

The supervisor runs a copy of this file as ``<env>/bin/python -I bootstrap.py``. It imports
the standard library only (this project is not installed in the env, and must not be: a
task's env holds its own packages alone, docs/architecture.md). It

1. reads its context, one JSON document, from the inherited fd named by ``ISOLATE_CTX_FD``
   until EOF, then closes that fd;
2. puts the bundle dir, then the SDK dir, first on ``sys.path``;
3. imports ``module:attr`` (a dotted attr is allowed) and unwraps a TaskFlow ``TaskFunction``;
4. ``task`` mode: replaces ``{"$xcom": task_id}`` references in the (already rendered) args and
   kwargs by the upstream values, adds the context keys the callable asks for (Airflow's
   convention: parameters named like a context key, or all keys for ``**kwargs``), calls it;
   ``callback`` mode: calls ``callable(context)``;
5. writes one JSON message to the fd named by ``ISOLATE_XCOM_FD``: ``{"xcom": value}`` on
   success, ``{"error": "one line"}`` on failure. Never pickle: the supervisor parses JSON
   only (docs/security.md: task output is hostile data).

Exit codes: 0 success, 1 the callable (or its result) failed, 2 the context was unusable.
Tracebacks go to stderr, which the supervisor has pointed at the attempt's log.
"""

from __future__ import annotations

import os
import sys

# Imported only for type checkers, or where needed: at run time typing, inspect, json and
# traceback would cost a task several milliseconds of start-up each time (inspect imports ast
# and tokenize; json, like typing, imports re). JSON goes through json's own C accelerator
# (_json) where the interpreter has it; datetime only when the callable asks for a date.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, NoReturn

CTX_FD_VAR = "ISOLATE_CTX_FD"
XCOM_FD_VAR = "ISOLATE_XCOM_FD"
SPARE_FD_VAR = "ISOLATE_SPARE_FD"  # a warm start's control socket (localexec.spares)
_HANDOVER = b"attempt"
XCOM_REF_KEY = "$xcom"  # isolate.model.XCOM_REF_KEY; this file imports nothing of isolate
# The keys a callable may ask for by name, as in Airflow's task context.
CONTEXT_KEYS = (
    "dag_id",
    "task_id",
    "run_id",
    "logical_date",
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "try_number",
    "params",
    "conf",
)
_READ_CHUNK = 1 << 16
_ERROR_CHARS = 2000


class BootstrapError(Exception):
    """The context or the callable path is unusable: a problem of the run, not of the task."""


def read_context(fd: int) -> dict[str, Any]:
    """The JSON context from ``fd`` (a pipe or an anonymous file), read until EOF."""
    chunks = []
    try:
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        # The task's own code must not find the context fd open (nor read it twice).
        os.close(fd)
    try:
        context = json_loads(b"".join(chunks))
    except (ValueError, StopIteration) as exc:
        raise BootstrapError(f"the context is not JSON: {exc}") from None
    if not isinstance(context, dict):
        raise BootstrapError("the context is not a JSON object")
    return context


def load_callable(path: str) -> Callable[..., Any]:
    """``module.sub:attr.inner`` imported; a TaskFlow ``TaskFunction`` gives its function."""
    module_name, sep, attr_path = path.partition(":")
    if not sep or not module_name or not attr_path:
        raise BootstrapError(f"invalid callable {path!r}: expected 'module.path:attribute'")
    __import__(module_name)
    target: Any = sys.modules[module_name]
    for part in attr_path.split("."):
        target = getattr(target, part)
    # ``@task`` wraps the function in isolate.sdk.TaskFunction; outside a DAG it would call
    # the function too, but the plain function gives inspect.signature the real parameters.
    function = getattr(target, "function", None)
    if type(target).__name__ == "TaskFunction" and callable(function):
        target = function
    if not callable(target):
        raise BootstrapError(f"{path} is a {type(target).__name__}, not a callable")
    return target  # type: ignore[no-any-return]


def resolve_xcoms(value: Any, xcoms: Mapping[str, Any]) -> Any:
    """``value`` with every ``{"$xcom": task_id}`` replaced by that upstream task's value."""
    if isinstance(value, dict):
        if len(value) == 1 and XCOM_REF_KEY in value:
            source = value[XCOM_REF_KEY]
            if source not in xcoms:
                raise BootstrapError(f"no XCom from upstream task {source!r} in the context")
            return xcoms[source]
        return {key: resolve_xcoms(item, xcoms) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_xcoms(item, xcoms) for item in value]
    return value


def task_context(context: Mapping[str, Any], *, dates: bool = True) -> dict[str, Any]:
    """The Airflow-style context: ``logical_date`` as an aware datetime (as the ISO text it
    was sent as unless ``dates``), the rest as sent."""
    out = {key: context.get(key) for key in CONTEXT_KEYS}
    if dates:
        _parse_dates(out)
    return out


def _parse_dates(values: dict[str, Any]) -> None:
    if isinstance(values.get("logical_date"), str):
        import datetime

        values["logical_date"] = datetime.datetime.fromisoformat(values["logical_date"])


def context_kwargs(
    function: Callable[..., Any],
    args: list[Any],
    kwargs: Mapping[str, Any],
    available: Mapping[str, Any],
) -> dict[str, Any]:
    """The context keys ``function`` asks for and that its arguments do not already bind."""
    if type(function) is _FUNCTION_TYPE:
        return _plain_function_kwargs(function, args, kwargs, available)
    import inspect

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have no signature: give them nothing
        return {}
    try:
        bound = set(signature.bind_partial(*args, **kwargs).arguments)
    except TypeError as exc:
        raise TypeError(f"{_name(function)}: the task's arguments do not fit: {exc}") from None
    wanted: set[str] = set()
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            wanted.update(available)
        elif name in available and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            wanted.add(name)
    # A name already bound by the task's own arguments is the author's value, not the context's.
    skip = bound | set(kwargs)
    return {name: available[name] for name in sorted(wanted - skip)}


# inspect.CO_VARARGS and CO_VARKEYWORDS, without importing inspect; types.FunctionType.
_CO_VARARGS = 0x04
_CO_VARKEYWORDS = 0x08
_FUNCTION_TYPE = type(_parse_dates)


def _plain_function_kwargs(
    function: Callable[..., Any],
    args: list[Any],
    kwargs: Mapping[str, Any],
    available: Mapping[str, Any],
) -> dict[str, Any]:
    """:func:`context_kwargs` for a plain function, from its code object alone."""
    code = function.__code__
    positional = code.co_varnames[code.co_posonlyargcount : code.co_argcount]
    keyword_only = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    if len(args) > code.co_argcount and not code.co_flags & _CO_VARARGS:
        raise TypeError(
            f"{_name(function)}: the task's arguments do not fit: it takes "
            f"{code.co_argcount} positional arguments but {len(args)} were given"
        )
    unknown = set(kwargs) - set(positional) - set(keyword_only)
    if unknown and not code.co_flags & _CO_VARKEYWORDS:
        raise TypeError(
            f"{_name(function)}: the task's arguments do not fit: unexpected keyword "
            f"argument(s) {', '.join(sorted(unknown))}"
        )
    bound = set(code.co_varnames[: min(len(args), code.co_argcount)]) | set(kwargs)
    if code.co_flags & _CO_VARKEYWORDS:
        wanted = set(available)
    else:
        wanted = {name for name in (*positional, *keyword_only) if name in available}
    return {name: available[name] for name in sorted(wanted - bound)}


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", None) or repr(function)


def encode_xcom(value: Any, limit: int | None) -> bytes:
    """The success message for ``value``; a clear error if it is not JSON or too large."""
    try:
        data = json_dumps({"xcom": value}).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the task's return value is not JSON-serializable ({exc}); return None, a bool, "
            "number, string, or lists/dicts of those (XCom is JSON, never pickle)"
        ) from None
    except RecursionError:
        raise TypeError("the task's return value is nested too deeply to send as JSON") from None
    if limit is not None and len(data) > limit:
        raise ValueError(
            f"the task's return value is {len(data)} bytes of JSON, over the XCom limit of "
            f"{limit} bytes; write large results to storage and return a reference"
        )
    return data


def send(fd: int | None, data: bytes) -> None:
    if fd is None:
        return
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def one_line(exc: BaseException) -> str:
    import traceback

    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    text = " ".join(text.split())
    return text[:_ERROR_CHARS]


def run(context: Mapping[str, Any], xcom_fd: int | None) -> None:
    """Import and call the context's callable; send its result. Raises on any failure."""
    for entry in reversed([context.get("sdk_dir"), context.get("bundle_dir")]):
        if entry:
            # The bundle wins over the SDK dir, and both over the env's site-packages.
            sys.path.insert(0, str(entry))
    function = load_callable(str(context.get("callable") or ""))
    mode = context.get("mode", "task")
    available = task_context(context, dates=mode != "task")
    if mode == "callback":
        callback_context = {**available, **dict(context.get("callback_context") or {})}
        function(callback_context)
        send(xcom_fd, b'{"xcom":null}')
        return
    if mode != "task":
        raise BootstrapError(f"unknown mode {mode!r}")
    xcoms = context.get("xcoms") or {}
    args = resolve_xcoms(list(context.get("args") or []), xcoms)
    kwargs = resolve_xcoms(dict(context.get("kwargs") or {}), xcoms)
    extra = context_kwargs(function, args, kwargs, available)
    _parse_dates(extra)
    result = function(*args, **kwargs, **extra)
    send(xcom_fd, encode_xcom(result, context.get("xcom_max_bytes")))


class _DecodeOptions:
    """What ``_json.make_scanner`` reads: json.loads' defaults, but NaN and Infinity refused."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")


def json_loads(data: bytes) -> Any:
    """``json.loads(data)``, strict, through the C scanner when there is one."""
    text = data.decode("utf-8")
    try:
        import _json

        scan = _json.make_scanner(_DecodeOptions)  # type: ignore[arg-type]
    except (ImportError, AttributeError, TypeError):  # not CPython, or another signature
        import json

        return json.loads(text, parse_constant=_DecodeOptions.parse_constant)
    stripped = text.strip(" \t\n\r")
    try:
        value, end = scan(stripped, 0)
    except Exception:  # the C scanner needs json.decoder imported to describe errors
        end = -1
    if end != len(stripped):
        import json  # says what is wrong, and where

        return json.loads(text, parse_constant=_DecodeOptions.parse_constant)
    return value


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_dumps(value: Any) -> str:
    """``json.dumps(value, allow_nan=False, separators=(",", ":"))``, through the C encoder
    when there is one."""
    try:
        import _json

        encode = _json.make_encoder(
            {}, _not_json, _json.encode_basestring_ascii, None, ":", ",", False, False, False
        )
    except (ImportError, AttributeError, TypeError):  # not CPython, or another signature
        import json

        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    return "".join(encode(value, 0))


def _fd_from_env(name: str) -> int | None:
    """The fd named by the variable ``name``, which is removed: the task's own code and its
    subprocesses see no channel of the bootstrap's."""
    value = os.environ.pop(name, None)
    return int(value) if value else None


def await_attempt(control_fd: int) -> tuple[int, int, int]:
    """A spare's wait: block until the supervisor hands over an attempt; then stdout and
    stderr go to its log. Returns (context fd, result fd, error fd). Exits quietly when the
    supervisor stops the spare (the socket ends) instead."""
    import datetime  # noqa: F401 - paid now, while nothing waits: tasks asking for dates
    import socket

    control = socket.socket(fileno=control_fd)
    try:
        message, fds, _flags, _address = socket.recv_fds(control, 64, 4)
    finally:
        control.close()
    if message != _HANDOVER or len(fds) != 4:
        for fd in fds:
            os.close(fd)
        os._exit(0)
    log_fd, ctx_fd, xcom_fd, error_fd = fds
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.set_inheritable(error_fd, False)  # an exec that works closes it, with nothing said
    return ctx_fd, xcom_fd, error_fd


def exec_command(command: Any, xcom_fd: int, error_fd: int) -> NoReturn:
    """A warm-started command task: become the command (an argv list, or a string for
    ``/bin/sh -c``), found on the task's ``PATH``. A command that cannot be started is
    reported on the error pipe, as the cold path's child does, and exits 127."""
    os.close(xcom_fd)
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
    try:
        os.execvpe(argv[0], argv, os.environ)  # noqa: S606 - the task's own command
    except OSError as exc:
        message = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
        send(2, f"isolate: could not start the task: {message}\n".encode())
        send(error_fd, message.encode()[:4096])
    os._exit(127)


def take_over(setup: Mapping[str, Any]) -> None:
    """Become the attempt's process: its log banner, work dir and whole environment."""
    banner = setup.get("banner")
    if isinstance(banner, str):
        send(2, banner.encode())
    os.chdir(str(setup["work_dir"]))
    os.environ.clear()
    os.environ.update({str(name): str(value) for name, value in dict(setup["env"]).items()})


def main() -> NoReturn:
    # stdout goes to a log file: line buffering keeps it in order with stderr's lines.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    xcom_fd: int | None = None
    ctx_fd: int | None
    try:
        spare_fd = _fd_from_env(SPARE_FD_VAR)
        xcom_fd = _fd_from_env(XCOM_FD_VAR)
        ctx_fd = _fd_from_env(CTX_FD_VAR)
        error_fd = None
        if spare_fd is not None:
            ctx_fd, xcom_fd, error_fd = await_attempt(spare_fd)
        if ctx_fd is None:
            raise BootstrapError(f"{CTX_FD_VAR} is not set: run this script from the supervisor")
        context = read_context(ctx_fd)
        if spare_fd is not None and error_fd is not None and xcom_fd is not None:
            setup = context.pop("spare", None)
            if not isinstance(setup, dict):
                raise BootstrapError("a warm start's context has no set-up")
            take_over(setup)
            if context.get("mode") == "command":
                exec_command(context.get("command"), xcom_fd, error_fd)
            os.close(error_fd)
    except (BootstrapError, ValueError, OSError, KeyError, TypeError) as exc:
        print(f"isolate bootstrap: {exc}", file=sys.stderr)
        _report(xcom_fd, f"isolate bootstrap: {exc}")
        sys.exit(2)
    try:
        run(context, xcom_fd)
    except SystemExit:
        raise  # sys.exit(n) in the task: exit n (the supervisor treats 0 without XCom as failed)
    except BaseException as exc:
        import traceback

        traceback.print_exc()
        _report(xcom_fd, one_line(exc))
        sys.stderr.flush()
        sys.exit(1)
    sys.exit(0)


def _report(xcom_fd: int | None, message: str) -> None:
    try:
        send(xcom_fd, json_dumps({"error": message}).encode())
    except OSError:
        pass  # the supervisor refused the pipe (e.g. an over-size write); the log has it


if __name__ == "__main__":
    main()
