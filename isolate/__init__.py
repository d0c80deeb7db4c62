"""isolate: run many teams' Airflow-style DAGs on one node, each in its own env and OS user.

This package's top level is the authoring SDK only, and must stay importable with the
standard library alone (see :mod:`isolate.sdk`).
"""

from __future__ import annotations

from isolate.sdk import DAG, CommandTask, PythonTask, XComArg, task

__all__ = ["DAG", "CommandTask", "PythonTask", "XComArg", "task"]
