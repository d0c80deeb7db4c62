"""Rendering of templated task fields in a sandboxed Jinja environment.

Templates are DAG-author input, so they are rendered with
``jinja2.sandbox.ImmutableSandboxedEnvironment`` (no attribute access to internals, no
mutation of the context) and ``StrictUndefined`` (a typo is an error, not an empty string),
and only in the forked child after the privilege drop, never with the supervisor's rights
(issue 4 §4, issue 5 §3).

Rendered fields: string leaves of a python task's args/kwargs (XCom references are left for
the bootstrap), env values, and a command's argv items or shell string.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from isolate.errors import IsolateError
from isolate.model import is_xcom_ref

_MARKERS = ("{{", "{%", "{#")


class TemplateRenderError(IsolateError):
    """A templated field does not render; the message names the field."""


def template_context(context: Mapping[str, Any], xcoms: Mapping[str, Any]) -> dict[str, Any]:
    """The names a template sees: the task context, ``logical_date`` as a datetime, ``xcom()``."""

    def xcom(task_id: str) -> Any:
        if task_id not in xcoms:
            known = ", ".join(sorted(xcoms)) or "none"
            raise TemplateRenderError(
                f"xcom({task_id!r}): no XCom from that task; upstream XComs available: {known}"
            )
        return xcoms[task_id]

    names: dict[str, Any] = {
        key: context.get(key)
        for key in (
            "dag_id",
            "task_id",
            "run_id",
            "ds",
            "ds_nodash",
            "ts",
            "ts_nodash",
            "try_number",
            "params",
            "conf",
        )
    }
    logical_date = context.get("logical_date")
    names["logical_date"] = (
        datetime.datetime.fromisoformat(logical_date)
        if isinstance(logical_date, str)
        else logical_date
    )
    names["xcom"] = xcom
    return names


class Renderer:
    """Renders strings and JSON-like structures; errors name the field."""

    def __init__(self, names: Mapping[str, Any]) -> None:
        self.names = dict(names)
        self._environment: ImmutableSandboxedEnvironment | None = None

    @property
    def environment(self) -> ImmutableSandboxedEnvironment:
        """Made on the first template: most fields hold none, and each task's child would
        otherwise build a sandbox it never uses."""
        if self._environment is None:
            self._environment = ImmutableSandboxedEnvironment(
                undefined=jinja2.StrictUndefined,
                autoescape=False,  # argv, env values and kwargs, never HTML
                keep_trailing_newline=True,
            )
        return self._environment

    def render_string(self, text: str, field: str) -> str:
        if not any(marker in text for marker in _MARKERS):
            return text  # the common case, and byte-exact: Jinja would not touch it anyway
        try:
            return self.environment.from_string(text).render(self.names)
        except TemplateRenderError as exc:
            raise TemplateRenderError(f"{field}: {exc}") from None
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(f"{field}: template error: {_one_line(exc)}") from None
        except Exception as exc:  # a filter or method raising: still the author's template
            raise TemplateRenderError(
                f"{field}: template error: {type(exc).__name__}: {_one_line(exc)}"
            ) from None

    def render(self, value: Any, field: str) -> Any:
        """``value`` with every string leaf rendered; ``{"$xcom": id}`` references kept."""
        if isinstance(value, str):
            return self.render_string(value, field)
        if is_xcom_ref(value):
            return value
        if isinstance(value, Mapping):
            return {key: self.render(item, f"{field}.{key}") for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.render(item, f"{field}[{i}]") for i, item in enumerate(value)]
        return value

    def render_env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {name: self.render_string(value, f"env.{name}") for name, value in env.items()}

    def render_command(self, command: str | tuple[str, ...] | list[str]) -> str | list[str]:
        if isinstance(command, str):
            return self.render_string(command, "command")
        return [self.render_string(item, f"command[{i}]") for i, item in enumerate(command)]


def has_template(value: Any) -> bool:
    """Whether any string leaf of ``value`` holds template syntax (what the renderer renders)."""
    if isinstance(value, str):
        return any(marker in value for marker in _MARKERS)
    if isinstance(value, Mapping):
        return any(has_template(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(has_template(item) for item in value)
    return False


def renderer_for(context: Mapping[str, Any], xcoms: Mapping[str, Any]) -> Renderer:
    return Renderer(template_context(context, xcoms))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
