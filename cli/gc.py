"""``isolate gc``: remove envs no recent DAG version, running task or pin needs."""

from __future__ import annotations

from datetime import timedelta

import click

from cli.options import home_option, json_option
from cli.output import print_json, short_hash
from isolate.config import current_user, load_config
from isolate.durations import parse_duration
from isolate.services.home import open_store
from isolate.units import format_size


@click.command()
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@click.option(
    "--keep-versions",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep the envs of each DAG's latest N versions (default: gc_keep_versions).",
)
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Only remove envs neither used nor built within DURATION (e.g. 7d, 12h).",
)
@home_option
@json_option
def gc(
    dry_run: bool,
    keep_versions: int | None,
    older_than: str | None,
    home: str | None,
    as_json: bool,
) -> None:
    """Remove envs that no DAG's recent versions and no pin need, then prune shared caches.

    An env in use by a running task is never removed (it is skipped and reported).

    \b
    Example:
      isolate gc --dry-run --keep-versions 2 --older-than 7d
    """
    config = load_config(home)
    keep = keep_versions or config.settings.gc_keep_versions
    age: timedelta | None = parse_duration(older_than) if older_than else None
    from isolate.services.gc import collect_envs

    with open_store(config) as store:
        done = collect_envs(
            config, store, keep_versions=keep, older_than=age, dry_run=dry_run, actor=current_user()
        )
    if as_json:
        print_json(done.to_json())
        return
    plan, report = done.plan, done.report
    for decision in plan.keep:
        click.echo(f"keep    {short_hash(decision.key)}  {decision.reason}")
    skipped = {d.key for d in report.in_use} if report else set()
    verb = "would remove" if dry_run else "remove"
    for decision in plan.remove:
        size = "?" if decision.size is None else format_size(decision.size)
        state = "  (in use: skipped)" if decision.key in skipped else ""
        click.echo(f"{verb}  {short_hash(decision.key)}  {size}  {decision.reason}{state}")
    if report is not None:
        click.echo(
            f"removed {len(report.removed)} env(s) and {report.trees_removed} shared package "
            f"tree(s), freed {format_size(report.bytes_freed)}"
        )
        if not report.shared_pruned:
            click.echo("builds were running: shared files were left for the next gc", err=True)
    else:
        total = sum(d.size or 0 for d in plan.remove)
        click.echo(f"dry run: would remove {len(plan.remove)} env(s), about {format_size(total)}")
