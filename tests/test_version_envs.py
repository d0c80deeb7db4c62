"""Each version's env key and parsed lock: stored at push on this node's basis, read at launch.

A reader on the basis a row was derived on takes it as it is; a reader on another basis (the
admin changed env_python or env_builder) derives and stores its own; versions stored before
revision 0005 get theirs the first time they are needed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from envcache.backends import UvBuilder, VirtualenvPipBuilder
from envcache.interpreter import Interpreter
from envcache.lock import Lock, LockEntry
from envcache.lockfile import parse_pylock, parse_requirements
from isolate.config import load_config
from isolate.services import environments
from isolate.services.catalog import stored_version
from isolate.services.dagfile import load_folder
from isolate.services.environments import (
    EnvResolver,
    env_basis,
    lock_document,
    lock_from_document,
)
from isolate.services.gc import gc_roots, version_keys
from isolate.services.home import open_store
from isolate.states import RunState, TaskState
from isolate.store import NewVersion, Store, migrate
from isolate.store import tables as t
from localexec.scheduler import Scheduler
from tests.conftest import PYTHON, Wheelhouse

DAG = (
    'from isolate import DAG, CommandTask\nwith DAG("{name}"):\n'
    '    CommandTask("t", command=["true"])\n'
)
TWO_DAGS = DAG.format(name="a") + DAG.format(name="b")


@pytest.fixture
def wheels_home(home: Path, wheelhouse: Wheelhouse, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ISOLATE_FIND_LINKS", str(wheelhouse.path))
    return home


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The lockfiles parsed from now on (the parse itself still happens)."""
    seen: list[str] = []
    real = environments.parse_lock

    def counting(lockfile: str, text: str, **kwargs: Any) -> Lock:
        seen.append(lockfile)
        return real(lockfile, text, **kwargs)

    monkeypatch.setattr(environments, "parse_lock", counting)
    return seen


def run_scheduler(home: Path) -> None:
    config = load_config(home)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=2, poll_interval=0.05) as scheduler,
    ):
        scheduler.run(until_idle=True)


def _refuse_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> Lock:
        raise AssertionError("a lock was parsed")

    monkeypatch.setattr(environments, "parse_lock", refuse)


# -- the parsed lock as a document --------------------------------------------------------

REQUIREMENTS = (
    "zlib-ng==1.0 ; python_version < '3.10' \\\n    --hash=sha256:" + "1" * 64 + "\n"
    "tinylib==1.0 \\\n    --hash=sha256:" + "2" * 64 + " \\\n    --hash=sha256:" + "3" * 64 + "\n"
    "direct @ https://example.org/direct-1.0-py3-none-any.whl \\\n"
    "    --hash=sha256:" + "4" * 64 + "\n"
)
PYLOCK = """
lock-version = "1.0"
created-by = "test"

[[packages]]
name = "otherlib"
version = "2.5"
marker = "sys_platform == 'linux'"
wheels = [{ name = "otherlib-2.5-py3-none-any.whl", hashes = { sha256 = "%s" } }]
""" % ("5" * 64)


@pytest.mark.parametrize(
    "lock",
    [
        parse_requirements(REQUIREMENTS, allow_direct_references=True),
        parse_pylock(PYLOCK, source="pylock.dev.toml"),
        parse_requirements(""),
    ],
    ids=["requirements", "pylock", "empty"],
)
def test_a_lock_document_gives_back_the_same_lock(lock: Lock) -> None:
    again = lock_from_document(lock_document(lock))

    assert again == lock and again.source == lock.source
    # Not compared by LockEntry's equality, but shown in messages: kept too.
    assert [e.origin for e in again.entries] == [e.origin for e in lock.entries]
    assert all(e.origin for e in lock.entries)
    assert lock_document(again) == lock_document(lock)


