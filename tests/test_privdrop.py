"""Tasks as a mapped OS user: a real user made by the test, real forks, real permission checks."""

from __future__ import annotations

import grp
import os
import pickle
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from envcache.cache import EnvCache
from envcache.interpreter import Interpreter
from envcache.lockfile import parse_requirements
from localexec.attempt import Attempt, make_context
from localexec.runtime import RuntimeFiles, install_runtime
from localexec.spares import SpareKind, spawn, start_warm
from localexec.supervisor import reader_gid, run, wait
from tests.conftest import PYTHON
from tests.localexec_support import LOGICAL_DATE
from tests.osusers import os_users, unique

USER = unique("isodrop-task")
EXTRA_GROUP = unique("isodrop-extra")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture(scope="module")
def task_user() -> Iterator[pwd.struct_passwd]:
    with os_users(USER, groups=(EXTRA_GROUP,)) as made:
        yield made[USER]


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A root-owned 0711 tree the task user can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="isolate-privdrop-"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def env_python(base: Path) -> Path:
    cache = EnvCache(base / "envcache", offline=True)
    return cache.ensure(parse_requirements(""), Interpreter.probe(PYTHON)).python


@pytest.fixture(scope="module")
def runtime(base: Path) -> RuntimeFiles:
    return install_runtime(base / "runtime")


PROBE = """
    import os, json

    def probe(secret):
        try:
            open(secret).read()
            read_secret = True
        except PermissionError:
            read_secret = False
        try:
            os.setuid(0)
            regained = True
        except PermissionError:
            regained = False
        status = dict(
            line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
            if ":\\t" in line
        )
        return {
            "resuid": list(os.getresuid()),
            "resgid": list(os.getresgid()),
            "groups": sorted(os.getgroups()),
            "regained": regained,
            "read_secret": read_secret,
            "no_new_privs": status["NoNewPrivs"].strip(),
            "cwd_owner": os.stat(".").st_uid,
            "home": os.environ["HOME"],
            "umask": oct(os.umask(0)),
        }
"""


def attempt(
    base: Path, env_python: Path, runtime: RuntimeFiles, name: str, **fields: object
) -> Attempt:
    bundle = base / f"bundle-{name}"
    bundle.mkdir(mode=0o755)
    (bundle / "probe.py").write_text(textwrap.dedent(PROBE))
    os.chmod(bundle / "probe.py", 0o644)
    work = base / f"work-{name}"
    work.mkdir(mode=0o700)
    options: dict[str, object] = {
        "kind": "python",
        "python": env_python,
        "bootstrap": runtime.bootstrap,
        "bundle_dir": bundle,
        "sdk_dir": runtime.sdk_dir,
        "work_dir": work,
        "log_path": base / f"{name}.log",
        "context": make_context(
            dag_id="d", task_id="t", run_id="r", logical_date=LOGICAL_DATE, try_number=1
        ),
        "callable": "probe:probe",
        "run_as": USER,
    }
    options.update(fields)
    return Attempt(**options)  # type: ignore[arg-type]


def test_the_task_runs_as_the_user_and_cannot_regain_root(
    task_user: pwd.struct_passwd, base: Path, env_python: Path, runtime: RuntimeFiles
) -> None:
    secret = base / "scheduler-secret"
    secret.write_text("database password")
    os.chmod(secret, 0o600)
    outcome = run(attempt(base, env_python, runtime, "probe", kwargs={"secret": str(secret)}))
    assert outcome.ok, (outcome.message, outcome.start_error, (base / "probe.log").read_text())
    seen = outcome.xcom
    uid, gid = task_user.pw_uid, task_user.pw_gid
    assert seen["resuid"] == [uid, uid, uid] and seen["resgid"] == [gid, gid, gid]
    assert seen["groups"] == sorted({gid, grp.getgrnam(EXTRA_GROUP).gr_gid})  # none of root's
    assert seen["regained"] is False and seen["read_secret"] is False
    assert seen["no_new_privs"] == "1"
    assert seen["cwd_owner"] == uid and seen["home"] == str(base / "work-probe")
    assert seen["umask"] == "0o77"
    assert f"user: {USER} (uid {uid}, gid {gid})" in (base / "probe.log").read_text()


