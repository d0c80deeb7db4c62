"""Creating an isolate home: its directories with their permissions, config file and database.

Layout (modes are the point: tenants traverse the home but never write into it)::

    <home>/            0711  the admin's
      isolate.toml     0600  settings (may hold a database password)
      isolate.db       0600  the default SQLite store (and its -wal/-shm files)
      envcache/        0755  read-only virtualenvs, shared by versions with the same lock
      logs/            0711  per-tenant task logs below
      run/             0755  the scheduler's socket
      tmp/             0700  scratch space on the same filesystem (atomic renames)

and, made by the scheduler on its first start (``localexec.workspace``): ``bundles/`` (0755,
extracted bundles, read-only), ``work/`` (0711, a fresh 0700 directory per try, given to the
user the try runs as) and ``runtime/`` (0755, the bootstrap and the SDK files tasks import).
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from isolate.config import CONFIG_NAME, Config
from isolate.errors import ConfigError

if TYPE_CHECKING:
    from isolate.store import Store

DIRECTORIES = {"envcache": 0o755, "logs": 0o711, "run": 0o755, "tmp": 0o700}
HOME_MODE = 0o711

_TEMPLATE = """\
# isolate settings. Environment variables ISOLATE_<NAME> override each key.
{database_line}
# Largest serialized DAG document and code bundle accepted by `isolate push`.
# max_spec_bytes = "4M"
# max_bundle_bytes = "32M"
# Most files a code bundle may hold (after caches, VCS and virtualenv directories).
# max_bundle_files = 30000
# Largest log of one try: the task's output beyond it is dropped, with a marker.
# max_log_bytes = "100M"
# Whether a DAG pushed for the first time starts paused.
# paused_at_creation = false
# How many due intervals a catchup DAG runs at most: the newest ones.
# max_catchup_runs = 1000
# The interpreter envs are built on (must be executable by the users tasks run as),
# the builder ("uv" or "virtualenv-pip"), and where packages come from.
# env_python = "/usr/bin/python3"
# env_builder = "uv"
# find_links = ["/srv/wheelhouse"]
# offline = false
# Build a version's env when it is pushed (else on first use), and how many versions
# of each DAG keep their env through `isolate gc`.
# build_on_push = true
# gc_keep_versions = 3
"""

# Appended by `isolate init --single-user`.
_SINGLE_USER_ROOT = """
# A single-user home (`isolate init --single-user`): with no tenant mapping, a scheduler
# running as root runs every task as root, with no isolation between DAGs. Only for a
# throwaway node that one person uses (a tour, a trial): never on a shared node, where
# each DAG is mapped to an OS user in the tenant mapping instead.
allow_root_tasks = true
"""
_SINGLE_USER = """
# A single-user home (`isolate init --single-user`): every task runs as the user who runs
# the scheduler, with no isolation between DAGs. Only for one person's own DAGs.
"""


@dataclass(frozen=True)
class InitReport:
    home: Path
    created: bool
    config_written: bool


def init_home(
    config: Config, *, database_url: str | None = None, single_user: bool = False
) -> InitReport:
    """Create (or complete) the home's directories and config file. Idempotent.

    ``single_user`` makes a throwaway home for one person (a tour, a trial): every task runs
    as the user the scheduler runs as, with no isolation between DAGs. As root that takes
    ``allow_root_tasks = true``, written into the new config file; an existing one must say
    so already (init never edits it). As anyone else it is what the home does anyway, and
    nothing is written that a root scheduler would act on.

    The database schema is created separately (``isolate.store.migrate.upgrade``) so that a
    caller can report each step.
    """
    home = config.home
    created = not home.exists()
    _make_dir(home, HOME_MODE)
    for name, mode in DIRECTORIES.items():
        _make_dir(home / name, mode)
    config_file = home / CONFIG_NAME
    written = False
    if not config_file.exists():
        line = (
            f'database_url = "{database_url}"'
            if database_url
            else (
                '# database_url = "postgresql+psycopg://isolate@127.0.0.1/isolate"'
                "  (default: SQLite)"
            )
        )
        text = _TEMPLATE.format(database_line=line)
        if single_user:
            text += _SINGLE_USER_ROOT if os.geteuid() == 0 else _SINGLE_USER
        _write_private(config_file, text)
        written = True
    else:
        if database_url:
            raise ConfigError(
                f"{config_file} exists: edit database_url there instead of passing --database-url"
            )
        if single_user and os.geteuid() == 0 and not _allows_root_tasks(config_file):
            raise ConfigError(
                f"{config_file} exists and does not set allow_root_tasks = true: --single-user "
                "only writes a new home's settings (on a throwaway node, set it there yourself)"
            )
    return InitReport(home=home, created=created, config_written=written)


def _allows_root_tasks(config_file: Path) -> bool:
    try:
        with open(config_file, "rb") as fh:
            return tomllib.load(fh).get("allow_root_tasks") is True
    except (OSError, tomllib.TOMLDecodeError):
        return False  # load_config has read it already; here it only decides a refusal


def _make_dir(path: Path, mode: int) -> None:
    try:
        path.mkdir(mode=mode, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create directory: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path}: exists and is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"{path}: owned by uid {info.st_uid}, not by the user running isolate init"
        )
    os.chmod(path, mode)  # mkdir's mode is filtered by the umask; set it exactly


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


@contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside (a SQLite database and its journals) are readable by the owner only."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def require_home(config: Config) -> None:
    """Refuse to run against a home that ``isolate init`` never created (default SQLite only)."""
    if config.is_default_sqlite and not (config.home / "isolate.db").exists():
        raise ConfigError(
            f"no isolate home at {config.home}: run `isolate init --home {config.home}`"
        )


def upgrade_database(config: Config) -> tuple[str | None, str]:
    """Migrate the home's database to the newest schema; returns (revision before, after)."""
    from isolate.store import migrate
    from isolate.store.engine import make_engine

    with private_umask():
        engine = make_engine(config.database_url)
        try:
            before = migrate.current_revision(engine)
            migrate.upgrade(engine)
        finally:
            engine.dispose()
    return before, migrate.head_revision()


def open_store(config: Config) -> Store:
    """The home's store, refusing a home never initialized or a schema not at head."""
    from isolate.store import Store

    require_home(config)
    return Store.open(config.database_url)
