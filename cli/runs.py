"""``isolate scheduler``, ``isolate trigger``, ``isolate runs ...`` and ``isolate tasks logs``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli import daemonlog
from cli.completion import complete_dag_ids
from cli.options import home_option, json_option
from cli.output import print_json, print_table, printable, short_hash, write_output
from isolate.config import author_config, current_user, load_config
from isolate.errors import NotFoundError, UsageError
from isolate.services import documents
from isolate.services.home import open_store
from isolate.store import RunRecord

# What only some commands need is imported by them: the rest of `isolate runs ...` and
# completing it load neither the scheduler nor the spec format.
if TYPE_CHECKING:
    from isolate.graph import RunGrid
    from isolate.store import Store

log = logging.getLogger("isolate.scheduler")

# Which DAG a run id belongs to, where run ids of two DAGs could be equal.
run_dag_option = click.option(
    "--dag",
    "dag_id",
    metavar="DAG_ID",
    shell_complete=complete_dag_ids,
    help="The run's DAG, if its id is ambiguous.",
)


@click.command()
@click.option(
    "--parallelism",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Attempts running at once.",
)
@click.option("--until-idle", is_flag=True, help="Exit once nothing is runnable or running.")
@home_option
def scheduler(parallelism: int, until_idle: bool, home: str | None) -> None:
    """Run the scheduler: create runs, start tasks in their envs, record outcomes, and serve
    pushes from authors on <home>/run/push.sock.

    SIGTERM or SIGINT stop it after the current tick; running attempts are settled by the
    next scheduler's start.

    \b
    Example:
      isolate scheduler --parallelism 8
    """
    from localexec.service import serve

    config = load_config(home)
    daemonlog.configure()
    serve(config, parallelism=parallelism, until_idle=until_idle)


@click.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@click.option("--conf", metavar="JSON", help='Run configuration, e.g. \'{"params": {"x": 1}}\'.')
@click.option("--version", type=int, metavar="N", help="Pin this version (default: latest).")
@home_option
@json_option
def trigger(
    dag_id: str, conf: str | None, version: int | None, home: str | None, as_json: bool
) -> None:
    """Queue a manual run of a DAG, pinned to its latest (or the given) version.

    \b
    Example:
      isolate trigger etl --conf '{"params": {"region": "us"}}'
    """
    try:
        parsed = json.loads(conf) if conf else None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--conf is not valid JSON: {exc}") from None
    with open_store(load_config(home)) as store:
        from isolate.services.triggering import trigger as trigger_run

        run = trigger_run(store, dag_id, actor=current_user(), conf=parsed, version=version)
    if as_json:
        print_json(documents.run(run))
    else:
        click.echo(f"queued {run.dag_id} run {run.run_id} (version {run.version})")


@click.group()
def runs() -> None:
    """DAG runs: list them, show one task by task, or a grid of recent runs by task."""


@runs.command("list")
@click.argument("dag_id", required=False, shell_complete=complete_dag_ids)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Show only this many, the most recent (by logical date). Default: all.",
)
@home_option
@json_option
def list_(dag_id: str | None, limit: int | None, home: str | None, as_json: bool) -> None:
    """List runs, newest first: of every DAG, or of DAG_ID (exit 3 if there is no such DAG).

    \b
    Example:
      isolate runs list etl --limit 20 --json
    """
    with open_store(load_config(home)) as store:
        if dag_id is not None:
            store.get_dag(dag_id)  # NotFoundError: an unknown DAG is not an empty list
        found = store.runs.list(dag_id, limit=limit)
    if as_json:
        print_json([documents.run(r) for r in found])
        return
    print_table(
        ["DAG_ID", "RUN_ID", "VERSION", "STATE", "STARTED", "ENDED"],
        [[r.dag_id, r.run_id, r.version, r.state.value, r.started_at, r.ended_at] for r in found],
    )


def _find_run(store: Store, run_id: str, dag_id: str | None) -> RunRecord:
    matches = store.runs.find(run_id, dag_id)
    if not matches:
        raise NotFoundError(f"no run {run_id!r}")
    if len(matches) > 1:
        raise UsageError(f"run id {run_id!r} exists in several DAGs: add --dag")
    return matches[0]


@runs.command()
@click.argument("run_id")
@run_dag_option
@home_option
@json_option
def show(run_id: str, dag_id: str | None, home: str | None, as_json: bool) -> None:
    """Show a run's tasks: state, try, duration, user, env, outcome.

    \b
    Example:
      isolate runs show manual__2024-01-01T00:00:00.000000+00:00
    """
    with open_store(load_config(home)) as store:
        run = _find_run(store, run_id, dag_id)
        tasks = store.tasks.list(run.dag_id, run.run_id)
    rows = [documents.task_instance(ti) for ti in tasks]
    if as_json:
        print_json({**documents.run(run), "tasks": rows})
        return
    click.echo(f"{run.dag_id} {run.run_id}: {run.state.value} (version {run.version})")
    print_table(
        ["TASK_ID", "STATE", "TRY", "DURATION", "USER", "ENV", "OUTCOME"],
        [
            [
                r["task_id"],
                r["state"],
                r["try_number"],
                "-" if r["duration"] is None else f"{r['duration']:.1f}s",
                r["run_as"],
                short_hash(r["env_key"]),
                r["outcome"],
            ]
            for r in rows
        ],
    )


# One character per state, the same for runs and tasks; colours only where click keeps them
# (a terminal), so a pipe or a log gets plain letters.
GRID_SYMBOLS: dict[str, tuple[str, str | None]] = {
    "success": ("S", "green"),
    "failed": ("F", "red"),
    "upstream_failed": ("U", "yellow"),
    "skipped": ("K", "magenta"),
    "up_for_retry": ("Y", "yellow"),
    "running": ("R", "cyan"),
    "queued": ("Q", "blue"),
    "scheduled": ("W", "blue"),
    "none": (".", None),
}


@runs.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=25,
    show_default=True,
    help="How many of the most recent runs (by logical date) to show.",
)
@home_option
@json_option
def grid(dag_id: str, limit: int, home: str | None, as_json: bool) -> None:
    """Show a DAG's recent runs (columns, oldest on the left) by task (rows), one symbol
    per task state.

    Runs keep the version they started with: a task that only older versions have keeps
    its row (marked *), blank for runs whose version lacks it.

    \b
    Example:
      isolate runs grid etl --limit 10
    """
    with open_store(load_config(home)) as store:
        from isolate.services.catalog import stored_version

        latest = stored_version(store, dag_id)
        recent = store.runs.list(dag_id, limit=limit)[::-1]
        specs = {v: stored_version(store, dag_id, v).spec for v in {run.version for run in recent}}
        states = {
            run.run_id: {ti.task_id: ti.state for ti in store.tasks.list(dag_id, run.run_id)}
            for run in recent
        }
    from isolate.graph import run_grid

    table = run_grid(latest.spec, recent, specs, states)
    if as_json:
        print_json(
            {
                "dag_id": table.dag_id,
                "runs": [documents.run(run) for run in table.runs],  # as `runs list` shows them
                "tasks": [
                    {
                        "task_id": row.task_id,
                        "in_latest": row.in_latest,
                        "cells": [None if c is None else c.value for c in row.cells],
                    }
                    for row in table.rows
                ],
            }
        )
        return
    _print_grid(table, latest.record.version)


def _print_grid(table: RunGrid, latest_version: int) -> None:
    if not table.runs:
        click.echo(f"{table.dag_id}: no runs yet")
        return
    click.echo(f"{table.dag_id}: {len(table.runs)} most recent runs, oldest on the left")
    width = len(str(len(table.runs)))
    names = [printable(row.task_id) + ("" if row.in_latest else "*") for row in table.rows]
    first = max(len("TASK"), len("(run)"), *(len(n) for n in names))
    numbers = " ".join(str(i).rjust(width) for i in range(1, len(table.runs) + 1))
    click.echo(f"{'TASK'.ljust(first)}  {numbers}")
    run_states: list[str | None] = [run.state.value for run in table.runs]
    click.echo(f"{'(run)'.ljust(first)}  {_grid_cells(run_states, width)}")
    for name, row in zip(names, table.rows, strict=True):
        cells = [None if c is None else c.value for c in row.cells]
        click.echo(f"{name.ljust(first)}  {_grid_cells(cells, width)}".rstrip())
    click.echo()
    if not all(row.in_latest for row in table.rows):
        click.echo(f"* not in the latest version (v{latest_version})")
    legend = [f"{symbol} {state}" for state, (symbol, _) in GRID_SYMBOLS.items()]
    legend.append("(blank) not in the run's version")
    click.echo("  ".join(legend[:5]))
    click.echo("  ".join(legend[5:]))
    click.echo()
    print_table(
        ["#", "RUN_ID", "VERSION", "STATE", "LOGICAL_DATE"],
        [
            [i, run.run_id, run.version, run.state.value, run.logical_date]
            for i, run in enumerate(table.runs, start=1)
        ],
    )


def _grid_cells(states: list[str | None], width: int) -> str:
    cells = []
    for state in states:
        if state is None:
            cells.append(" " * width)
            continue
        # A state this version of the grid does not know still gets a cell, not an error.
        symbol, colour = GRID_SYMBOLS.get(state, ("?", None))
        cells.append(click.style(symbol.rjust(width), fg=colour) if colour else symbol.rjust(width))
    return " ".join(cells)


@click.group()
def tasks() -> None:
    """Task instances of runs."""


@tasks.command()
@click.argument("run_id")
@click.argument("task_id")
@click.option("--try", "try_number", type=click.IntRange(min=1), help="A try (default: latest).")
@run_dag_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the try runs.")
@home_option
def logs(
    run_id: str,
    task_id: str,
    try_number: int | None,
    dag_id: str | None,
    follow: bool,
    home: str | None,
) -> None:
    """Print the log of one try of a task.

    \b
    Example:
      isolate tasks logs scheduled__2024-01-01T00:00:00+00:00 load --try 2
    """
    from localexec.trylogs import copy_log, open_try_log, still_writing

    config = load_config(home)
    with open_store(config) as store:
        run = _find_run(store, run_id, dag_id)
        handle, number = open_try_log(config, store, run, task_id, try_number)
        with handle:
            copy_log(
                handle,
                write_output,
                writing=(lambda: still_writing(store, run, task_id, number)) if follow else None,
            )


@tasks.command()
@click.argument("run_id")
@click.argument("task_id")
@click.option("--downstream", is_flag=True, help="Also clear every task downstream of it.")
@run_dag_option
@home_option
def clear(
    run_id: str, task_id: str, downstream: bool, dag_id: str | None, home: str | None
) -> None:
    """Clear a finished task so the scheduler runs it again (its run is queued again).

    \b
    Example:
      isolate tasks clear manual__2024-01-01T00:00:00.000000+00:00 load --downstream
    """
    with open_store(load_config(home)) as store:
        run = _find_run(store, run_id, dag_id)
        from isolate.services.clearing import clear_tasks

        cleared = clear_tasks(store, run, task_id, downstream=downstream, actor=current_user())
    click.echo(f"cleared {', '.join(cleared)} of {run.dag_id} {run.run_id}")


@click.command("test")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("task_id")
@click.option("--dag", "dag_id", metavar="DAG_ID", help="The DAG, if several have TASK_ID.")
@home_option
def test_task(path: Path, task_id: str, dag_id: str | None, home: str | None) -> None:
    """Run one task of a local DAG folder now, in its env, without the scheduler or the store.

    Prints the task's log; exits 1 if the task failed. Upstream XComs are absent.

    \b
    Example:
      isolate test dags/etl extract
    """
    from localexec.adhoc import run_task

    # An author may not read the admin's isolate.toml: the defaults and ISOLATE_* still apply.
    result = run_task(author_config(home), path, task_id, dag_id=dag_id)
    write_output(result.log.encode("utf-8", "replace"))
    if result.outcome.has_xcom:
        click.echo(f"xcom: {json.dumps(result.outcome.xcom, sort_keys=True)}")
    if not result.outcome.ok:
        sys.exit(1)
