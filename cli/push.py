"""``isolate push``: serialize a DAG folder here and store a new version of each changed DAG."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from cli.options import home_option, json_option
from cli.output import print_json, print_table, short_hash
from cli.progress import ticking
from isolate.config import Config, author_config, current_user, is_admin
from isolate.services.dagfile import FolderSnapshot, load_folder
from isolate.services.home import open_store
from isolate.services.push import PushResult, commit_snapshot
from isolate.services.pushclient import push_via_server, socket_path
from localexec.timetable import count_due

# Seconds a step of loading the folder runs before its progress line appears (on a terminal).
STEP_AFTER = 1.0


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("-m", "--message", metavar="TEXT", help="Why this version exists (kept in history).")
@click.option(
    "--build/--no-build",
    default=None,
    help="Build each version's env before storing it (default: the build_on_push setting).",
)
@home_option
@json_option
def push(
    path: Path, message: str | None, build: bool | None, home: str | None, as_json: bool
) -> None:
    """Push the DAGs of PATH (a DAG folder, or one DAG file in its folder).

    The folder is bundled, each DAG is serialized in this process and validated, its lock is
    checked and its env built, and a new immutable version is stored for every DAG that
    changed. Nothing is stored if anything in the folder is invalid or an env cannot be built.
    Admins write the store directly; other authors push through the scheduler's socket,
    which checks the tenant mapping (they need no access to the database).

    \b
    Example:
      isolate push dags/etl -m "load into the new warehouse"
    """
    config = author_config(home)
    # Bundling, importing and validating are quick for most folders: a line appears only
    # for a step that takes a while (a folder of many files, a slow DAG file).
    snapshot = load_folder(
        path, settings=config.settings, step=lambda label: ticking(label, after=STEP_AFTER)
    )
    if is_admin(config):
        with open_store(config) as store:
            results = commit_snapshot(
                store,
                snapshot,
                config=config,
                pushed_by=current_user(),
                message=message,
                build=build,
                building=lambda dag_id, key: ticking(
                    f"building env {short_hash(key)} for {dag_id}"
                ),
            )
    else:
        with ticking("pushing through the scheduler", after=STEP_AFTER):
            results = push_via_server(socket_path(config), snapshot, message)
    catchup = catchup_runs(config, snapshot, results)
    for dag_id, count in catchup.items():
        click.echo(f"isolate push: {dag_id}: {describe_catchup(config, count)}", err=True)
    if as_json:
        print_json(
            [
                {
                    "dag_id": r.dag_id,
                    "version": r.version,
                    "status": "new" if r.created else "unchanged",
                    "spec_hash": r.spec_hash,
                    "tasks": r.tasks,
                    "env_key": r.env_key,
                    "env_built": r.env_built,
                    "catchup_runs": catchup.get(r.dag_id),
                }
                for r in results
            ]
        )
        return
    print_table(
        ["DAG_ID", "VERSION", "STATUS", "TASKS", "SPEC_HASH", "ENV"],
        [
            [
                r.dag_id,
                r.version,
                "new" if r.created else "unchanged",
                r.tasks,
                r.spec_hash,
                _env_cell(r.env_key, r.env_built),
            ]
            for r in results
        ],
    )


def _env_cell(key: str | None, built: bool) -> str:
    if key is None:
        return "not built"
    return f"{short_hash(key)} ({'built' if built else 'cached'})"


def catchup_runs(
    config: Config, snapshot: FolderSnapshot, results: list[PushResult]
) -> dict[str, int]:
    """For each DAG this push created with ``catchup``, how many runs its due intervals
    make now (counted to ``max_catchup_runs`` + 1 at most): an author should know before
    a start_date years back fills the node."""
    cap = config.settings.max_catchup_runs
    specs = {dag.spec.dag_id: dag.spec for dag in snapshot.dags}
    now = datetime.now(UTC)
    found: dict[str, int] = {}
    for result in results:
        spec = specs.get(result.dag_id)
        if result.created and result.version == 1 and spec is not None and spec.catchup:
            count = count_due(spec, now=now, cap=cap)
            if count > 1:
                found[result.dag_id] = count
    return found


def describe_catchup(config: Config, count: int) -> str:
    cap = config.settings.max_catchup_runs
    if count > cap:
        return (
            f"more than {cap} intervals are due since its start_date: catchup runs only the "
            f"newest {cap} (setting max_catchup_runs)"
        )
    return f"catchup will create {count} runs for the intervals due since its start_date"
