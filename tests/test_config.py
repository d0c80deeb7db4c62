"""Settings: defaults, the home's TOML file, environment overrides, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from isolate.config import Settings, default_home, load_config
from isolate.errors import ConfigError, UsageError
from isolate.units import format_size, parse_size


def test_defaults_file_and_environment_precedence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = load_config(home, environ={})
    assert config.settings == Settings()
    assert config.database_url == f"sqlite:///{home}/isolate.db"
    (home / "isolate.toml").write_text(
        'database_url = "postgresql://db/isolate"\nmax_spec_bytes = "1M"\n'
    )
    config = load_config(home, environ={})
    assert config.database_url == "postgresql://db/isolate"
    assert config.settings.max_spec_bytes == 1024 * 1024
    env = {"ISOLATE_MAX_SPEC_BYTES": "2048", "ISOLATE_PAUSED_AT_CREATION": "yes"}
    config = load_config(home, environ=env)
    assert config.settings.max_spec_bytes == 2048
    assert config.settings.paused_at_creation is True
    assert config.settings.database_url == "postgresql://db/isolate"


def test_home_resolution(tmp_path: Path) -> None:
    assert default_home({"ISOLATE_HOME": str(tmp_path)}) == tmp_path
    assert load_config(None, environ={"ISOLATE_HOME": str(tmp_path)}).home == tmp_path
    assert (
        load_config(tmp_path / "x", environ={"ISOLATE_HOME": "/elsewhere"}).home == tmp_path / "x"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_spec_bytes = 0\n", "max_spec_bytes: must be positive"),
        ('max_spec_bytes = "lots"\n', "invalid size 'lots'"),
        ("paused_at_creation = 3\n", "expected true or false"),
        ("database_url = 5\n", "expected a string"),
        ("nonsense = 1\n", "unknown setting 'nonsense'"),
        ("max_spec_bytes = \n", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "isolate.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert message in str(info.value)
    assert str(tmp_path / "isolate.toml") in str(info.value)


def test_bad_environment_value_names_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment: paused_at_creation"):
        load_config(tmp_path, environ={"ISOLATE_PAUSED_AT_CREATION": "maybe"})


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("512", 512), ("2k", 2048), ("2G", 2 * 1024**3), ("512MiB", 512 * 1024**2), (7, 7)],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "2X", "-1", "1.5G", True, -3, None])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(UsageError):
        parse_size(bad)  # type: ignore[arg-type]


def test_format_size() -> None:
    assert format_size(12) == "12 B"
    assert format_size(2048) == "2.0 KiB"
    assert format_size(3 * 1024**3) == "3.0 GiB"
