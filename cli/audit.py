"""``isolate audit``: read the append-only audit log (pushes, pauses, denials...)."""

from __future__ import annotations

import json

import click

from cli.options import home_option, json_option
from cli.output import print_json, print_table
from isolate.config import load_config
from isolate.services import documents
from isolate.services.home import open_store


@click.command()
@click.option("--target", metavar="DAG_ID", help="Only records about this DAG.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@home_option
@json_option
def audit(target: str | None, limit: int, home: str | None, as_json: bool) -> None:
    """Show the latest audit records, newest first: who did what to which DAG, and the outcome.

    \b
    Example:
      isolate audit --target etl --limit 20
    """
    with open_store(load_config(home)) as store:
        records = store.list_audit(target=target, limit=limit)
    if as_json:
        print_json([documents.audit_event(r) for r in records])
        return
    print_table(
        ["AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAILS"],
        [
            [r.at, r.actor, r.action, r.target, r.outcome, json.dumps(r.details, sort_keys=True)]
            for r in records
        ],
    )
