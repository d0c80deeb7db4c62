"""The task process's bootstrap: stdlib only, run by the env's own python, and its pure parts."""

# The fixtures come from a shared module; pyflakes sees their use as arguments as
# redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from localexec import bootstrap
from localexec.attempt import make_context
from localexec.runtime import RuntimeFiles
from tests.localexec_support import (  # noqa: F401 - fixtures
    LOGICAL_DATE,
    env_python,
    runtime,
)

FORBIDDEN = ("isolate", "envcache", "localexec", "jinja2", "sqlalchemy", "click", "psutil")


def _run_bootstrap(
    python: Path, runtime: RuntimeFiles, context: dict[str, Any] | bytes | None
) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run the installed bootstrap as the supervisor would, but by hand: two pipes, clean env."""
    ctx_r, ctx_w = os.pipe()
    xcom_r, xcom_w = os.pipe()
    env = {"PATH": "/usr/bin:/bin", bootstrap.XCOM_FD_VAR: str(xcom_w)}
    if context is not None:
        env[bootstrap.CTX_FD_VAR] = str(ctx_r)
        data = context if isinstance(context, bytes) else json.dumps(context).encode()
        os.write(ctx_w, data)  # small: fits the pipe buffer
    os.close(ctx_w)
    try:
        proc = subprocess.run(
            [str(python), "-I", str(runtime.bootstrap)],
            env=env,
            pass_fds=(ctx_r, xcom_w),
            capture_output=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(ctx_r)
        os.close(xcom_w)
    with os.fdopen(xcom_r, "rb") as result:
        return proc, result.read()


def _context(bundle: Path, runtime: RuntimeFiles, **extra: Any) -> dict[str, Any]:
    base = make_context(
        dag_id="etl", task_id="t", run_id="r1", logical_date=LOGICAL_DATE, try_number=2
    )
    return {
        **base,
        "bundle_dir": str(bundle),
        "sdk_dir": str(runtime.sdk_dir),
        "mode": "task",
        "args": [],
        "kwargs": {},
        "xcoms": {},
        **extra,
    }


def test_the_bootstrap_imports_nothing_of_this_project_in_the_env(
    env_python: Path, runtime: RuntimeFiles, tmp_path: Path
) -> None:
    (tmp_path / "probe.py").write_text(
        "import sys\n\ndef modules():\n    return sorted(sys.modules)\n"
    )
    proc, result = _run_bootstrap(
        env_python, runtime, _context(tmp_path, runtime, callable="probe:modules")
    )
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(result)["xcom"]
    assert "_json" in modules and "probe" in modules
    leaked = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert leaked == []
    # Start-up cost: nothing that imports re, ast or tokenize (several ms each per task).
    slow = {"re", "json", "typing", "inspect", "ast", "datetime", "importlib"}
    assert slow & set(modules) == set()


def test_the_bootstrap_source_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(bootstrap.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)


def test_the_bootstrap_runs_a_dotted_attribute_with_context_and_xcoms(
    env_python: Path, runtime: RuntimeFiles, tmp_path: Path
) -> None:
    (tmp_path / "mod.py").write_text(
        textwrap.dedent(
            """
            class Holder:
                @staticmethod
                def go(rows, try_number, conf=None):
                    return {"n": sum(rows), "try": try_number, "conf": conf}
            """
        )
    )
    context = _context(
        tmp_path, runtime, callable="mod:Holder.go", args=[{"$xcom": "up"}], xcoms={"up": [2, 3]}
    )
    proc, result = _run_bootstrap(env_python, runtime, context)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(result) == {"xcom": {"n": 5, "try": 2, "conf": {}}}


def test_the_bootstrap_without_a_context_exits_2(env_python: Path, runtime: RuntimeFiles) -> None:
    proc, result = _run_bootstrap(env_python, runtime, None)
    assert proc.returncode == 2
    assert b"ISOLATE_CTX_FD is not set" in proc.stderr
    assert "ISOLATE_CTX_FD" in json.loads(result)["error"]


def test_a_context_that_is_not_json_exits_2(env_python: Path, runtime: RuntimeFiles) -> None:
    proc, result = _run_bootstrap(env_python, runtime, b"{not json")
    assert proc.returncode == 2
    assert "the context is not JSON" in json.loads(result)["error"]


# -- pure parts, in this process ------------------------------------------------------------


def test_xcom_references_resolve_and_unknown_ones_fail() -> None:
    value = {"a": [{"$xcom": "x"}, {"$xcom": "x", "other": 1}], "b": "s"}
    assert bootstrap.resolve_xcoms(value, {"x": 9}) == {
        "a": [9, {"$xcom": "x", "other": 1}],
        "b": "s",
    }
    with pytest.raises(bootstrap.BootstrapError, match="no XCom from upstream task 'y'"):
        bootstrap.resolve_xcoms([{"$xcom": "y"}], {})


def _available() -> dict[str, Any]:
    return {key: f"<{key}>" for key in bootstrap.CONTEXT_KEYS}


def test_context_kwargs_follow_airflows_rules() -> None:
    def named(x: int, ds: str, params: dict[str, Any] | None = None) -> None: ...

    def var(x: int, ds: str = "", **context: Any) -> None: ...

    def positional_only(ds: str, /) -> None: ...

    available = _available()
    assert bootstrap.context_kwargs(named, [1], {}, available) == {
        "ds": "<ds>",
        "params": "<params>",
    }
    assert bootstrap.context_kwargs(named, [1, "mine"], {}, available) == {"params": "<params>"}
    assert bootstrap.context_kwargs(named, [1], {"params": {}}, available) == {"ds": "<ds>"}
    everything = bootstrap.context_kwargs(var, [1, "mine"], {}, available)
    assert set(everything) == set(bootstrap.CONTEXT_KEYS) - {"ds"}
    assert bootstrap.context_kwargs(positional_only, ["x"], {}, available) == {}
    with pytest.raises(TypeError, match="the task's arguments do not fit"):
        bootstrap.context_kwargs(named, [1, 2, 3, 4], {}, available)


def test_load_callable_unwraps_a_taskflow_function(monkeypatch: pytest.MonkeyPatch) -> None:
    from isolate.sdk import task

    def plain(a: int) -> int:
        return a

    module = types.ModuleType("bootstrap_probe_module")
    module.wrapped = task(plain)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bootstrap_probe_module", module)
    assert bootstrap.load_callable("bootstrap_probe_module:wrapped") is plain
    with pytest.raises(bootstrap.BootstrapError, match="expected 'module.path:attribute'"):
        bootstrap.load_callable("no_colon")


def test_results_are_json_within_the_limit() -> None:
    assert bootstrap.encode_xcom([1, "a"], None) == b'{"xcom":[1,"a"]}'
    with pytest.raises(TypeError, match="not JSON-serializable"):
        bootstrap.encode_xcom(float("nan"), None)
    with pytest.raises(TypeError, match="not JSON-serializable"):
        bootstrap.encode_xcom(object(), None)
    with pytest.raises(ValueError, match="over the XCom limit of 10 bytes"):
        bootstrap.encode_xcom("x" * 20, 10)


def test_logical_date_reaches_the_task_as_a_datetime() -> None:
    context = make_context(
        dag_id="d", task_id="t", run_id="r", logical_date=LOGICAL_DATE, try_number=1
    )
    assert bootstrap.task_context(context)["logical_date"] == LOGICAL_DATE


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, -2.5, 1e300, "é\u2028\U0001f600", None, True, False, {"": {}}]},
        [],
        "text",
        2**70,
        {"nested": [[[[{"k": "v"}]]]]},
    ],
)
def test_json_through_the_c_accelerator_matches_the_json_module(value: Any) -> None:
    text = bootstrap.json_dumps(value)
    assert text == json.dumps(value, allow_nan=False, separators=(",", ":"))
    assert bootstrap.json_loads(text.encode()) == json.loads(text)
    assert bootstrap.json_loads(f" \n{text}\t".encode()) == value


@pytest.mark.parametrize(
    "text", ["", "{", '{"a": 1} x', "[1,]", "NaN", '{"a": Infinity}', "[1] [2]", "'x'"]
)
def test_json_loads_refuses_what_json_refuses_and_nan(text: str) -> None:
    with pytest.raises(ValueError):
        bootstrap.json_loads(text.encode())


def test_json_dumps_refuses_nan_objects_and_cycles() -> None:
    loop: list[Any] = []
    loop.append(loop)
    for bad, error in ((float("nan"), ValueError), (object(), TypeError), (loop, ValueError)):
        with pytest.raises(error):
            bootstrap.json_dumps({"xcom": bad})
