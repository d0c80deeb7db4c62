"""Admin commands: ``isolate init`` and ``isolate db ...``."""

from __future__ import annotations

import os
import pwd

import click

from cli.options import home_option
from isolate.config import Config, load_config
from isolate.services.home import init_home, upgrade_database
from isolate.store.engine import display_url
from isolate.tenancy.files import tenants_path
from isolate.tenancy.mapping import TenancyError


@click.command()
@home_option
@click.option("--database-url", metavar="URL", help="Store in this database instead of SQLite.")
@click.option(
    "--single-user",
    is_flag=True,
    help="A throwaway home for one person: every task runs as the scheduler's user (root "
    "too), with no isolation between DAGs. Never on a shared node.",
)
def init(home: str | None, database_url: str | None, single_user: bool) -> None:
    """Create an isolate home: directories, config file and database schema.

    Safe to run again: it completes what is missing and upgrades the schema.

    A node shared by teams maps each DAG to an OS user (the tenant mapping, admin-guide);
    until it has one, a scheduler running as root starts no task. --single-user makes a
    home where that is not needed (a tour, a trial on your own machine): its tasks run as
    whoever runs the scheduler, root included (it writes allow_root_tasks = true into the
    new isolate.toml when run as root), and nothing separates one DAG from another.

    \b
    Example:
      isolate init --home /var/lib/isolate
      isolate init --home /tmp/trial --single-user
    """
    config = load_config(home)
    report = init_home(config, database_url=database_url, single_user=single_user)
    config = load_config(home)  # re-read: init may have written database_url
    _, revision = upgrade_database(config)
    verb = "created" if report.created else "checked"
    click.echo(f"{verb} isolate home {report.home}")
    if report.config_written:
        click.echo(f"wrote {config.config_file}")
    click.echo(f"database {display_url(config.database_url)} at revision {revision}")
    _say_who_runs_tasks(config, single_user)


def _say_who_runs_tasks(config: Config, single_user: bool) -> None:
    """Who the home's tasks will run as, when that is not a tenant's user: what a tour's
    user must know before the scheduler refuses (or runs) anything."""
    try:
        mapping = tenants_path(config)
    except TenancyError:
        return  # a bad tenants_file: `isolate doctor` and the scheduler say so
    if mapping.exists():
        if single_user:
            click.echo(
                f"note: the tenant mapping {mapping} applies to this home too: only the DAGs "
                "it maps run, each as its tenant's user",
                err=True,
            )
        return
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = f"uid {os.geteuid()}"
    if single_user:
        how = " (allow_root_tasks = true)" if os.geteuid() == 0 else ""
        click.echo(
            f"single-user home: every task runs as the scheduler's user, {me} here{how}, "
            "with no isolation between DAGs: for a throwaway node only, never a shared one"
        )
    elif os.geteuid() == 0 and not config.settings.allow_root_tasks:
        click.echo(
            f"note: no tenant mapping at {mapping}: a scheduler running as root starts no "
            "task until one maps each DAG to an OS user (docs/admin-guide.md); for a "
            "throwaway single-user home, `isolate init --single-user` with a new --home",
            err=True,
        )


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@home_option
def upgrade(home: str | None) -> None:
    """Apply pending schema migrations to the home's database.

    \b
    Example:
      isolate db upgrade --home /var/lib/isolate
    """
    before, after = upgrade_database(load_config(home))
    if before == after:
        click.echo(f"database already at revision {after}")
    else:
        click.echo(f"database upgraded from {before or 'empty'} to {after}")
