"""The ``isolate`` command: a click group whose only logic is turning errors into exit codes."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import click
from click.shell_completion import CompletionItem

from envcache.errors import EnvCacheError
from isolate.errors import IsolateError

# Every command, in the order of `isolate --help`: where it is defined and its one-line help
# (tests/test_startup.py checks each against the command itself). A command's module is
# imported only when that command runs, is completed or shows its own help: `--help`,
# `--version` and completing a command name import neither the store nor SQLAlchemy.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "audit": (
        "cli.audit",
        "audit",
        "Show the latest audit records, newest first: who did what to which DAG, and the outcome.",
    ),
    "completion": (
        "cli.completion",
        "completion",
        "Print the completion script for SHELL (bash, zsh or fish).",
    ),
    "dags": ("cli.dags", "dags", "Inspect and control pushed DAGs."),
    "db": ("cli.admin", "db", "Database schema commands."),
    "demo": (
        "cli.demo",
        "demo",
        "Run two teams' DAGs that need conflicting versions of one library, side by side.",
    ),
    "doctor": (
        "cli.doctor",
        "doctor",
        "Check the node without changing it; exit 1 if any check fails.",
    ),
    "env": (
        "cli.env",
        "env",
        "The node's virtualenvs: one per distinct lock, shared by every version using it.",
    ),
    "gc": (
        "cli.gc",
        "gc",
        "Remove envs that no DAG's recent versions and no pin need, then prune shared caches.",
    ),
    "init": (
        "cli.admin",
        "init",
        "Create an isolate home: directories, config file and database schema.",
    ),
    "lock": (
        "cli.lock",
        "lock",
        "Resolve FOLDER's requirements.in (or pylock.toml, or the requirements its DAGs "
        "declare) into requirements.txt with hashes.",
    ),
    "push": (
        "cli.push",
        "push",
        "Push the DAGs of PATH (a DAG folder, or one DAG file in its folder).",
    ),
    "runs": (
        "cli.runs",
        "runs",
        "DAG runs: list them, show one task by task, or a grid of recent runs by task.",
    ),
    "scheduler": (
        "cli.runs",
        "scheduler",
        "Run the scheduler: create runs, start tasks in their envs, record outcomes, and "
        "serve pushes from authors on <home>/run/push.sock.",
    ),
    "tasks": ("cli.runs", "tasks", "Task instances of runs."),
    "tenants": (
        "cli.tenants",
        "tenants",
        "Inspect and validate the admin-only tenant mapping (who owns, pushes and runs "
        "which DAGs).",
    ),
    "test": (
        "cli.runs",
        "test_task",
        "Run one task of a local DAG folder now, in its env, without the scheduler or the store.",
    ),
    "trigger": (
        "cli.runs",
        "trigger",
        "Queue a manual run of a DAG, pinned to its latest (or the given) version.",
    ),
    "version": ("cli.main", "version", "Print isolate's version."),
}

# envcache stands alone (it cannot import isolate's errors): its errors get their own code.
ENV_EXIT_CODE = 7


class _LazyCommands(MutableMapping[str, click.Command]):
    """The group's commands by name, each module imported when its command is first asked
    for (``isolate.commands["dags"]`` works as for any click group)."""

    def __init__(self) -> None:
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, attribute, _ = COMMANDS[name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(COMMANDS.keys() | self._loaded.keys()))

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._loaded.keys())

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._loaded


class IsolateGroup(click.Group):
    """Expected errors become one line on stderr and the error's exit code, never a traceback.

    Its commands come from :data:`COMMANDS`, each module imported on first use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _LazyCommands()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """Command names from the table (no command's module is imported), then options."""
        items = [
            CompletionItem(name, help=help_text)
            for name, (_, _, help_text) in COMMANDS.items()
            if name.startswith(incomplete)
        ]
        return items + click.Command.shell_complete(self, ctx, incomplete)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table, without importing any command's module."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, _short(help_text, limit)) for name, (_, _, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))

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
    "7 environment (lock, interpreter, build), 8 push refused, 9 no push server. "
    "See docs/cli.md.",
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


@click.command()
def version() -> None:
    """Print isolate's version.

    \b
    Example:
      isolate version
    """
    click.echo(f"isolate {_version()}")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("isolate-dags")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _short(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a word, as click shortens a command's help."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 3].rsplit(" ", 1)[0]
    return f"{cut}..."


def main() -> None:
    isolate(prog_name="isolate")
