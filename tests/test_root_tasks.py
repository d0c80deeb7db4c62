"""A root scheduler runs tasks as root, for lack of a mapping, only if root said so: in its
own environment, or in an isolate.toml that root owns and nobody else can write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isolate.config import load_config, root_tasks_allowed
from localexec.tenants import TenantWatch, UnownedDagError
from tests.osusers import clear_isolate_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root scheduler's rule, as root")

NOBODY = 65534


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(tmp_path / "no-mapping.toml"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "isolate.toml").write_text("allow_root_tasks = true\n")
    return home


def test_a_home_owner_who_is_not_root_cannot_allow_root_tasks(home: Path) -> None:
    settings = home / "isolate.toml"
    os.chown(settings, NOBODY, NOBODY)
    config = load_config(home)
    assert config.settings.allow_root_tasks and not root_tasks_allowed(config)
    with pytest.raises(UnownedDagError, match="root does not own it, or others may write it"):
        TenantWatch(config, None).tenant_for("etl")
    os.chown(settings, 0, 0)
    os.chmod(settings, 0o666)
    assert not root_tasks_allowed(load_config(home))
    os.chmod(settings, 0o644)
    assert TenantWatch(load_config(home), None).tenant_for("etl") is None


def test_roots_own_environment_allows_it(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "isolate.toml").write_text("")
    os.chown(home / "isolate.toml", NOBODY, NOBODY)
    assert not root_tasks_allowed(load_config(home))
    monkeypatch.setenv("ISOLATE_ALLOW_ROOT_TASKS", "true")
    assert root_tasks_allowed(load_config(home))
    monkeypatch.setenv("ISOLATE_ALLOW_ROOT_TASKS", "false")
    assert not root_tasks_allowed(load_config(home))