def test_a_lock_document_holds_every_field_of_envcaches_lock() -> None:
    """A field envcache adds to its lock would be lost by the document: this says so."""
    document = json.loads(
        lock_document(parse_requirements(REQUIREMENTS, allow_direct_references=True))
    )

    assert {f.name for f in dataclasses.fields(Lock)} == {"entries", "source"}
    assert {f.name for f in dataclasses.fields(LockEntry)} == set(document["entries"][0])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{}",
        '{"format": 2, "source": "r.txt", "entries": []}',
        '{"format": 1, "source": "r"}',
    ],
)
def test_what_is_not_a_lock_document_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        lock_from_document(text)


# -- the basis ----------------------------------------------------------------------------


def test_the_basis_changes_with_everything_besides_the_lock_that_a_key_depends_on() -> None:
    python = Interpreter.probe(PYTHON)
    base = env_basis(python, UvBuilder(), allow_direct_references=False)
    newer = dataclasses.replace(python, version_info=(3, 11, 99, "final", 0))
    kernel = dataclasses.replace(
        python, marker_env={**python.marker_env, "platform_release": "9.9.9-other"}
    )

    others = [
        env_basis(python, VirtualenvPipBuilder(), allow_direct_references=False),
        env_basis(python, UvBuilder(), allow_direct_references=True),
        env_basis(newer, UvBuilder(), allow_direct_references=False),
        # Left out of the interpreter's identity, but a lock's markers may test it.
        env_basis(kernel, UvBuilder(), allow_direct_references=False),
    ]

    assert env_basis(Interpreter.probe(PYTHON), UvBuilder(), allow_direct_references=False) == base
    assert len(base) == 64 and len({base, *others}) == 5


# -- at push and at launch ----------------------------------------------------------------


def test_a_push_stores_the_key_and_the_parsed_lock_with_the_version(
    cli, wheels_home: Path, wheelhouse: Wheelhouse, make_folder
) -> None:
    folder = make_folder({"dag.py": DAG.format(name="a")}, lock=wheelhouse.lock("tinylib==1.0"))
    [pushed] = json.loads(cli("push", "--no-build", "--json", str(folder)).stdout)
    assert pushed["env_key"] is None  # as before: a push reports a key only for what it built
    config = load_config(wheels_home)
    resolver = EnvResolver(config)
    with open_store(config) as store:
        version = stored_version(store, "a", 1)
        row = store.version_envs.get("a", 1, resolver.basis)
        assert row is not None
        assert row.env_key == resolver.key(version.spec)  # parsed and computed here, again
        assert lock_from_document(row.lock_json) == resolver.lock(version.spec)
        # Derived data: the version itself is what was pushed, and pushing it again is no change.
        assert version.record.spec_hash == pushed["spec_hash"]
        [again] = json.loads(cli("push", "--no-build", "--json", str(folder)).stdout)
        assert (again["status"], again["version"]) == ("unchanged", 1)
        assert len(store.version_envs.keys(resolver.basis)) == 1


