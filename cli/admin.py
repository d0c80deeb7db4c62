"""Admin commands: ``isolate init`` and ``isolate db ...``."""

from __future__ import annotations

import click

from cli.options import home_option
from isolate.config import load_config
from isolate.home import init_home, upgrade_database
from isolate.store.engine import display_url


@click.command()
@home_option
@click.option("--database-url", metavar="URL", help="Store in this database instead of SQLite.")
def init(home: str | None, database_url: str | None) -> None:
    """Create an isolate home: directories, config file and database schema.

    Safe to run again: it completes what is missing and upgrades the schema.

    \b
    Example:
      isolate init --home /var/lib/isolate
    """
    config = load_config(home)
    report = init_home(config, database_url=database_url)
    config = load_config(home)  # re-read: init may have written database_url
    _, revision = upgrade_database(config)
    verb = "created" if report.created else "checked"
    click.echo(f"{verb} isolate home {report.home}")
    if report.config_written:
        click.echo(f"wrote {config.config_file}")
    click.echo(f"database {display_url(config.database_url)} at revision {revision}")


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
