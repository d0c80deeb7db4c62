"""The store against real databases: SQLite files, plus servers when configured."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from isolate.errors import NotFoundError, StoreError, UsageError
from isolate.store import NewVersion, Store, VersionEnvRecord, content_hash, migrate
from isolate.store.tables import UTCDateTime

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    migrate.upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as store:
        yield store


def new_version(
    spec: str = '{"dag_id": "etl"}',
    *,
    dag_id: str = "etl",
    bundle: bytes = b"bundle bytes",
    lock: bytes = b"lock bytes",
    env: VersionEnvRecord | None = None,
) -> NewVersion:
    return NewVersion(
        dag_id=dag_id,
        spec_hash=content_hash(spec.encode()),
        spec_json=spec,
        bundle_hash=content_hash(bundle),
        bundle=bundle,
        lock_hash=content_hash(lock),
        lock=lock,
        env=env,
    )


def push(
    store: Store, spec: str = '{"dag_id": "etl"}', *, dag_id: str = "etl", by: str = "alice"
) -> int:
    outcome = store.add_version(new_version(spec, dag_id=dag_id), pushed_by=by, message=None)
    return outcome.version.version


# -- pushing versions -------------------------------------------------------------------------


def test_first_push_creates_version_1(store: Store) -> None:
    outcome = store.add_version(new_version(), pushed_by="alice", message="first")

    assert outcome.created
    v = outcome.version
    assert (v.dag_id, v.version, v.pushed_by, v.message) == ("etl", 1, "alice", "first")
    assert v.spec_json == '{"dag_id": "etl"}'
    assert store.get_version("etl") == v
    assert store.get_dag("etl").is_paused is False
    [entry] = store.list_audit(target="etl")
    assert (entry.actor, entry.action, entry.outcome) == ("alice", "push", "ok")
    assert entry.details == {"version": 1, "spec_hash": v.spec_hash}


def test_pushing_the_same_spec_again_changes_nothing(store: Store) -> None:
    first = store.add_version(new_version(), pushed_by="alice", message="first").version

    again = store.add_version(new_version(), pushed_by="bob", message="again")

    assert not again.created
    assert again.version == first
    assert [v.version for v in store.list_versions("etl")] == [1]
    latest = store.list_audit(target="etl")[0]
    assert (latest.actor, latest.action, latest.outcome) == ("bob", "push", "unchanged")
    assert latest.details == {"version": 1, "spec_hash": first.spec_hash}


def test_changed_spec_then_revert_give_new_versions(store: Store) -> None:
    assert push(store, '{"v": "a"}') == 1
    assert push(store, '{"v": "b"}') == 2
    assert push(store, '{"v": "a"}') == 3  # a revert is a new version, not a rewind

    versions = store.list_versions("etl")
    assert [v.version for v in versions] == [1, 2, 3]
    assert versions[0].spec_hash == versions[2].spec_hash != versions[1].spec_hash
    assert [a.outcome for a in store.list_audit(target="etl")] == ["ok", "ok", "ok"]


def test_changed_bundle_alone_is_a_new_version(store: Store) -> None:
    store.add_version(new_version(bundle=b"code v1"), pushed_by="alice", message=None)

    outcome = store.add_version(new_version(bundle=b"code v2"), pushed_by="alice", message=None)

    assert outcome.created
    assert outcome.version.version == 2


def test_versions_are_per_dag(store: Store) -> None:
    assert push(store, '{"a": 1}', dag_id="a") == 1
    assert push(store, '{"b": 1}', dag_id="b") == 1
    assert push(store, '{"a": 2}', dag_id="a") == 2


def test_new_dag_can_start_paused(store: Store) -> None:
    store.add_version(new_version(), pushed_by="alice", message=None, paused_at_creation=True)
    assert store.get_dag("etl").is_paused

    # Only at creation: a later push leaves the DAG's state alone.
    store.set_paused("etl", False, actor="admin")
    store.add_version(
        new_version('{"v": 2}'), pushed_by="alice", message=None, paused_at_creation=True
    )
    assert not store.get_dag("etl").is_paused


@pytest.mark.parametrize("field", ["bundle_hash", "lock_hash"])
def test_wrong_blob_hash_is_refused_and_nothing_is_stored(store: Store, field: str) -> None:
    good = new_version()
    bad = NewVersion(**{**good.__dict__, field: content_hash(b"something else")})

    with pytest.raises(UsageError, match="does not match its hash"):
        store.add_version(bad, pushed_by="mallory", message=None)

    assert not store.has_blob(good.bundle_hash)
    assert not store.has_blob(good.lock_hash)
    assert store.list_dags() == []
    assert store.list_audit() == []
    with pytest.raises(NotFoundError):
        store.get_dag("etl")


def test_long_spec_round_trips(store: Store) -> None:
    spec = '{"doc": "' + "x" * 200_000 + '"}'  # beyond MySQL's 64 KiB TEXT

    push(store, spec)

    assert store.get_version("etl").spec_json == spec


# -- reading versions and DAGs ----------------------------------------------------------------


def test_get_version_latest_explicit_and_missing(store: Store) -> None:
    push(store, '{"v": 1}')
    push(store, '{"v": 2}')

    assert store.get_version("etl").version == 2
    assert store.get_version("etl", 1).spec_json == '{"v": 1}'
    with pytest.raises(NotFoundError) as err:
        store.get_version("etl", 7)
    assert str(err.value) == "DAG 'etl' has no version 7 (it has versions 1 to 2)"
    with pytest.raises(NotFoundError, match=r"^no DAG 'nope'$"):
        store.get_version("nope")
    with pytest.raises(NotFoundError, match=r"^no DAG 'nope'$"):
        store.get_version("nope", 1)


def test_get_dag_missing(store: Store) -> None:
    with pytest.raises(NotFoundError, match=r"^no DAG 'ghost'$"):
        store.get_dag("ghost")


def test_list_dags_summarises_latest_versions_in_one_query(store: Store) -> None:
    push(store, '{"v": 1}', dag_id="zeta", by="zoe")
    push(store, '{"v": 1}', dag_id="alpha", by="al")
    push(store, '{"v": 2}', dag_id="alpha", by="bea")
    store.set_paused("zeta", True, actor="admin")

    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    summaries = store.list_dags()

    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert [(s.dag_id, s.is_paused, s.latest_version, s.pushed_by) for s in summaries] == [
        ("alpha", False, 2, "bea"),
        ("zeta", True, 1, "zoe"),
    ]
    assert summaries[0].spec_hash == store.get_version("alpha").spec_hash


def test_dag_ids_are_case_sensitive(store: Store) -> None:
    push(store, '{"v": 1}', dag_id="etl")
    push(store, '{"v": 1}', dag_id="ETL")

    assert [s.dag_id for s in store.list_dags()] == ["ETL", "etl"]


def test_timestamps_are_aware_utc_with_microseconds(store: Store) -> None:
    before = datetime.now(UTC)
    created = store.add_version(new_version(), pushed_by="alice", message=None).version
    after = datetime.now(UTC)

    loaded = store.get_version("etl")
    assert loaded.pushed_at == created.pushed_at  # microseconds survive the round trip
    assert loaded.pushed_at.tzinfo is UTC
    assert before <= loaded.pushed_at <= after
    assert store.get_dag("etl").created_at.tzinfo is UTC
    assert store.list_dags()[0].pushed_at == created.pushed_at
    assert store.list_audit()[0].at.tzinfo is UTC


def test_utc_datetime_converts_other_zones_and_refuses_naive() -> None:
    column = UTCDateTime()
    dialect = sa.create_engine("sqlite://").dialect
    plus_two = datetime(2024, 1, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert column.process_bind_param(plus_two, dialect) == datetime(2024, 1, 1, 12, 0, 0, 5)
    with pytest.raises(ValueError, match="naive"):
        column.process_bind_param(datetime(2024, 1, 1), dialect)


# -- pausing ----------------------------------------------------------------------------------


def test_pause_and_unpause_are_audited(store: Store) -> None:
    push(store)

    assert store.set_paused("etl", True, actor="carol") is True
    assert store.get_dag("etl").is_paused
    assert store.set_paused("etl", True, actor="carol") is False
    assert store.set_paused("etl", False, actor="dave") is True
    assert not store.get_dag("etl").is_paused

    audit = [(a.actor, a.action, a.outcome) for a in store.list_audit(target="etl")]
    assert audit == [
        ("dave", "unpause", "ok"),
        ("carol", "pause", "unchanged"),
        ("carol", "pause", "ok"),
        ("alice", "push", "ok"),
    ]


def test_pausing_an_unknown_dag(store: Store) -> None:
    with pytest.raises(NotFoundError, match=r"^no DAG 'ghost'$"):
        store.set_paused("ghost", True, actor="carol")
    assert store.list_audit() == []


# -- blobs ------------------------------------------------------------------------------------


def test_blobs_are_content_addressed_and_stored_once(store: Store) -> None:
    data = bytes(range(256)) * 1000
    digest = store.put_blob("bundle", data)

    assert digest == content_hash(data)
    assert store.put_blob("bundle", data) == digest
    assert store.has_blob(digest)
    assert store.get_blob(digest) == data
    with store.engine.connect() as conn:
        count = conn.execute(sa.text("SELECT COUNT(*) FROM blobs")).scalar_one()
    assert count == 1


def test_pushes_share_blobs(store: Store) -> None:
    push(store, '{"v": 1}', dag_id="a")
    push(store, '{"v": 1}', dag_id="b")  # same bundle and lock bytes

    with store.engine.connect() as conn:
        count = conn.execute(sa.text("SELECT COUNT(*) FROM blobs")).scalar_one()
    assert count == 2


def test_missing_blob_and_bad_kind(store: Store) -> None:
    digest = content_hash(b"never stored")
    assert not store.has_blob(digest)
    with pytest.raises(NotFoundError, match=f"no blob {digest}"):
        store.get_blob(digest)
    with pytest.raises(UsageError, match="unknown blob kind 'wheel'"):
        store.put_blob("wheel", b"x")


# -- versions' envs ---------------------------------------------------------------------------


def env_on(basis: str, key: str) -> VersionEnvRecord:
    return VersionEnvRecord(basis=basis, env_key=key, lock_json='{"entries": ["\u00e9\U0001f600"]}')


def test_a_push_stores_its_env_beside_the_version_not_in_it(store: Store) -> None:
    plain = store.add_version(new_version(), pushed_by="alice", message=None).version
    with_env = store.add_version(
        new_version('{"v": 2}', env=env_on("b1", "1" * 64)), pushed_by="alice", message=None
    ).version

    assert store.version_envs.get("etl", 2, "b1") == env_on("b1", "1" * 64)
    assert store.version_envs.get("etl", 2, "b2") is None
    assert store.version_envs.get("etl", 1, "b1") is None
    assert store.version_envs.keys("b1") == {("etl", 2): "1" * 64}
    assert store.version_envs.keys("b2") == {}
    assert store.get_version("etl", 2) == with_env  # the version's own columns, as pushed
    assert [v.version for v in store.list_versions("etl")] == [plain.version, 2]


def test_an_unchanged_push_adds_its_basis_and_keeps_what_is_stored(store: Store) -> None:
    store.add_version(new_version(env=env_on("b1", "1" * 64)), pushed_by="alice", message=None)

    again = store.add_version(
        new_version(env=env_on("b1", "2" * 64)), pushed_by="bob", message=None
    )
    other = store.add_version(
        new_version(env=env_on("b2", "3" * 64)), pushed_by="bob", message=None
    )

    assert not again.created and not other.created
    assert store.version_envs.get("etl", 1, "b1") == env_on("b1", "1" * 64)  # never replaced
    assert store.version_envs.get("etl", 1, "b2") == env_on("b2", "3" * 64)


def test_envs_saved_later_fill_only_what_is_missing(store: Store) -> None:
    push(store)  # as a version stored before its envs were
    push(store, '{"v": 2}')

    assert store.version_envs.save([]) == 0
    added = store.version_envs.save(
        [
            ("etl", 1, env_on("b1", "1" * 64)),
            ("etl", 2, env_on("b1", "2" * 64)),
            ("etl", 1, env_on("b1", "9" * 64)),  # the same version and basis again
        ]
    )

    assert added == 2
    assert store.version_envs.save([("etl", 1, env_on("b1", "8" * 64))]) == 0
    assert store.version_envs.keys("b1") == {("etl", 1): "1" * 64, ("etl", 2): "2" * 64}
    with pytest.raises(NotFoundError, match="DAG 'etl' has no version 3"):
        store.version_envs.save(
            [("etl", 1, env_on("b2", "1" * 64)), ("etl", 3, env_on("b2", "1" * 64))]
        )
    assert store.version_envs.keys("b2") == {}  # one transaction: nothing of it was kept


# -- audit ------------------------------------------------------------------------------------


def test_audit_is_newest_first_filtered_and_limited(store: Store) -> None:
    store.audit("alice", "trigger", "etl", details={"run": 1})
    store.audit("bob", "denied", "billing", outcome="denied", details={"why": "not owner"})
    store.audit("carol", "gc", None)

    everything = store.list_audit()
    assert [a.action for a in everything] == ["gc", "denied", "trigger"]
    assert everything[0].id > everything[1].id > everything[2].id
    assert everything[1].details == {"why": "not owner"}
    assert everything[0].target is None and everything[0].details == {}
    assert [a.actor for a in store.list_audit(target="etl")] == ["alice"]
    assert [a.actor for a in store.list_audit(limit=2)] == ["carol", "bob"]
    with pytest.raises(UsageError, match="unknown audit outcome"):
        store.audit("x", "y", None, outcome="maybe")


# -- backends and errors ----------------------------------------------------------------------


def test_sqlite_connections_are_set_up_for_many_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'isolate.db'}"
    migrate.upgrade(url)
    with Store.open(url) as store:
        with store.engine.connect() as conn:
            pragma = conn.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar() == 30_000
            assert pragma("PRAGMA foreign_keys").scalar() == 1
        statements: list[str] = []
        sa.event.listen(
            store.engine, "before_cursor_execute", lambda *args: statements.append(args[2])
        )
        push(store)
        store.get_version("etl")
    assert statements[0] == "BEGIN IMMEDIATE"
    assert statements.count("BEGIN IMMEDIATE") == 1  # reads begin deferred
    assert "BEGIN" in statements


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://isolate:secret@127.0.0.1:1/isolate",
        "postgresql+psycopg://isolate:secret@127.0.0.1:1/isolate",
        "mysql+pymysql://isolate:secret@127.0.0.1:1/isolate",
    ],
)
def test_unreachable_database_is_one_line_without_the_password(url: str) -> None:
    with pytest.raises(StoreError) as err:
        Store.open(url)

    message = str(err.value)
    assert "secret" not in message
    assert "\n" not in message
    assert "isolate:***@127.0.0.1:1/isolate" in message
    # Either the driver is installed and the connection is refused, or it is not installed.
    assert message.startswith(("cannot connect to database", "cannot use database"))


def test_sqlite_file_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(
        StoreError, match=r"^cannot connect to database sqlite:///.*: unable to open"
    ):
        Store.open(f"sqlite:///{tmp_path / 'missing' / 'isolate.db'}")


def test_invalid_url_is_not_echoed() -> None:
    with pytest.raises(StoreError, match="not a valid database URL") as err:
        Store.open("::not a url:secret")
    assert "secret" not in str(err.value)


# -- concurrency ------------------------------------------------------------------------------

PUSHER = r"""
import sys, time
from pathlib import Path
from isolate.store import NewVersion, Store, content_hash

