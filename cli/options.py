"""Options shared by every command, as decorators (one place decides their spelling)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

home_option: Callable[[F], F] = click.option(
    "--home",
    type=click.Path(file_okay=False, readable=False, path_type=str),  # a home is 0711
    default=None,
    metavar="DIR",
    help="The isolate home (default: $ISOLATE_HOME, /var/lib/isolate as root, "
    "else ~/.local/share/isolate).",
)

json_option: Callable[[F], F] = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
)
