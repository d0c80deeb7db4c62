"""``--home`` names a home that is 0711 by design: users other than its owner (authors pushing
through the scheduler's socket) may traverse it, not list it, and must not be refused for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import isolate
from tests.conftest import ETL_DAG, Cli, write_folder
from tests.osusers import clear_isolate_env
from tests.plainuser import plain_user, skip_unless_possible


def test_a_home_its_user_may_traverse_but_not_list_is_accepted(
    home: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_access = os.access

    def access(path: object, mode: int, **kwargs: object) -> bool:
        # What a user who is not the home's owner gets for its 0711 home; root reads anything.
        if os.fspath(path) == os.fspath(home) and mode & os.R_OK:  # type: ignore[arg-type]
            return False
        return real_access(path, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    assert not os.access(home, os.R_OK)
    result = cli("dags", "list", "--home", str(home))
    assert "not readable" not in result.output


@pytest.mark.slow
def test_an_author_is_not_refused_a_home_of_the_admins(monkeypatch: pytest.MonkeyPatch) -> None:
    skip_unless_possible()
    clear_isolate_env(monkeypatch)
    with plain_user("isohome") as author:
        node = author.work / "node"
        result = CliRunner().invoke(isolate, ["init", "--home", str(node)])
        assert result.exit_code == 0, result.output
        assert (node.stat().st_mode & 0o777) == 0o711
        folder = write_folder(author.work / "dags", {"etl.py": ETL_DAG})
        for command in (
            ["push", str(folder)],
            ["lock", str(folder), "--offline"],
            ["test", str(folder), "extract"],
        ):
            run = author.isolate(*command, "--home", str(node))
            assert "Invalid value for '--home'" not in run.output, (command, run.output)
            if command[0] == "push":  # an author's push goes through the scheduler's socket
                assert "no scheduler is serving pushes" in run.output, run.output
