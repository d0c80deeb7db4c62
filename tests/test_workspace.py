"""Bundles prepared off the scheduler's loop: compiled by a bounded, unprivileged process whose
answer is checked, then read-only in place. Real processes, real OS users, real interpreters."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import struct
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from isolate.bundles import Bundle, make_bundle
from isolate.config import Config, Settings
from isolate.errors import NotFoundError, StoreError
from isolate.store import Store
from isolate.tenancy import Tenant
from localexec.compiling import (
    HEADER,
    CompileLimits,
    StreamRefused,
    compile_bytecode,
    compile_user,
    read_stream,
)
from localexec.workspace import BundlePreparationError, Workspace, _FairQueue
from tests.conftest import PYTHON
from tests.osusers import os_users, unique

USER = unique("isows-tenant")
TAG = "cpython-311"
CAP = 32 * 1024 * 1024
SLOW = "x = f'" + "{a}" * 100_000 + "'\n"  # quadratic in the 3.11 compiler: seconds
HUNGRY = "x = [" + "1," * 2_000_000 + "]\n"  # a MemoryError under 256 MiB of address space

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="compiling as another user needs root")


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A root-owned 0711 tree other users can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="isolate-workspace-"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tenant_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("creating users needs root")
    with os_users(USER) as made:
        yield made[USER]


@pytest.fixture
def tenant(tenant_user: pwd.struct_passwd) -> Tenant:
    return Tenant(name="acme", dags=("acme_*",), pushers=(), run_as=tenant_user.pw_name)


@pytest.fixture
def place(base: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh 0755 directory under ``base`` for one test."""
    path = base / request.node.name.replace("[", "-").replace("]", "")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    return path


def workspace(place: Path, **kwargs: Any) -> Workspace:
    home = place / "home"
    home.mkdir(mode=0o711)
    return Workspace(Config(home=home, settings=Settings()), **kwargs)


class Blobs:
    """The part of a Store a workspace uses; ``gate`` holds ``get_blob`` until it is set."""

    def __init__(self, *bundles: Bundle, gate: threading.Event | None = None) -> None:
        self.data = {bundle.hash: bundle.data for bundle in bundles}
        self.gate = gate
        self.calls = 0
        self.fail: Exception | None = None

    def get_blob(self, digest: str) -> bytes:
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(30)
        if self.fail is not None:
            raise self.fail
        return self.data[digest]

    @property
    def store(self) -> Store:
        return cast(Store, self)


def bundle(place: Path, files: dict[str, str], name: str = "dags") -> Bundle:
    folder = place / name
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return make_bundle(folder, max_bytes=CAP)


MODULES = {
    "dag.py": """\
        import pkg.helpers

        def where():
            return where.__code__.co_filename
    """,
    "pkg/__init__.py": "",
    "pkg/helpers.py": "def f():\n    return 1\n",
    "broken.py": "def f(:\n",
    "notes.txt": "not a module\n",
}


