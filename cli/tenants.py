"""``isolate tenants ...``: list the tenant mapping, check a DAG against it, validate a file."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import click

from cli.options import home_option, json_option
from cli.output import print_json, print_table, printable
from isolate.config import current_user, load_config
from isolate.errors import NotFoundError, UsageError
from isolate.tenancy import Tenant, load_tenants, tenants_path, user_groups, validate_file


@click.group()
def tenants() -> None:
    """Inspect and validate the admin-only tenant mapping (who owns, pushes and runs which DAGs)."""


@tenants.command("list")
@home_option
@json_option
def list_(home: str | None, as_json: bool) -> None:
    """List every tenant: its DAG patterns, pushers, run-as user, share, limits and hardening.

    SHARE is the tenant's weight against other tenants' for the node's slots, and its cap on
    tasks running at once (max=-: only the node's parallelism).

    \b
    Example:
      isolate tenants list --json
    """
    mapping = load_tenants(load_config(home))
    if as_json:
        print_json([t.to_json() for t in mapping.tenants])
        return
    print_table(
        ["TENANT", "DAGS", "PUSHERS", "RUN_AS", "SHARE", "LIMITS", "HARDENING"],
        [
            [
                t.name,
                ",".join(t.dags),
                ",".join(t.pushers),
                t.run_as,
                _share(t),
                t.limits.describe(),
                t.hardening.describe(),
            ]
            for t in mapping.tenants
        ],
    )


@tenants.command()
@click.argument("dag_id")
@click.option("--user", metavar="USER", help="Whose push rights to check (default: you).")
@home_option
@json_option
def check(dag_id: str, user: str | None, home: str | None, as_json: bool) -> None:
    """Show which tenant owns DAG_ID, the user it runs as, and whether USER may push it.

    Exits 3 if no tenant owns DAG_ID (such a DAG does not run).

    \b
    Example:
      isolate tenants check analytics.daily --user alice
    """
    config = load_config(home)
    mapping = load_tenants(config)
    tenant = mapping.owner(dag_id)
    if tenant is None:
        raise NotFoundError(
            f"no tenant owns DAG {dag_id!r} in {mapping.source}: it will not run; "
            "add a matching pattern to a tenant's dags"
        )
    who = user or current_user()
    allowed = mapping.may_push(who, user_groups(who), dag_id)
    from localexec.sandbox import describe_wanted, wanted_hardening

    hardening = wanted_hardening(config.settings, tenant)
    own = tenant.to_json()
    if as_json:
        print_json(
            {
                "dag_id": dag_id,
                "tenant": tenant.name,
                "run_as": tenant.run_as,
                "weight": tenant.weight,
                "max_active_tasks": tenant.max_active_tasks,
                "limits": own["limits"],
                "hardening": own["hardening"],  # the tenant's table: null means the node's
                "effective_hardening": asdict(hardening),
                "user": who,
                "may_push": allowed,
            }
        )
        return
    for name, value in [
        ("dag", dag_id),
        ("tenant", tenant.name),
        ("run_as", tenant.run_as),
        ("share", _share(tenant)),
        ("limits", tenant.limits.describe()),
        ("hardening", describe_wanted(hardening)),
        ("may push", f"{'yes' if allowed else 'no'} ({who})"),
    ]:
        click.echo(f"{name + ':':<11}{printable(value)}")


@tenants.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--no-permissions",
    is_flag=True,
    help="Skip the ownership and mode checks (a candidate FILE only, never the live one).",
)
@home_option
def validate(file: Path | None, no_permissions: bool, home: str | None) -> None:
    """Check a mapping file before installing it (default: the live mapping).

    Runs every check loading does, the permission checks included; prints "ok" or every
    problem, one per line, and exits 5 if there is any.

    \b
    Example:
      isolate tenants validate /root/tenants.new.toml --no-permissions
    """
    config = load_config(home)
    live = tenants_path(config)
    path = Path(os.path.abspath(file)) if file else live
    if no_permissions and _same_file(path, live):
        raise UsageError(f"{path} is the live mapping: its permissions are always checked")
    problems = validate_file(
        path, min_uid=config.settings.tenant_min_uid, check_permissions=not no_permissions
    )
    if not problems:
        click.echo("ok")
        return
    for problem in problems:
        click.echo(printable(problem))
    raise click.exceptions.Exit(5)


def _share(tenant: Tenant) -> str:
    """``weight=3 max=8``: the tenant's weight and its cap on running tasks (``-``: none)."""
    cap = "-" if tenant.max_active_tasks is None else str(tenant.max_active_tasks)
    return f"weight={tenant.weight} max={cap}"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a == b or os.path.samefile(a, b)
    except OSError:
        return False
