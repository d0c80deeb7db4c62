"""Payloads at their size caps fit in the store, and read back unchanged, on every backend.

The caps and where they are enforced (the store itself enforces none; it stores what it is given):

- spec JSON: ``max_spec_bytes`` (4 MiB), measured on the UTF-8 canonical serialization by
  ``isolate push`` and by ``load_document``; refusals are tested in tests/test_format.py
  (``test_size_cap``) and tests/test_dagfile.py;
- lockfile: no cap of its own. The spec embeds the lock's text (``environment.lock``), so the
  largest lockfile is the one that makes the spec exactly ``max_spec_bytes`` long;
- bundle: ``max_bundle_bytes`` (32 MiB). A blob of exactly that size round trips in
  tests/test_store.py (``test_a_blob_at_the_bundle_cap_round_trips``), not repeated here;
- XCom: ``localexec.attempt.DEFAULT_XCOM_MAX_BYTES`` (1 MiB) of the task's result message;
  refusals are tested in tests/test_bootstrap.py and tests/test_supervisor.py.

Payloads mix CJK, emoji (4 bytes in UTF-8, so utf8mb4 on MariaDB/MySQL) and accented Latin
with ASCII, so a wrong character set shows up as a difference on reading back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from isolate.config import Settings
from isolate.errors import UsageError
from isolate.format import canonical_json, load_document, load_object
from isolate.states import TaskState as S
from isolate.store import NewVersion, Store, content_hash, migrate
from isolate.store import tables as t
from isolate.store.store import MAX_MESSAGE
from isolate.validate import lock_digest
from localexec.attempt import DEFAULT_XCOM_MAX_BYTES
from localexec.bootstrap import encode_xcom
from tests.docs import doc_with, environment, python_task

SPEC_CAP = Settings.max_spec_bytes
# 3-byte CJK, a 4-byte emoji, 2-byte Latin and ASCII: 17 characters, 31 UTF-8 bytes.
MIXED = "数据管道 🚀 données ✓ "
# The format allows up to 20,000 characters in a task's doc.
DOC = (MIXED * (20_000 // len(MIXED) + 1))[:20_000]
TASKS = 100
WHEN = datetime(2024, 1, 1, tzinfo=UTC)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def serialized(doc: dict[str, Any]) -> str:
    """The spec JSON ``isolate push`` would store for ``doc``."""
    return canonical_json(load_object(doc))


def padded_to_cap(build: Callable[[str], dict[str, Any]]) -> str:
    """The serialized spec of ``build(padding)`` with ASCII padding that makes it exactly
    ``SPEC_CAP`` bytes long (an ASCII letter adds one byte to the JSON)."""
    short = utf8_len(serialized(build("")))
    assert short < SPEC_CAP
    text = serialized(build("x" * (SPEC_CAP - short)))
    assert utf8_len(text) == SPEC_CAP
    return text


def many_tasks(padding: str) -> dict[str, Any]:
    """A chain of ``TASKS`` python tasks, each with a doc at its length limit."""
    tasks = [
        python_task(
            f"step{i:03d}",
            doc=DOC,
            upstream=[f"step{i - 1:03d}"] if i else [],
            kwargs={"label": f"étape {i} 🚚"},
        )
        for i in range(TASKS)
    ]
    return doc_with(
        tasks,
        dag_id="caps.spec",
        description="Spec at the size cap — 仕様 📐",
        params={"notes": "注释 📝", "padding": padding},
    )


def lock_entry(i: int) -> str:
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    return (
        f"pkg{i:05d}==1.{i}.0 \\\n"
        f"    --hash=sha256:{digest}\n"
        f"    # via 数据-tools 📦 (équipe {i})\n"
    )


def lock_text(entries: int, padding: str) -> str:
    return "".join(lock_entry(i) for i in range(entries)) + f"# {padding}\n"


def lock_doc(lock: str) -> dict[str, Any]:
    return doc_with([python_task("install")], dag_id="caps.lock", environment=environment(lock))


def largest_lock() -> str:
    """Hashed requirement lines, and a final comment, filling a spec to exactly ``SPEC_CAP``."""
    rest = utf8_len(serialized(lock_doc("")))
    # What one entry adds to the spec: its JSON string form (newlines and backslashes escaped).
    entry = utf8_len(json.dumps(lock_entry(99_999), ensure_ascii=False)) - 2
    entries = (SPEC_CAP - rest - 100) // entry
    filled = utf8_len(serialized(lock_doc(lock_text(entries, ""))))
    lock = lock_text(entries, "x" * (SPEC_CAP - filled))
    assert utf8_len(serialized(lock_doc(lock))) == SPEC_CAP
    return lock


def xcom_at_cap() -> str:
    """A string whose result message (``{"xcom": ...}``, as a task sends it) is exactly the cap.

    The message is ASCII-escaped JSON: each character of ``MIXED`` other than ASCII takes 6 bytes,
    the emoji 12 (a surrogate pair).
    """
    empty = len(encode_xcom("", None))
    unit = len(encode_xcom(MIXED, None)) - empty
    repeats, rest = divmod(DEFAULT_XCOM_MAX_BYTES - empty, unit)
    value = MIXED * repeats + "x" * rest
    assert len(encode_xcom(value, DEFAULT_XCOM_MAX_BYTES)) == DEFAULT_XCOM_MAX_BYTES
    return value


# Built once: the payloads are the same on every backend.
@pytest.fixture(scope="module")
def spec_at_cap() -> str:
    return padded_to_cap(many_tasks)


@pytest.fixture(scope="module")
def lock_at_cap() -> str:
    return largest_lock()


@pytest.fixture
def store(empty_db_url: str) -> Iterator[Store]:
    migrate.upgrade(empty_db_url)
    with Store.open(empty_db_url) as opened:
        yield opened


def new_version(spec_json: str, lock: bytes, bundle: bytes = b"bundle") -> NewVersion:
    spec = load_document(spec_json)  # within the cap, as at push
    return NewVersion(
        dag_id=spec.dag_id,
        spec_hash=content_hash(spec_json.encode("utf-8")),
        spec_json=spec_json,
        bundle_hash=content_hash(bundle),
        bundle=bundle,
        lock_hash=spec.lockfile.lock_hash,
        lock=lock,
    )


def test_a_spec_at_the_cap_round_trips(store: Store, spec_at_cap: str) -> None:
    lock = environment()["lock"].encode()
    pushed = store.add_version(
        new_version(spec_at_cap, lock), pushed_by="ünïcode 👩‍💻", message="✓"
    )

    assert pushed.created
    stored = store.get_version("caps.spec")
    assert stored.spec_json == spec_at_cap
    assert stored.spec_hash == content_hash(spec_at_cap.encode("utf-8"))
    assert (stored.pushed_by, stored.message) == ("ünïcode 👩‍💻", "✓")
    assert [task.doc for task in load_document(stored.spec_json).tasks] == [DOC] * TASKS


def test_the_largest_lockfile_a_spec_holds_round_trips(store: Store, lock_at_cap: str) -> None:
    spec_json = serialized(lock_doc(lock_at_cap))
    lock = lock_at_cap.encode("utf-8")
    assert len(lock) > SPEC_CAP * 9 // 10  # most of the spec is the lock

    store.add_version(new_version(spec_json, lock), pushed_by="alice", message=None)

    stored = store.get_version("caps.lock")
    assert stored.spec_json == spec_json
    assert stored.lock_hash == lock_digest(lock_at_cap)
    assert store.get_blob(stored.lock_hash) == lock
    assert load_document(stored.spec_json).lockfile.text == lock_at_cap


def test_an_xcom_at_the_cap_round_trips(store: Store) -> None:
    value = xcom_at_cap()
    message = encode_xcom(value, DEFAULT_XCOM_MAX_BYTES)
    spec_json = serialized(doc_with([python_task("produce")], dag_id="caps.xcom"))
    store.add_version(
        new_version(spec_json, environment()["lock"].encode()), pushed_by="a", message=None
    )
    store.runs.create(
        "caps.xcom",
        run_id="r",
        run_type="manual",
        logical_date=WHEN,
        conf={},
        created_by="a",
        task_ids=["produce"],
    )
    key = ("caps.xcom", "r", "produce")
    for state in (S.SCHEDULED, S.QUEUED, S.RUNNING):
        store.tasks.transition(*key, state)
    # As the scheduler records a success: the value parsed from the task's message.
    store.tasks.transition(*key, S.SUCCESS, expect=S.RUNNING, xcom=json.loads(message)["xcom"])

    assert store.tasks.get(*key).xcom == value
    ti = t.task_instances.c
    with store.engine.connect() as conn:
        raw = conn.execute(sa.select(ti.xcom).where(ti.task_id == "produce")).scalar_one()
    # The column holds the same JSON text the task sent, byte for byte.
    assert b'{"xcom":' + raw.encode("utf-8") + b"}" == message


def test_a_push_message_at_its_cap_fits_and_one_over_is_refused(
    store: Store, spec_at_cap: str
) -> None:
    """A message over MySQL's 64 KiB TEXT column failed there only, with the driver's error:
    every backend now refuses one over ``MAX_MESSAGE`` characters before writing anything."""
    lock = environment()["lock"].encode()
    longest = "✓" * MAX_MESSAGE  # 3 bytes each in UTF-8: 30,000 bytes
    with pytest.raises(UsageError, match=f"at most {MAX_MESSAGE}"):
        store.add_version(new_version(spec_at_cap, lock), pushed_by="me", message=longest + "x")
    assert store.list_versions("caps.spec") == []
    pushed = store.add_version(new_version(spec_at_cap, lock), pushed_by="me", message=longest)
    assert store.get_version("caps.spec", pushed.version.version).message == longest