def executable(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    os.chmod(path, 0o755)
    return path


def recording_python(place: Path) -> tuple[Path, Path]:
    """An interpreter that writes who runs it (uid, then groups) to a file, then is Python."""
    record = place / "who"
    record.touch()
    os.chmod(record, 0o666)
    script = executable(
        place / "python",
        f"""\
        #!/bin/sh
        /usr/bin/id -u > {record}
        /usr/bin/id -G >> {record}
        exec {PYTHON} "$@"
        """,
    )
    return script, record


def as_user(
    user: pwd.struct_passwd, *argv: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pycs(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*.pyc"))


# --- in the background, once, as the tenant's user -------------------------------------------


@root_only
def test_a_bundle_is_prepared_once_in_the_background(
    place: Path, tenant: Tenant, tenant_user: pwd.struct_passwd
) -> None:
    made = bundle(place, MODULES)
    gate = threading.Event()
    blobs = Blobs(made, gate=gate)
    python, record = recording_python(place)
    ws = workspace(place)

    started = time.monotonic()
    asks = [ws.request_bundle(blobs.store, made.hash, tenant, python=python) for _ in range(20)]
    assert asks == [None] * 20
    assert time.monotonic() - started < 1.0  # none of them waited for the preparation
    gate.set()
    final = ws.wait_bundle(blobs.store, made.hash, tenant, python=python, timeout=60)
    assert ws.request_bundle(blobs.store, made.hash, tenant, python=python) == final
    assert blobs.calls == 1  # asked 22 times, prepared once

    uid, groups = record.read_text().split("\n", 1)
    assert int(uid) == tenant_user.pw_uid
    assert {int(g) for g in groups.split()} == {tenant_user.pw_gid}  # none of root's

    assert final.parent == ws.bundles / "tenants" / "acme"
    assert pycs(final) == [
        f"__pycache__/dag.{TAG}.pyc",
        f"pkg/__pycache__/__init__.{TAG}.pyc",
        f"pkg/__pycache__/helpers.{TAG}.pyc",
    ]  # broken.py does not compile: its task reports the SyntaxError
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no staging left
    for path in [final, *final.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert path.lstat().st_uid == 0
        assert mode == (0o555 if path.is_dir() else 0o444), path


@root_only
def test_its_bytecode_is_what_the_tenants_tasks_import(
    place: Path, tenant: Tenant, tenant_user: pwd.struct_passwd
) -> None:
    made = bundle(place, MODULES)
    ws = workspace(place)
    final = ws.wait_bundle(Blobs(made).store, made.hash, tenant, python=Path(PYTHON), timeout=60)

    probe = "import dag; print(dag.where())"
    imported = as_user(tenant_user, PYTHON, "-v", "-c", probe, env={"PYTHONPATH": str(final)})
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == str(final / "dag.py")  # compiled as if in place
    for module in ("__pycache__/dag", "pkg/__pycache__/helpers"):
        assert f"code object from '{final}/{module}.{TAG}.pyc'" in imported.stderr

    broken = as_user(tenant_user, PYTHON, "-c", "import broken", env={"PYTHONPATH": str(final)})
    assert "SyntaxError" in broken.stderr
    assert f"{final}/broken.py" in broken.stderr


@root_only
def test_without_a_tenant_root_compiles_as_nobody(place: Path) -> None:
    made = bundle(place, {"dag.py": "x = 1\n"})
    python, record = recording_python(place)
    ws = workspace(place)
    final = ws.wait_bundle(Blobs(made).store, made.hash, None, python=python, timeout=60)
    assert final.parent == ws.bundles
    assert int(record.read_text().split()[0]) == pwd.getpwnam("nobody").pw_uid
    assert pycs(final) == [f"__pycache__/dag.{TAG}.pyc"]


def test_who_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert compile_user("acme-user") == "acme-user"
    assert compile_user(None) == "nobody"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert compile_user("acme-user") is None  # its own user: only root switches users
    assert compile_user(None) is None


# --- bounded: time, memory, output ------------------------------------------------------------


@root_only
def test_a_module_slow_to_compile_is_cut_off_and_the_bundle_is_ready_without_bytecode(
    place: Path, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    made = bundle(place, {"dag.py": "x = 1\n", "slow.py": SLOW})
    ws = workspace(place, compile_limits=CompileLimits(timeout=0.5))
    blobs = Blobs(made)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="isolate.workspace"):
        assert ws.request_bundle(blobs.store, made.hash, tenant, python=Path(PYTHON)) is None
        assert time.monotonic() - started < 0.4  # the loop does not wait for it
        final = ws.wait_bundle(blobs.store, made.hash, tenant, python=Path(PYTHON))
    assert time.monotonic() - started < 4  # compiling it takes several seconds
    assert pycs(final) == []
    assert (final / "slow.py").is_file()
    assert "did not finish in time" in caplog.text


@root_only
def test_a_module_that_exhausts_memory_is_skipped(place: Path, tenant: Tenant) -> None:
    made = bundle(place, {"dag.py": "x = 1\n", "hungry.py": HUNGRY})
    ws = workspace(place, compile_limits=CompileLimits(memory=256 << 20))
    final = ws.wait_bundle(Blobs(made).store, made.hash, tenant, python=Path(PYTHON), timeout=60)
    assert pycs(final) == [f"__pycache__/dag.{TAG}.pyc"]


# --- nothing the compiler answers is trusted -------------------------------------------------


def field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


PYC = b"\xa7\r\r\n" + b"\x01\x00\x00\x00" + b"h" * 8 + b"code"


def stream(*records: tuple[bytes, bytes], tag: bytes = TAG.encode(), end: bool = True) -> bytes:
    body = b"".join(field(rel) + field(pyc) for rel, pyc in records)
    return HEADER + field(tag) + body + (field(b"") if end else b"")


SENT = {"dag.py", "pkg/helpers.py"}


def test_a_well_formed_answer_is_read() -> None:
    answer = stream((b"dag.py", PYC), (b"pkg/helpers.py", PYC))
    assert read_stream(answer, SENT) == (TAG, {"dag.py": PYC, "pkg/helpers.py": PYC})
    assert read_stream(stream(), SENT) == (TAG, {})  # nothing compiled


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (stream((b"../dag.py", PYC)), "not a module's relative path"),
        (stream((b"pkg/../../etc/x.py", PYC)), "not a module's relative path"),
        (stream((b"/etc/cron.d/x.py", PYC)), "not a module's relative path"),
        (stream((b"pkg//helpers.py", PYC)), "not a module's relative path"),
        (stream((b"./dag.py", PYC)), "not a module's relative path"),
        (stream((b"dag.pyc", PYC)), "not a module's relative path"),
        (stream((b"dag.py\x00", PYC)), "not a module's relative path"),
        (stream((b"other.py", PYC)), "not a module of the bundle"),
        (stream((b"\xff.py", PYC)), "not UTF-8"),
        (stream((b"dag.py", PYC), (b"dag.py", PYC)), "twice"),
        (stream((b"dag.py", PYC[:12])), "header"),
        (stream((b"dag.py", PYC[:4] + b"\x03\x00\x00\x00" + PYC[8:])), "header"),  # checked
        (stream((b"dag.py", PYC[:4] + b"\x00\x00\x00\x00" + PYC[8:])), "header"),  # timestamp
        (stream((b"dag.py", PYC), (b"pkg/helpers.py", b"\x00" + PYC[1:])), "another Python"),
        (stream(tag=b"../../x"), "not a cache tag"),
        (stream(tag=b"cpython-311/x"), "not a cache tag"),
        (stream((b"dag.py", PYC), end=False), "truncated"),
        (stream((b"dag.py", PYC))[:-9], "truncated"),
        (stream() + b"x", "after its end"),
        (b"", "header"),
        (b"isolate-pyc 2\n" + stream()[len(HEADER) :], "header"),
    ],
)
def test_a_forged_answer_is_refused(answer: bytes, why: str) -> None:
    with pytest.raises(StreamRefused, match=why):
        read_stream(answer, SENT)


FORGER = f"""\
    #!{PYTHON} -I
    import struct, sys
    def field(data):
        return struct.pack(">I", len(data)) + data
    pyc = {PYC!r}
    out = sys.stdout.buffer
"""


@root_only
@pytest.mark.parametrize(
    ("forgery", "why"),
    [
        (
            "out.write({header!r} + field(b'cpython-311') + field(b'../../../escaped.py')"
            " + field(pyc) + field(b''))",
            "not a module's relative path",
        ),
        (
            "out.write({header!r} + field(b'cpython-311') + field(b'dag.py') + field(pyc)"
            " + field(b'../pkg/x.py') + field(pyc) + field(b''))",
            "not a module's relative path",
        ),
        ("out.write({header!r} + field(b'../../escaped') + field(b''))", "not a cache tag"),
        ("while True:\n        out.write(b'x' * 65536)", "answer exceeds"),
        ("import time\n    time.sleep(60)", "did not finish in time"),
        ("import os\n    os.kill(os.getpid(), 11)", "exited with signal 11"),
        ("out.write({header!r})\n    sys.exit(1)", "exited with status 1"),
    ],
    ids=["traversal", "traversal-after-a-good-one", "tag", "oversize", "stall", "crash", "exit"],
)
def test_a_forging_compiler_writes_nothing(
    place: Path, tenant: Tenant, forgery: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    made = bundle(place, {"dag.py": "x = 1\n", "pkg/__init__.py": ""})
    forger = executable(place / "forger", FORGER + "    " + forgery.format(header=HEADER) + "\n")
    limits = CompileLimits(timeout=3, output_ratio=1, output_slack=4096)
    ws = workspace(place, compile_limits=limits)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="isolate.workspace"):
        final = ws.wait_bundle(Blobs(made).store, made.hash, tenant, python=forger, timeout=60)
    assert time.monotonic() - started < 8
    assert why in caplog.text
    assert pycs(final) == []
    assert not list(place.rglob("escaped*"))
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]


def test_compile_bytecode_never_raises(place: Path, caplog: pytest.LogCaptureFixture) -> None:
    staging = place / "staging"
    staging.mkdir()
    (staging / "dag.py").write_text("x = 1\n")
    with caplog.at_level(logging.WARNING, logger="isolate.workspace"):
        missing = compile_bytecode(
            staging, place / "final", python=place / "no-python", user=USER + "-gone"
        )
        unrunnable = compile_bytecode(
            staging, place / "final", python=place / "no-python", user=None
        )
    assert pycs(staging) == []
    itself = compile_bytecode(staging, place / "final", python=Path(PYTHON), user=None)
    assert itself.written == ("dag.py",)  # as this process's user: no switch
    assert missing.problem == f"no user {USER + '-gone'!r} to compile as"
    assert unrunnable.problem is not None and "No such file" in unrunnable.problem


# --- failures are reported to the asker --------------------------------------------------------


def test_a_corrupt_bundle_fails_its_next_ask_then_is_retried(place: Path) -> None:
    made = bundle(place, {"dag.py": "x = 1\n"})
    blobs = Blobs(made)
    blobs.data[made.hash] = made.data[:-1024]  # truncated in the database
    ws = workspace(place, retry_failed_after=0.5)
    assert ws.request_bundle(blobs.store, made.hash, python=Path(PYTHON)) is None
    with pytest.raises(BundlePreparationError, match=f"code bundle {made.hash}: bundle hash"):
        ws.wait_bundle(blobs.store, made.hash, python=Path(PYTHON), timeout=60)
    with pytest.raises(BundlePreparationError):  # still reported, not prepared again
        ws.request_bundle(blobs.store, made.hash, python=Path(PYTHON))
    assert blobs.calls == 1
    time.sleep(0.6)
    blobs.data[made.hash] = made.data  # repaired
    assert ws.request_bundle(blobs.store, made.hash, python=Path(PYTHON)) is None
    assert ws.wait_bundle(blobs.store, made.hash, python=Path(PYTHON), timeout=60).is_dir()
    assert blobs.calls == 2
    assert not [p for p in ws.bundles.iterdir() if p.name.startswith(".")]


def test_a_missing_blob_fails_with_a_clear_message(place: Path) -> None:
    made = bundle(place, {"dag.py": "x = 1\n"})
    blobs = Blobs(made)
    blobs.fail = NotFoundError(f"no blob {made.hash}")
    ws = workspace(place)
    with pytest.raises(BundlePreparationError) as raised:
        ws.wait_bundle(blobs.store, made.hash, python=Path(PYTHON), timeout=60)
    assert str(raised.value) == f"cannot prepare the code bundle {made.hash}: no blob {made.hash}"


def test_a_database_failure_is_reported_once_then_retried(place: Path) -> None:
    made = bundle(place, {"dag.py": "x = 1\n"})
    blobs = Blobs(made)
    blobs.fail = StoreError("database is locked")
    ws = workspace(place)
    with pytest.raises(StoreError, match="database is locked"):
        ws.wait_bundle(blobs.store, made.hash, python=Path(PYTHON), timeout=60)
    blobs.fail = None
    assert ws.wait_bundle(blobs.store, made.hash, python=Path(PYTHON), timeout=60).is_dir()


def test_a_tenant_mapped_to_a_missing_user_fails_the_ask(place: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("tenant bundle directories are given to the tenant's group by root")
    made = bundle(place, {"dag.py": "x = 1\n"})
    ghost = Tenant(name="ghost", dags=("g_*",), pushers=(), run_as="isows-no-such-user")
    ws = workspace(place)
    with pytest.raises(BundlePreparationError, match="there is no such user"):
        ws.request_bundle(Blobs(made).store, made.hash, ghost, python=Path(PYTHON))


def test_waiting_too_long_is_an_error(place: Path) -> None:
    made = bundle(place, {"dag.py": "x = 1\n"})
    gate = threading.Event()
    blobs = Blobs(made, gate=gate)
    ws = workspace(place)
    try:
        with pytest.raises(BundlePreparationError, match="still being prepared after 0.2 s"):
            ws.wait_bundle(blobs.store, made.hash, python=Path(PYTHON), timeout=0.2)
    finally:
        gate.set()


# --- fair between tenants ------------------------------------------------------------------------


def test_one_tenants_slow_bundles_hold_one_worker_and_delay_only_it() -> None:
    queue = _FairQueue(2, idle=0.5)
    release = threading.Event()
    ran: list[str] = []
    done = {name: threading.Event() for name in ("a1", "a2", "a3", "b1", "none1")}

    def job(name: str, wait: bool = False) -> Any:
        def run() -> None:
            if wait:
                release.wait(30)
            ran.append(name)
            done[name].set()

        return run

    queue.submit("a", job("a1", wait=True))
    queue.submit("a", job("a2"))
    queue.submit("a", job("a3"))
    queue.submit("b", job("b1"))
    queue.submit(None, job("none1"))
    assert done["b1"].wait(10) and done["none1"].wait(10)
    assert ran == ["b1", "none1"] or ran == ["none1", "b1"]  # a's second waits for its first
    release.set()
    assert done["a3"].wait(10)
    assert ran[2:] == ["a1", "a2", "a3"]
    deadline = time.monotonic() + 10
    while queue._threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queue._threads == 0  # idle workers end