url, worker, gate = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
bundle = b"one bundle for everyone"
lock = b"lock of worker %d" % worker
with Store.open(url) as store:
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    for n in range(10):
        spec = '{"worker": %d, "n": %d}' % (worker, n)
        outcome = store.add_version(
            NewVersion(
                dag_id="shared",
                spec_hash=content_hash(spec.encode()),
                spec_json=spec,
                bundle_hash=content_hash(bundle),
                bundle=bundle,
                lock_hash=content_hash(lock),
                lock=lock,
            ),
            pushed_by="worker-%d" % worker,
            message=None,
        )
        assert outcome.created, outcome
        print(outcome.version.version, flush=True)
"""


@pytest.mark.slow
def test_concurrent_pushers_get_distinct_consecutive_versions(db_url: str, tmp_path: Path) -> None:
    workers, pushes = 8, 10
    gate = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUSHER, db_url, str(worker), str(gate)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for worker in range(workers)
    ]
    time.sleep(1.0)  # let every process import and connect, then start them together
    gate.touch()
    results = [proc.communicate(timeout=180) for proc in procs]

    for proc, (_out, err) in zip(procs, results, strict=True):
        assert "database is locked" not in err
        assert proc.returncode == 0, err
    seen = [int(line) for out, _err in results for line in out.split()]
    expected = list(range(1, workers * pushes + 1))
    assert sorted(seen) == expected
    with Store.open(db_url) as store:
        assert [v.version for v in store.list_versions("shared")] == expected
        assert store.get_dag("shared").dag_id == "shared"
        audit = store.list_audit(target="shared", limit=1000)
        assert len(audit) == workers * pushes
        assert {a.outcome for a in audit} == {"ok"}
        with store.engine.connect() as conn:
            blobs = conn.execute(sa.text("SELECT COUNT(*) FROM blobs")).scalar_one()
        assert blobs == 1 + workers  # one shared bundle, one lock per worker


def test_a_blob_at_the_bundle_cap_round_trips(store: Store) -> None:
    """32 MiB (the default max_bundle_bytes) of incompressible bytes, on every backend:
    chunks keep each statement far below MariaDB's default 16 MiB packet limit."""
    from isolate.config import Settings

    data = os.urandom(Settings.max_bundle_bytes)
    digest = store.put_blob("bundle", data)
    assert store.get_blob(digest) == data


def test_a_damaged_blob_is_reported_not_returned(store: Store) -> None:
    from isolate.errors import StoreError
    from isolate.store import tables

    digest = store.put_blob("lock", b"x" * 3000)
    with store.engine.begin() as conn:
        conn.execute(
            tables.blob_chunks.update().where(tables.blob_chunks.c.hash == digest).values(data=b"y")
        )
    with pytest.raises(StoreError, match="damaged in the database"):
        store.get_blob(digest)
