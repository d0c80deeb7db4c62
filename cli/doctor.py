"""``isolate doctor``: check the node's permissions, mapping, interpreter and hardening."""

from __future__ import annotations

import sys

import click

from cli.options import home_option, json_option
from cli.output import print_json, print_table
from isolate.config import load_config
from isolate.services.doctor import diagnose


@click.command()
@home_option
@json_option
def doctor(home: str | None, as_json: bool) -> None:
    """Check the node without changing it; exit 1 if any check fails.

    Covers the home's permissions, the database and its journal files, the env cache, the
    tenant mapping, the env interpreter's accessibility to task users, and which optional
    hardening (cgroup v2, Landlock, bubblewrap) the host offers.

    \b
    Example:
      isolate doctor --json
    """
    findings = diagnose(load_config(home))
    if as_json:
        print_json([f.__dict__ for f in findings])
    else:
        print_table(
            ["CHECK", "STATUS", "DETAIL"], [[f.check, f.status, f.detail] for f in findings]
        )
    if any(f.status == "fail" for f in findings):
        sys.exit(1)
