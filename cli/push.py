"""``isolate push``: serialize a DAG folder here and store a new version of each changed DAG."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import home_option, json_option
from cli.output import print_json, print_table
from isolate.config import load_config
from isolate.home import open_store
from isolate.push import current_user, push_folder


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("-m", "--message", metavar="TEXT", help="Why this version exists (kept in history).")
@home_option
@json_option
def push(path: Path, message: str | None, home: str | None, as_json: bool) -> None:
    """Push the DAGs of PATH (a DAG folder, or one DAG file in its folder).

    The folder is bundled, each DAG is serialized in this process and validated, and a new
    immutable version is stored for every DAG that changed. Nothing is stored if anything
    in the folder is invalid.

    \b
    Example:
      isolate push dags/etl -m "load into the new warehouse"
    """
    config = load_config(home)
    with open_store(config) as store:
        results = push_folder(
            store, path, settings=config.settings, pushed_by=current_user(), message=message
        )
    if as_json:
        print_json(
            [
                {
                    "dag_id": r.dag_id,
                    "version": r.version,
                    "status": "new" if r.created else "unchanged",
                    "spec_hash": r.spec_hash,
                    "tasks": r.tasks,
                }
                for r in results
            ]
        )
        return
    print_table(
        ["DAG_ID", "VERSION", "STATUS", "TASKS", "SPEC_HASH"],
        [
            [r.dag_id, r.version, "new" if r.created else "unchanged", r.tasks, r.spec_hash]
            for r in results
        ],
    )
