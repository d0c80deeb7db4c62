"""``isolate lock``: pin a DAG folder's requirements, with hashes, for the node's interpreter."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import home_option
from isolate.config import author_config


@click.command()
@click.argument("folder", type=click.Path(path_type=Path), default=".")
@click.option("--python", metavar="PATH", help="Target interpreter (default: env_python setting).")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Default: FOLDER/requirements.txt."
)
@click.option(
    "-U", "--upgrade", is_flag=True, help="Allow every package to move to its newest version."
)
@click.option(
    "-P",
    "--upgrade-package",
    "upgrade_packages",
    multiple=True,
    metavar="NAME",
    help="Allow this package to move (repeatable).",
)
@click.option(
    "--find-links",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Also look for packages here (repeatable).",
)
@click.option("--no-index", is_flag=True, help="Use only --find-links, not the package index.")
@click.option("--offline", is_flag=True, help="Never touch the network.")
@home_option
def lock(
    folder: Path,
    python: str | None,
    output: Path | None,
    upgrade: bool,
    upgrade_packages: tuple[str, ...],
    find_links: tuple[Path, ...],
    no_index: bool,
    offline: bool,
    home: str | None,
) -> None:
    """Resolve FOLDER's requirements.in (or pylock.toml, or the requirements its DAGs declare)
    into requirements.txt with hashes.

    The lock is for the interpreter envs are built on, and reproducible: the same inputs
    and package sources give the same file. Existing pins are kept unless -U/-P says so.

    \b
    Example:
      isolate lock dags/etl --find-links /srv/wheelhouse --no-index
    """
    config = author_config(home)  # an author may not read the admin's isolate.toml
    from isolate.services.locking import lock_folder  # pip-tools and uv's code: not to complete

    result = lock_folder(
        folder,
        python=python or config.settings.env_python,
        output=output,
        upgrade=upgrade,
        upgrade_packages=upgrade_packages,
        find_links=find_links,
        no_index=no_index,
        offline=offline,
    )
    state = "created" if result.created else "updated" if result.changed else "unchanged"
    count = f"{result.packages} package{'' if result.packages == 1 else 's'}"
    click.echo(f"{result.output}: {state}, {count} from {result.source}")
