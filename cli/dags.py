"""``isolate dags ...``: list, show, history, diff, pause and unpause pushed DAGs."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import click

from cli.completion import complete_dag_ids
from cli.options import home_option, json_option
from cli.output import print_json, print_table, printable, short_hash, timestamp, write_output
from isolate.config import current_user, load_config
from isolate.errors import IsolateError, UsageError
from isolate.services import documents
from isolate.services.home import open_store

if TYPE_CHECKING:
    from isolate.diff import SpecDiff
    from isolate.model import Lockfile, TaskSpec
    from isolate.store import Store

# A graph of a few hundred tasks renders in well under a second; this only stops a hang.
SVG_TIMEOUT = 60


def _store(home: str | None) -> Store:
    return open_store(load_config(home))


@click.group()
def dags() -> None:
    """Inspect and control pushed DAGs."""


@dags.command("list")
@home_option
@json_option
def list_(home: str | None, as_json: bool) -> None:
    """List every DAG with its latest version.

    \b
    Example:
      isolate dags list --json
    """
    from isolate.services.listing import dag_summaries

    summaries = dag_summaries(load_config(home))
    if as_json:
        print_json([documents.dag_summary(s) for s in summaries])
        return
    print_table(
        ["DAG_ID", "VERSION", "PAUSED", "PUSHED_BY", "PUSHED_AT"],
        [[s.dag_id, s.latest_version, s.is_paused, s.pushed_by, s.pushed_at] for s in summaries],
    )


def _target(task: TaskSpec) -> str:
    if task.kind == "python":
        return str(task.callable)
    return task.command if isinstance(task.command, str) else json.dumps(list(task.command or ()))


SHOW_FORMATS = ("text", "json", "dot", "svg")


@dags.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@click.option("--version", "version", type=int, metavar="N", help="A version (default: latest).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(SHOW_FORMATS),
    default=None,
    help="text (default), json, dot (the task graph in Graphviz DOT) or svg (rendered by "
    "Graphviz's dot, which must be installed).",
)
@home_option
@json_option
def show(
    dag_id: str, version: int | None, fmt: str | None, home: str | None, as_json: bool
) -> None:
    """Show one version of a DAG: its settings, environment and tasks, or its task graph.

    \b
    Example:
      isolate dags show etl --version 3
      isolate dags show etl --format dot > etl.dot
      isolate dags show etl --format svg > etl.svg
    """
    if as_json and fmt not in (None, "json"):
        raise UsageError(f"--json and --format {fmt} disagree: give one of them")
    fmt = "json" if as_json else fmt or "text"
    # Before touching the store: a missing Graphviz is the first thing to hear about.
    dot_program = _graphviz_dot() if fmt == "svg" else ""
    with _store(home) as store:
        from isolate.services.catalog import stored_version  # the spec format: not for `dags list`

        found = stored_version(store, dag_id, version)
        paused = store.get_dag(dag_id).is_paused
    record, spec = found.record, found.spec
    if fmt == "json":
        print_json({**documents.version(record), "paused": paused, "spec": spec.to_document()})
        return
    if fmt in ("dot", "svg"):
        from isolate.graph import to_dot

        text = to_dot(spec, record.version)
        if fmt == "dot":
            click.echo(text, nl=False)
        else:
            write_output(_render_svg(dot_program, text))
        return
    retry = spec.defaults.retry
    fields = [
        ("dag", f"{spec.dag_id} v{record.version}" + ("  (paused)" if paused else "")),
        ("spec", record.spec_hash),
        ("pushed", f"{timestamp(record.pushed_at)} by {record.pushed_by}"),
        ("message", record.message or "-"),
        ("file", spec.fileloc or "-"),
        ("schedule", f"{spec.schedule or 'none'} ({spec.timezone})"),
        ("start/end", f"{spec.start_date or '-'} / {spec.end_date or '-'}"),
        (
            "runs",
            f"catchup={'yes' if spec.catchup else 'no'} max_active_runs={spec.max_active_runs} "
            f"max_active_tasks={spec.max_active_tasks}",
        ),
        (
            "retries",
            f"{retry.retries} every {retry.retry_delay}s"
            + (" (exponential)" if retry.retry_exponential_backoff else ""),
        ),
        ("tags", ", ".join(spec.tags) or "-"),
        ("lockfile", _lock_cell(spec.lockfile)),
        ("bundle", spec.bundle_hash),
    ]
    for name, value in fields:
        click.echo(f"{name + ':':<11}{printable(value)}")
    click.echo()
    print_table(
        ["TASK_ID", "KIND", "UPSTREAM", "TRIGGER_RULE", "RETRIES", "RUNS"],
        [
            [
                t.task_id,
                t.kind,
                ",".join(t.upstream) or "-",
                t.trigger_rule,
                t.effective_retry(spec.defaults).retries,
                _target(t),
            ]
            for t in spec.tasks
        ],
    )


def _lock_cell(lockfile: Lockfile) -> str:
    """The lockfile and its hash, or that the env has no packages (a folder with nothing to
    lock needs no lockfile: its lock is empty)."""
    lines = (line.strip() for line in lockfile.text.splitlines())
    if not any(line and not line.startswith("#") for line in lines):
        return "- (no packages: the env is the node's interpreter alone)"
    return f"{lockfile.path} {lockfile.lock_hash}"


@dags.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@home_option
@json_option
def history(dag_id: str, home: str | None, as_json: bool) -> None:
    """List every version of a DAG, oldest first: who pushed what, when and why.

    \b
    Example:
      isolate dags history etl
    """
    with _store(home) as store:
        store.get_dag(dag_id)
        versions = store.list_versions(dag_id)
    if as_json:
        print_json([documents.version(v) for v in versions])
        return
    print_table(
        ["VERSION", "PUSHED_AT", "PUSHED_BY", "SPEC_HASH", "MESSAGE"],
        [
            [v.version, v.pushed_at, v.pushed_by, short_hash(v.spec_hash), v.message]
            for v in versions
        ],
    )


@dags.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@click.argument("old", type=int)
@click.argument("new", type=int)
@home_option
@json_option
def diff(dag_id: str, old: int, new: int, home: str | None, as_json: bool) -> None:
    """Show what changed from version OLD to version NEW of a DAG.

    \b
    Example:
      isolate dags diff etl 3 4
    """
    with _store(home) as store:
        from isolate.services.catalog import diff_versions

        changes = diff_versions(store, dag_id, old, new)
    if as_json:
        print_json({"old": old, "new": new, **changes.to_json()})
        return
    _print_diff(changes, old, new)


def _print_diff(changes: SpecDiff, old: int, new: int) -> None:
    click.echo(f"{changes.dag_id}: v{old} -> v{new}")
    if changes.empty:
        click.echo("no changes")
        return
    for name, (a, b) in changes.dag_fields.items():
        click.echo(f"  changed  {name}: {_show(a)} -> {_show(b)}")
    for task_id in changes.tasks_added:
        click.echo(f"  + task   {task_id}")
    for task_id in changes.tasks_removed:
        click.echo(f"  - task   {task_id}")
    for task_id, fields in changes.tasks_changed.items():
        for name, (a, b) in fields.items():
            click.echo(f"  ~ task   {task_id}: {name}: {_show(a)} -> {_show(b)}")
    for up, down in changes.edges_added:
        click.echo(f"  + edge   {up} >> {down}")
    for up, down in changes.edges_removed:
        click.echo(f"  - edge   {up} >> {down}")
    if changes.lock_hash:
        a, b = changes.lock_hash
        click.echo(f"  ~ env    lock {short_hash(a)} -> {short_hash(b)}")
    if changes.bundle:
        a, b = changes.bundle
        click.echo(f"  ~ bundle {short_hash(a)} -> {short_hash(b)}")


def _graphviz_dot() -> str:
    found = shutil.which("dot")
    if found is None:
        raise IsolateError(
            "--format svg needs Graphviz's `dot` command: install graphviz "
            "(e.g. apt-get install graphviz), or use --format dot and render it elsewhere"
        )
    return found


def _render_svg(program: str, dot_text: str) -> bytes:
    """``dot_text`` rendered to SVG by Graphviz (its only flag we use: ``-Tsvg``)."""
    try:
        done = subprocess.run(
            [program, "-Tsvg"],
            input=dot_text.encode(),
            capture_output=True,
            timeout=SVG_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise IsolateError(f"Graphviz's dot did not finish in {SVG_TIMEOUT}s") from None
    except OSError as exc:
        raise IsolateError(f"cannot run Graphviz's dot ({program}): {exc.strerror}") from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        detail = printable(reason[0]) if reason else f"exit status {done.returncode}"
        raise IsolateError(f"Graphviz's dot failed: {detail}")
    return done.stdout


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _pause_command(paused: bool) -> click.Command:
    verb = "pause" if paused else "unpause"

    @click.command(verb)
    @click.argument("dag_id", shell_complete=complete_dag_ids)
    @home_option
    def command(dag_id: str, home: str | None) -> None:
        with _store(home) as store:
            changed = store.set_paused(dag_id, paused, actor=current_user())
        state = "paused" if paused else "unpaused"
        click.echo(f"{dag_id} {state}" if changed else f"{dag_id} was already {state}")

    command.help = (
        f"{verb.capitalize()} a DAG: "
        + ("no new runs are created for it" if paused else "runs are created again")
        + f".\n\n\b\nExample:\n  isolate dags {verb} etl"
    )
    return command


dags.add_command(_pause_command(True))
dags.add_command(_pause_command(False))
