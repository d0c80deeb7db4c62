"""``isolate completion``: the scripts, click's completion protocol, and DAG id completion."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.shell_completion import shell_complete
from click.testing import CliRunner

from cli import completion as completion_module
from cli.completion import SHELLS, complete_dag_ids
from cli.main import isolate
from cli.options import home_option
from tests.conftest import ETL_DAG

EXE = Path(sys.executable).parent / "isolate"


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed command, with ``env`` added to a copy of ours."""
    return subprocess.run(
        [EXE], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_the_script_is_the_one_click_serves(shell: str) -> None:
    printed = subprocess.run([EXE, "completion", shell], capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    assert "_ISOLATE_COMPLETE" in printed.stdout
    assert f"_ISOLATE_COMPLETE={shell}_complete" in printed.stdout
    served = _run({"_ISOLATE_COMPLETE": f"{shell}_source"})
    assert served.returncode == 0
    assert printed.stdout == served.stdout


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = CliRunner().invoke(isolate, ["completion", "tcsh"])
    assert result.exit_code == 2
    assert "'tcsh' is not one of" in result.stderr


def test_the_help_says_how_to_install_it_for_each_shell() -> None:
    text = CliRunner().invoke(isolate, ["completion", "--help"]).stdout
    assert 'eval "$(isolate completion bash)"' in text
    assert "~/.config/fish/completions/isolate.fish" in text
    assert "compinit" in text  # zsh: where the line goes matters


def test_the_protocol_completes_command_names() -> None:
    done = _run(
        {"_ISOLATE_COMPLETE": "bash_complete", "COMP_WORDS": "isolate da", "COMP_CWORD": "1"}
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.split() == ["plain,dags"]


def test_the_protocol_answers_nothing_and_no_traceback_without_a_home(tmp_path: Path) -> None:
    missing = tmp_path / "no-home"
    for words in (
        "isolate dags show ",
        "isolate trigger e",
        f"isolate dags show --home {missing} ",
    ):
        done = _run(
            {
                "ISOLATE_HOME": str(missing),
                "_ISOLATE_COMPLETE": "bash_complete",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split(" ")) - 1),
            }
        )
        assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "", ""), words
    assert not missing.exists()


# --- complete_dag_ids, through click's protocol on a command that uses it ---------------------


@click.command()
@click.argument("dag_id", shell_complete=complete_dag_ids)
@home_option
def _probe(dag_id: str, home: str | None) -> None:
    """A command with a completed DAG_ID, as cli/dags.py and cli/runs.py declare them."""


def _complete(
    words: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> list[str]:
    """What ``isolate``-style bash completion answers for ``words`` (the last one incomplete)."""
    parts = words.split(" ")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(len(parts) - 1))
    capfd.readouterr()
    code = shell_complete(_probe, {}, "probe", "_PROBE_COMPLETE", "bash_complete")
    out, err = capfd.readouterr()
    assert (code, err) == (0, "")
    return [line.removeprefix("plain,") for line in out.split()]


def test_dag_ids_complete_from_the_store(cli, make_folder, monkeypatch, capfd) -> None:
    cli("push", str(make_folder({"etl.py": ETL_DAG})))
    cli("push", str(make_folder({"etl2.py": ETL_DAG.replace('DAG("etl"', 'DAG("etl_v2"')})))
    cli("push", str(make_folder({"other.py": ETL_DAG.replace('DAG("etl"', 'DAG("reports"')})))
    assert _complete("probe ", monkeypatch, capfd) == ["etl", "etl_v2", "reports"]
    assert _complete("probe et", monkeypatch, capfd) == ["etl", "etl_v2"]
    assert _complete("probe x", monkeypatch, capfd) == []


def test_dag_ids_complete_from_the_home_given_on_the_line(
    cli, make_folder, home: Path, monkeypatch, capfd
) -> None:
    cli("push", str(make_folder({"etl.py": ETL_DAG})))
    monkeypatch.setenv("ISOLATE_HOME", str(home.parent / "elsewhere"))
    assert _complete("probe ", monkeypatch, capfd) == []
    assert _complete(f"probe --home {home} e", monkeypatch, capfd) == ["etl"]


def test_nothing_is_offered_when_the_home_cannot_be_read(
    tmp_path: Path, home: Path, monkeypatch, capfd
) -> None:
    missing = tmp_path / "missing"
    monkeypatch.setenv("ISOLATE_HOME", str(missing))
    assert _complete("probe ", monkeypatch, capfd) == []
    assert not missing.exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "isolate.toml").write_text("database_url = [\n")
    assert _complete(f"probe --home {broken} ", monkeypatch, capfd) == []

    # A SQLite file that does not exist is not created by looking into it.
    elsewhere = tmp_path / "nowhere" / "db.sqlite"
    (broken / "isolate.toml").write_text(f'database_url = "sqlite:///{elsewhere}"\n')
    assert _complete(f"probe --home {broken} ", monkeypatch, capfd) == []
    assert not elsewhere.parent.exists()

    (home / "isolate.db").write_bytes(b"not a database" * 100)
    monkeypatch.setenv("ISOLATE_HOME", str(home))
    assert _complete("probe ", monkeypatch, capfd) == []


def test_a_slow_database_gets_a_time_limit(home: Path, monkeypatch, capfd) -> None:
    def hang(_home: str | None) -> list[str]:
        time.sleep(30)
        return ["late"]

    monkeypatch.setattr(completion_module, "stored_dag_ids", hang)
    monkeypatch.setattr(completion_module, "LOOKUP_SECONDS", 0.2)
    started = time.monotonic()
    assert _complete("probe ", monkeypatch, capfd) == []
    assert time.monotonic() - started < 5