def test_launching_a_task_parses_no_lock(
    cli, wheels_home: Path, wheelhouse: Wheelhouse, make_folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nor does building its missing env in the background: the stored lock is built."""
    folder = make_folder({"dag.py": DAG.format(name="a")}, lock=wheelhouse.lock("tinylib==1.0"))
    cli("push", "--no-build", str(folder))
    run_id = json.loads(cli("trigger", "a", "--json").stdout)["run_id"]
    config = load_config(wheels_home)
    with open_store(config) as store:
        stored = store.version_envs.get("a", 1, EnvResolver(config).basis)
    assert stored is not None
    _refuse_parsing(monkeypatch)

    run_scheduler(wheels_home)  # a new scheduler: nothing parsed in this process counts

    with open_store(config) as store:
        assert store.runs.get("a", run_id).state is RunState.SUCCESS
        ti = store.tasks.get("a", run_id, "t")
    assert ti.state is TaskState.SUCCESS and ti.env_key == stored.env_key
    assert (wheels_home / "envcache" / "envs" / stored.env_key).is_dir()


def test_a_changed_basis_derives_its_own_key_and_trusts_no_other(
    cli,
    wheels_home: Path,
    wheelhouse: Wheelhouse,
    make_folder,
    monkeypatch: pytest.MonkeyPatch,
    parses: list[str],
) -> None:
    folder = make_folder({"dag.py": DAG.format(name="a")}, lock=wheelhouse.lock("tinylib==1.0"))
    cli("push", "--no-build", str(folder))
    uv_config = load_config(wheels_home)
    monkeypatch.setenv("ISOLATE_ENV_BUILDER", "virtualenv-pip")  # the admin changed it
    pip_config = load_config(wheels_home)
    uv, pip = EnvResolver(uv_config), EnvResolver(pip_config)
    assert uv.basis != pip.basis
    with open_store(uv_config) as store:
        pushed = store.version_envs.get("a", 1, uv.basis)
        assert pushed is not None
        # A key planted on the push's basis is what a reader on that basis gets: it is read,
        # not computed. A reader on another basis never sees it.
        rows = t.dag_version_envs
        with store.engine.begin() as conn:
            conn.execute(rows.update().values(env_key="f" * 64))
        parses.clear()
        assert uv.for_version(store, "a", 1).key == "f" * 64
        assert parses == []

        derived = pip.for_version(store, "a", 1)

        assert parses == ["requirements.txt"]
        spec = stored_version(store, "a", 1).spec
        assert derived.key == EnvResolver(pip_config).key(spec) != pushed.env_key
        assert derived.key == pip.cache.key_for(EnvResolver(pip_config).lock(spec), _python())
        assert store.version_envs.keys(uv.basis) == {("a", 1): "f" * 64}
        assert store.version_envs.keys(pip.basis) == {("a", 1): derived.key}
        parses.clear()
        assert EnvResolver(pip_config).for_version(store, "a", 1) == derived
        assert parses == []


def _python() -> Interpreter:
    return Interpreter.probe(PYTHON)


# -- versions stored before revision 0005 -------------------------------------------------


def test_versions_pushed_before_0005_get_their_envs_when_first_needed(
    home: Path, make_folder, empty_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(home)
    snapshot = load_folder(make_folder({"dags.py": TWO_DAGS}), settings=config.settings)
    migrate.upgrade(empty_db_url, "0004")
    with Store.open(empty_db_url, check_schema=False) as old:  # this code, on 0004's schema
        for dag in snapshot.dags:
            old.add_version(
                NewVersion(
                    dag_id=dag.spec.dag_id,
                    spec_hash=dag.spec_hash,
                    spec_json=dag.canonical,
                    bundle_hash=snapshot.bundle.hash,
                    bundle=snapshot.bundle.data,
                    lock_hash=dag.spec.lockfile.lock_hash,
                    lock=dag.lock,
                ),
                pushed_by="alice",
                message=None,
            )
    migrate.upgrade(empty_db_url)
    key = EnvResolver(config).key(snapshot.dags[0].spec)  # both DAGs share the folder's lock
    resolver = EnvResolver(config)
    with Store.open(empty_db_url) as store:
        assert store.version_envs.keys(resolver.basis) == {}

        assert resolver.for_version(store, "a", 1).key == key  # read from the stored spec
        assert set(store.version_envs.keys(resolver.basis)) == {("a", 1)}
        roots = gc_roots(store, resolver, keep_versions=1)
        assert roots == {key: "a v1 (latest version)"}
        assert store.version_envs.keys(resolver.basis) == {("a", 1): key, ("b", 1): key}

        _refuse_parsing(monkeypatch)  # from now on, every reader finds them stored
        fresh = EnvResolver(config)
        assert version_keys(store, fresh) == {key: [("a", 1), ("b", 1)]}
        assert fresh.for_version(store, "b", 1).key == key
