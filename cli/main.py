"""The ``isolate`` command: a click group whose only logic is turning errors into exit codes."""

from __future__ import annotations

import sys
from typing import Any

import click

from cli import admin, audit, dags, push
from isolate.errors import IsolateError


class IsolateGroup(click.Group):
    """Expected errors become one line on stderr and the error's exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IsolateError as exc:
            click.echo(f"isolate: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=IsolateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="isolate-dags", prog_name="isolate")
def isolate() -> None:
    """Run many teams' DAGs on one node: versioned DAGs, per-version envs, mapped OS users.

    \b
    Authors:  isolate push DAG_FOLDER -m "why"      isolate dags history DAG_ID
    Admins:   isolate init    isolate db upgrade    isolate audit

    Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 invalid DAG or bundle,
    5 configuration, 6 database.
    """


isolate.add_command(admin.init)
isolate.add_command(admin.db)
isolate.add_command(push.push)
isolate.add_command(dags.dags)
isolate.add_command(audit.audit)


def main() -> None:
    isolate(prog_name="isolate")
