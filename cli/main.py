"""The ``isolate`` command: a click group whose only logic is turning errors into exit codes."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from cli import admin, audit, completion, dags, demo, doctor, env, gc, lock, push, runs
from cli.tenants import tenants
from envcache.errors import EnvCacheError
from isolate.errors import IsolateError

# envcache stands alone (it cannot import isolate's errors): its errors get their own code.
ENV_EXIT_CODE = 7


class IsolateGroup(click.Group):
    """Expected errors become one line on stderr and the error's exit code, never a traceback."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's own errors (a usage error, a bad option value) as one line too, with where
        to look, instead of click's usage block."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"isolate: error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"isolate: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("isolate: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IsolateError as exc:
            click.echo(f"isolate: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except EnvCacheError as exc:
            click.echo(f"isolate: error: {exc}", err=True)
            sys.exit(ENV_EXIT_CODE)


@click.group(
    cls=IsolateGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 ok, 1 error or failed check, 2 usage, 3 not found, "
    "4 invalid DAG or bundle, 5 configuration, 6 database, "
    "7 environment (lock, interpreter, build), 8 push refused. See docs/cli.md.",
)
@click.version_option(package_name="isolate-dags", prog_name="isolate")
def isolate() -> None:
    """Run many teams' DAGs on one node: versioned DAGs, per-version envs, mapped OS users.

    \b
    Authors:  isolate lock DAG_FOLDER    isolate push DAG_FOLDER -m "why"
              isolate dags history DAG_ID
    Admins:   isolate init    isolate db upgrade    isolate audit
              isolate env list    isolate gc --dry-run    isolate tenants list
    """


isolate.add_command(admin.init)
isolate.add_command(admin.db)
isolate.add_command(push.push)
isolate.add_command(dags.dags)
isolate.add_command(audit.audit)
isolate.add_command(lock.lock)
isolate.add_command(env.env)
isolate.add_command(gc.gc)
isolate.add_command(doctor.doctor)
isolate.add_command(runs.scheduler)
isolate.add_command(runs.trigger)
isolate.add_command(runs.runs)
isolate.add_command(runs.tasks)
isolate.add_command(runs.test_task)
isolate.add_command(tenants)
isolate.add_command(demo.demo)
isolate.add_command(completion.completion)


def main() -> None:
    isolate(prog_name="isolate")
