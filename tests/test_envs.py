"""DAG versions and their envs through the CLI: push builds, lock, env list/build/verify/pin, gc."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from isolate.config import load_config
from isolate.services.environments import env_cache
from tests.conftest import Wheelhouse

TINY_DAG = """
    from isolate import DAG, PythonTask

    with DAG("tiny") as dag:
        PythonTask("show", callable="tinylib:VERSION")
"""


@pytest.fixture
def wheels_home(home: Path, wheelhouse: Wheelhouse, monkeypatch) -> Path:
    monkeypatch.setenv("ISOLATE_FIND_LINKS", str(wheelhouse.path))
    return home


def push(cli, folder: Path, *extra: str, expect: int = 0) -> list[dict]:
    result = cli("push", str(folder), "--json", *extra, expect=expect)
    return json.loads(result.stdout) if expect == 0 else [{"stderr": result.stderr}]


def envs(cli) -> dict[str, dict]:
    return {e["key"]: e for e in json.loads(cli("env", "list", "--json").stdout)}


def run_in_env(home: Path, key: str, code: str) -> str:
    import subprocess

    python = home / "envcache" / "envs" / key / "bin" / "python"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout


def test_push_builds_each_lock_once_and_versions_share_envs(
    cli, wheels_home: Path, wheelhouse: Wheelhouse, make_folder
) -> None:
    folder = make_folder({"tiny.py": TINY_DAG}, lock=wheelhouse.lock("tinylib==1.0"))
    v1 = push(cli, folder)[0]
    assert v1["env_built"] is True
    assert (
        run_in_env(wheels_home, v1["env_key"], "import tinylib; print(tinylib.VERSION)") == "1.0\n"
    )
    (folder / "requirements.txt").write_text(wheelhouse.lock("tinylib==2.0"))
    v2 = push(cli, folder)[0]
    assert v2["version"] == 2 and v2["env_key"] != v1["env_key"]
    assert (
        run_in_env(wheels_home, v2["env_key"], "import tinylib; print(tinylib.VERSION)") == "2.0\n"
    )
    (folder / "tiny.py").write_text((folder / "tiny.py").read_text() + "\n# a comment\n")
    v3 = push(cli, folder)[0]
    assert v3["version"] == 3 and v3["env_key"] == v2["env_key"] and v3["env_built"] is False
    listed = envs(cli)
    assert listed[v1["env_key"]]["used_by"] == ["tiny@1"]
    assert listed[v2["env_key"]]["used_by"] == ["tiny@3", "tiny@2"]
    assert all(e["state"] == "ok" and e["size"] > 0 for e in listed.values())


def test_bad_locks_are_refused_and_store_nothing(
    cli, wheels_home: Path, wheelhouse: Wheelhouse, make_folder
) -> None:
    unpinned = make_folder({"tiny.py": TINY_DAG}, lock="tinylib>=1.0\n")
    err = push(cli, unpinned, expect=4)[0]["stderr"]
    assert err.startswith("isolate: error: dag tiny: lockfile: requirements.txt:1:")
    assert err.count("\n") == 1
    wrong_hash = wheelhouse.lock("tinylib==1.0").replace(
        wheelhouse.hashes["tinylib==1.0"], "sha256:" + "0" * 64
    )
    mismatch = make_folder({"tiny.py": TINY_DAG}, lock=wrong_hash)
    err = push(cli, mismatch, expect=7)[0]["stderr"]
    assert "hash" in err.lower() and err.count("\n") == 1
    assert json.loads(cli("dags", "list", "--json").stdout) == []
    cache_root = wheels_home / "envcache"
    assert not list((cache_root / "envs").iterdir())
    assert not list((cache_root / "tmp").iterdir())


def test_no_build_push_and_env_build_later(cli, wheels_home, wheelhouse, make_folder) -> None:
    folder = make_folder({"tiny.py": TINY_DAG}, lock=wheelhouse.lock("otherlib==1.0"))
    pushed = push(cli, folder, "--no-build")[0]
    assert pushed["env_key"] is None
    assert envs(cli) == {}
    out = cli("env", "build", "tiny@1").stdout
    assert "tiny v1: env" in out and "built at" in out
    assert "already built" in cli("env", "build", "tiny").stdout
    cli("env", "build", "tiny@x", expect=2)
    cli("env", "build", "nope", expect=3)


def test_verify_detects_tampering_and_build_repairs(
    cli, wheels_home, wheelhouse, make_folder
) -> None:
    folder = make_folder({"tiny.py": TINY_DAG}, lock=wheelhouse.lock("tinylib==1.0"))
    key = push(cli, folder)[0]["env_key"]
    assert f"{key}: ok" in cli("env", "verify").stdout
    module = next(
        (wheels_home / "envcache" / "envs" / key).glob(
            "lib/python*/site-packages/tinylib/__init__.py"
        )
    )
    target = module.resolve()
    # Tamper as root would: break the hardlink first so uv's cache is left intact.
    original = target.read_text()
    os.chmod(module.parent, 0o755)
    module.unlink()
    module.write_text(original.replace("1.0", "6.6"))  # same size, same modes
    os.chmod(module, 0o444)
    os.chmod(module.parent, 0o555)
    assert f"{key}: ok" in cli("env", "verify").stdout  # the quick check compares sizes/modes
    result = cli("env", "verify", "--deep", key[:12], expect=1)
    assert "MODIFIED" in result.stdout and "tinylib/__init__.py" in result.stdout
    assert json.loads(cli("env", "list", "--json").stdout)[0]["state"] == "ok"  # manifest readable
    assert "built at" in cli("env", "build", "tiny").stdout  # the deep check, then a rebuild
    assert run_in_env(wheels_home, key, "import tinylib; print(tinylib.VERSION)") == "1.0\n"
    assert f"{key}: ok" in cli("env", "verify", "--deep").stdout
    # A change the quick check sees stops a push that would reuse the env.
    planted = module.parent
    os.chmod(planted, 0o755)
    (planted / "extra.py").write_text("x = 1\n")
    err = push(cli, folder, expect=7)[0]["stderr"]
    assert "modified after its build" in err and err.count("\n") == 1


def test_gc_keeps_roots_pins_recent_and_in_use(cli, wheels_home, wheelhouse, make_folder) -> None:
    folder = make_folder({"tiny.py": TINY_DAG}, lock=wheelhouse.lock("tinylib==1.0"))
    old = push(cli, folder)[0]["env_key"]
    (folder / "requirements.txt").write_text(wheelhouse.lock("tinylib==2.0"))
    new = push(cli, folder)[0]["env_key"]

    dry = json.loads(cli("gc", "--dry-run", "--keep-versions", "2", "--json").stdout)
    assert dry["remove"] == [] and {k["key"] for k in dry["keep"]} == {old, new}
    dry = json.loads(cli("gc", "--dry-run", "--keep-versions", "1", "--json").stdout)
    assert [d["key"] for d in dry["remove"]] == [old]
    assert "tiny v2 (latest version)" in [k["reason"] for k in dry["keep"]]
    assert "would remove" in cli("gc", "--dry-run", "--keep-versions", "1").stdout
    assert set(envs(cli)) == {old, new}  # a dry run removes nothing

    recent = json.loads(cli("gc", "--keep-versions", "1", "--older-than", "1h", "--json").stdout)
    assert recent["remove"] == [] and old in envs(cli)

    cli("env", "pin", old[:10], "-m", "kept for an audit")
    pinned = json.loads(cli("gc", "--keep-versions", "1", "--json").stdout)
    assert pinned["remove"] == []
    assert {"key": old, "reason": "pinned: kept for an audit"} in [
        {"key": k["key"], "reason": k["reason"]} for k in pinned["keep"]
    ]
    cli("env", "unpin", old[:10])

    cache = env_cache(load_config(wheels_home))
    with cache.use(old):
        busy = json.loads(cli("gc", "--keep-versions", "1", "--json").stdout)
    assert [d["key"] for d in busy["in_use"]] == [old] and old in envs(cli)

    done = json.loads(cli("gc", "--keep-versions", "1", "--json").stdout)
    assert [d["key"] for d in done["remove"]] == [old] and done["in_use"] == []
    assert done["bytes_freed"] > 0
    assert set(envs(cli)) == {new}
    audit = json.loads(cli("audit", "--json").stdout)
    assert audit[0]["action"] == "gc" and audit[0]["details"]["removed"] == [old]
    assert run_in_env(wheels_home, new, "import tinylib; print(tinylib.VERSION)") == "2.0\n"
    cli("gc", "--older-than", "soon", expect=2)


def test_lock_resolves_requirements_in_and_keeps_pins(
    cli, wheels_home, wheelhouse, make_folder
) -> None:
    folder = make_folder({"tiny.py": TINY_DAG, "requirements.in": "tinylib==1.0\n"}, lock=None)
    sources = ["--find-links", str(wheelhouse.path), "--no-index", "--offline"]
    out = cli("lock", str(folder), *sources).stdout
    assert "requirements.txt: created, 1 package from requirements.in" in out
    text = (folder / "requirements.txt").read_text()
    assert "tinylib==1.0" in text and wheelhouse.hashes["tinylib==1.0"] in text
    assert str(folder) not in text and "isolate lock" in text
    assert stat.S_IMODE((folder / "requirements.txt").stat().st_mode) == 0o644
    (folder / "requirements.in").write_text("tinylib\n")
    assert "unchanged" in cli("lock", str(folder), *sources).stdout  # the pin is kept
    assert (folder / "requirements.txt").read_text() == text
    cli("lock", str(folder), *sources, "--upgrade-package", "tinylib")
    assert "tinylib==2.0" in (folder / "requirements.txt").read_text()
    assert push(cli, folder)[0]["version"] == 1


def test_lock_from_the_requirements_dags_declare(cli, wheels_home, wheelhouse, make_folder) -> None:
    declaring = TINY_DAG.replace(
        'DAG("tiny")', 'DAG("tiny", requirements=["otherlib", "tinylib<2"])'
    )
    other = 'from isolate import DAG\nDAG("other", requirements=["tinylib<2"])\n'
    folder = make_folder({"tiny.py": declaring, "other.py": other}, lock=None)
    sources = ["--find-links", str(wheelhouse.path), "--no-index", "--offline"]
    out = cli("lock", str(folder), *sources).stdout
    assert "created, 2 packages from the DAGs' requirements" in out
    text = (folder / "requirements.txt").read_text()
    assert "otherlib==1.0" in text and "tinylib==1.0" in text and "tmp" not in text
    assert len(push(cli, folder)) == 2


def test_lock_errors(cli, wheels_home, wheelhouse, make_folder) -> None:
    empty = make_folder({"tiny.py": TINY_DAG}, lock=None)
    assert "nothing to lock" in cli("lock", str(empty), expect=2).stderr
    missing = make_folder({"requirements.in": "nothere==1.0\n"}, lock=None)
    err = cli(
        "lock",
        str(missing),
        "--find-links",
        str(wheelhouse.path),
        "--no-index",
        "--offline",
        expect=7,
    ).stderr
    assert "nothere" in err and err.count("\n") == 1
    assert not (missing / "requirements.txt").exists()


def test_pylock_input_is_converted(cli, wheels_home, wheelhouse, make_folder) -> None:
    digest = wheelhouse.hashes["tinylib==1.0"].removeprefix("sha256:")
    pylock = f"""
        lock-version = "1.0"
        created-by = "test"

        [[packages]]
        name = "tinylib"
        version = "1.0"
        wheels = [{{ name = "tinylib-1.0-py3-none-any.whl", hashes = {{ sha256 = "{digest}" }} }}]
    """
    folder = make_folder({"tiny.py": TINY_DAG, "pylock.toml": pylock}, lock=None)
    cli("lock", str(folder))
    assert wheelhouse.hashes["tinylib==1.0"] in (folder / "requirements.txt").read_text()
    assert push(cli, folder)[0]["env_built"] is True


def test_a_dag_can_use_pylock_toml_directly(cli, wheels_home, wheelhouse, make_folder) -> None:
    digest = wheelhouse.hashes["otherlib==1.0"].removeprefix("sha256:")
    pylock = f"""
        lock-version = "1.0"
        created-by = "test"

        [[packages]]
        name = "otherlib"
        version = "1.0"
        wheels = [{{ name = "otherlib-1.0-py3-none-any.whl", hashes = {{ sha256 = "{digest}" }} }}]
    """
    dag = TINY_DAG.replace('DAG("tiny")', 'DAG("tiny", lockfile="pylock.toml")')
    folder = make_folder({"tiny.py": dag, "pylock.toml": pylock}, lock=None)
    key = push(cli, folder)[0]["env_key"]
    assert run_in_env(wheels_home, key, "import otherlib; print(otherlib.VERSION)") == "1.0\n"


def test_env_list_on_an_empty_node_and_unknown_keys(cli) -> None:
    assert json.loads(cli("env", "list", "--json").stdout) == []
    assert cli("env", "verify").stdout == ""
    cli("env", "pin", "abc", expect=2)
    cli("env", "show", "abc", expect=2)


def test_env_show_prints_the_manifest(cli, wheels_home, wheelhouse, make_folder) -> None:
    folder = make_folder({"tiny.py": TINY_DAG}, lock=wheelhouse.lock("tinylib==2.0"))
    key = push(cli, folder)[0]["env_key"]
    shown = cli("env", "show", key[:10]).stdout
    assert f"key:       {key}" in shown and "packages:  tinylib==2.0" in shown
    assert "builder:   uv v2" in shown and "/usr/bin/python3.11 (3.11." in shown
    manifest = json.loads(cli("env", "show", key, "--json").stdout)
    assert manifest["key"] == key and manifest["format"] == 3
    assert any(path.endswith("/tinylib") for path in manifest["trees"])


def test_builds_show_progress_on_a_terminal(cli, wheels_home, wheelhouse, make_folder) -> None:
    import pty
    import subprocess
    import sys

    folder = make_folder({"tiny.py": TINY_DAG}, lock=wheelhouse.lock("tinylib==2.0"))
    push(cli, folder, "--no-build")
    exe = Path(sys.executable).parent / "isolate"
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [exe, "env", "build", "tiny"],
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            env=dict(os.environ),
            check=True,
        )
        os.close(secondary)
        shown = os.read(primary, 65536).decode()
    finally:
        os.close(primary)
    assert "env for tiny v1 ..." in shown and "done in" in shown
    assert "built at" in done.stdout


def test_gc_keeps_the_env_of_a_version_with_an_active_run(
    cli, wheels_home, wheelhouse, make_folder
) -> None:
    from datetime import UTC, datetime

    from isolate.states import RunState
    from isolate.store import Store

    folder = make_folder({"tiny.py": TINY_DAG}, lock=wheelhouse.lock("tinylib==1.0"))
    old = push(cli, folder)[0]["env_key"]
    (folder / "requirements.txt").write_text(wheelhouse.lock("tinylib==2.0"))
    push(cli, folder)
    with Store.open(f"sqlite:///{wheels_home / 'isolate.db'}") as store:
        store.runs.create(
            "tiny",
            run_id="r1",
            run_type="manual",
            logical_date=datetime.now(UTC),
            conf={},
            created_by="test",
            version=1,
        )
        store.runs.set_state("tiny", "r1", RunState.RUNNING)
        kept = json.loads(cli("gc", "--keep-versions", "1", "--json").stdout)
        assert kept["remove"] == []
        assert {"key": old, "reason": "tiny v1 (has a queued or running run)"} in [
            {"key": k["key"], "reason": k["reason"]} for k in kept["keep"]
        ]
        store.runs.set_state("tiny", "r1", RunState.SUCCESS)
    done = json.loads(cli("gc", "--keep-versions", "1", "--json").stdout)
    assert [d["key"] for d in done["remove"]] == [old]