def test_a_warm_start_runs_as_the_user_too(
    task_user: pwd.struct_passwd, base: Path, env_python: Path, runtime: RuntimeFiles
) -> None:
    secret = base / "warm-secret"
    secret.write_text("database password")
    os.chmod(secret, 0o600)
    made = attempt(base, env_python, runtime, "warm", kwargs={"secret": str(secret)})
    spare = spawn(SpareKind.of(made))
    # The spare dropped its privileges before the attempt existed.
    deadline = time.monotonic() + 10
    while psutil.Process(spare.pid).uids().real != task_user.pw_uid:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    running = start_warm(made, spare, reader_gid=reader_gid(made))
    assert running is not None
    outcome = wait(running)
    assert outcome.ok, (outcome.message, made.log_path.read_text())
    seen = outcome.xcom
    uid, gid = task_user.pw_uid, task_user.pw_gid
    assert seen["resuid"] == [uid, uid, uid] and seen["resgid"] == [gid, gid, gid]
    assert seen["groups"] == sorted({gid, grp.getgrnam(EXTRA_GROUP).gr_gid})
    assert seen["regained"] is False and seen["read_secret"] is False
    assert seen["no_new_privs"] == "1" and seen["umask"] == "0o77"
    assert seen["cwd_owner"] == uid and seen["home"] == str(base / "work-warm")
    log = made.log_path.read_text()
    assert f"user: {USER} (uid {uid}, gid {gid})  start: warm" in log
    info = made.log_path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, gid, 0o640)


def test_an_idle_spare_dies_with_its_supervisor(
    task_user: pwd.struct_passwd, base: Path, env_python: Path, runtime: RuntimeFiles
) -> None:
    kind = SpareKind.of(attempt(base, env_python, runtime, "idle"))
    # Its privileges dropped and its death signal armed before the supervisor exits.
    started = "from localexec.spares import spawn\nimport time\npid = spawn(given).pid\n"
    assert_dies_with_its_supervisor(kind, started + "time.sleep(0.5)\n")


def test_root_is_never_a_run_as_user(base: Path, env_python: Path, runtime: RuntimeFiles) -> None:
    outcome = run(attempt(base, env_python, runtime, "root", run_as="root"))
    assert outcome.start_error is not None
    assert "refusing to run a task as 'root' (uid 0)" in outcome.start_error


def test_the_task_cannot_write_into_its_env_or_bundle(
    task_user: pwd.struct_passwd, base: Path, env_python: Path, runtime: RuntimeFiles
) -> None:
    script = f"""
        import os
        def probe():
            denied = []
            for target in ({str(env_python.parent.parent)!r}, os.path.dirname(__file__)):
                try:
                    open(os.path.join(target, "planted"), "w")
                except PermissionError:
                    denied.append(target)
            return len(denied)
    """
    made = attempt(base, env_python, runtime, "write")
    (made.bundle_dir / "probe.py").write_text(textwrap.dedent(script))
    outcome = run(made)
    assert outcome.ok, (made.log_path.read_text(), outcome.start_error)
    assert outcome.xcom == 2


def test_the_task_dies_with_its_supervisor(
    task_user: pwd.struct_passwd, base: Path, env_python: Path, runtime: RuntimeFiles
) -> None:
    made = attempt(
        base, env_python, runtime, "orphan", kind="command", command=["sleep", "30"], callable=None
    )
    assert_dies_with_its_supervisor(
        made, "from localexec.supervisor import start\npid = start(given).pid\n"
    )


def assert_dies_with_its_supervisor(given: object, start: str) -> None:
    """Run ``start`` (which sets ``pid`` from the pickled ``given``) in a supervisor process
    that then exits at once; the process ``pid`` must not outlive it."""
    code = (
        "import os, pickle\n"
        f"given = pickle.loads(bytes.fromhex({pickle.dumps(given).hex()!r}))\n"
        f"{start}print(pid, flush=True)\nos._exit(0)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
    )
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_context_file_and_xcom_pipe_still_work_after_the_drop(
    task_user: pwd.struct_passwd, base: Path, env_python: Path, runtime: RuntimeFiles
) -> None:
    made = attempt(base, env_python, runtime, "json")
    (made.bundle_dir / "probe.py").write_text(
        "def probe(ds, params):\n    return {'ds': ds, 'params': params}\n"
    )
    outcome = run(made)
    assert outcome.ok, made.log_path.read_text()
    assert outcome.xcom == {"ds": "2024-03-05", "params": {}}
