"""Tenant A attacks tenant B and the node, for real: two OS users made here, one scheduler.

Each attack is a task of A's DAG that tries one thing and reports what happened; B's DAG runs
at the same time and must not notice. What is denied or contained, and how, is asserted per
attack (docs/security.md lists them). Pushing another tenant's DAG, malformed and unsafe
mappings are in test_push_server.py, test_tenants.py and test_tenancy_runs.py.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from cli.main import isolate
from isolate.config import load_config
from isolate.errors import ValidationError
from isolate.format import load_document
from isolate.services.home import open_store
from localexec.sandbox import HostSandbox
from localexec.scheduler import Scheduler
from tests.conftest import PYTHON, write_folder
from tests.osusers import clear_isolate_env, os_users, unique

A, B = unique("isoadv-a"), unique("isoadv-b")
SUID = Path("/usr/local/bin/isoadv-suid-id")
HOST = HostSandbox.detect(cgroups=False, cgroups_finding="")
# How each attack ends, by the confinement tasks get: "denied" is EACCES/EPERM, an errno
# name what else the call failed with. Hidden (ENOENT) under bubblewrap, whose tasks see
# neither the store nor the logs, nor any process but their own (pid 1 is their sandbox's).
UNSANDBOXED = {
    "read_other_tenant": {"log": "denied", "work": "denied", "bundle": "denied"},
    "read_node_secrets": {
        "database": "denied",
        "wal": ("denied", "ENOENT"),
        "config": "denied",
        "mapping": "denied",
        "supervisor_environ": "denied",
        "environment": [],
    },
    "write_code": {"pth": "denied", "env_bin": "denied", "bundle": "denied"},
    "kill": {
        "found_b": True,
        "kill_b": "denied",
        "kill_scheduler": "denied",
        "kill_init": "denied",
    },
    "plant_links": {"next_log": "denied", "callback_work": "denied"},
    "setuid_0": "denied",
}
EXPECTED: dict[str, dict[str, Any]] = {
    "users": UNSANDBOXED,
    "landlock": UNSANDBOXED,
    "bubblewrap": {
        "read_other_tenant": {"log": "ENOENT", "work": "denied", "bundle": "denied"},
        "read_node_secrets": {
            "database": "ENOENT",
            "wal": "ENOENT",
            "config": "ENOENT",
            "mapping": "ENOENT",
            "supervisor_environ": "ENOENT",
            "environment": [],
        },
        "write_code": {"pth": "EROFS", "env_bin": "EROFS", "bundle": "EROFS"},
        "kill": {
            "found_b": False,
            "kill_b": None,
            "kill_scheduler": "ESRCH",
            "kill_init": "allowed",
        },
        "plant_links": {"next_log": "ENOENT", "callback_work": "denied"},
        "setuid_0": "EINVAL",  # uid 0 is not even mapped in the task's user namespace
    },
}
SETTINGS = {
    "users": {"ISOLATE_LANDLOCK": "off", "ISOLATE_BUBBLEWRAP": "off"},
    "landlock": {"ISOLATE_LANDLOCK": "required", "ISOLATE_BUBBLEWRAP": "off"},
    "bubblewrap": {"ISOLATE_LANDLOCK": "auto", "ISOLATE_BUBBLEWRAP": "required"},
}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks need two real users")

MAPPING = f"""
[[tenant]]
name = "alpha"
dags = ["a.*"]
pushers = ["root"]
run_as = "{A}"
limits = {{ processes = 40, memory = "512M" }}

[[tenant]]
name = "beta"
dags = ["b.*"]
pushers = ["root"]
run_as = "{B}"
"""

VICTIM = """
    import os, time
    from isolate import DAG, task

    @task
    def produce():
        with open("secret.txt", "w") as fh:
            fh.write("b-work-secret")
        print("b-log-secret")
        return "b-xcom-secret"

    @task
    def sleeper():
        time.sleep(6)
        return "undisturbed"

    with DAG("b.victim"):
        produce()
        sleeper()
"""

ATTACKS = """
    import ctypes, errno, os, signal, subprocess, time
    from datetime import timedelta
    from isolate import DAG, CommandTask, task

    HOME = {home!r}
    B_RUN = {b_run!r}
    B_UID = {b_uid}
    SUID = {suid!r}
    SCHEDULER = {scheduler}

    def attempt(fn):
        try:
            fn()
        except PermissionError:
            return "denied"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))
        return "allowed"

    def read(path):
        return attempt(lambda: open(path, "rb").read())

    @task
    def read_other_tenant():
        logs = f"{{HOME}}/logs/b.victim/{{B_RUN}}/produce/1.log"
        work = f"{{HOME}}/work/b.victim/{{B_RUN}}/produce/1/secret.txt"
        bundles = f"{{HOME}}/bundles/tenants/beta"
        return {{
            "log": read(logs),
            "work": read(work),
            "bundle": attempt(lambda: os.listdir(bundles)),
        }}

    @task
    def read_node_secrets():
        db = f"{{HOME}}/isolate.db"
        return {{
            "database": read(db),
            "wal": read(db + "-wal"),
            "config": read(f"{{HOME}}/isolate.toml"),
            "mapping": read({mapping!r}),
            "supervisor_environ": read(f"/proc/{{SCHEDULER}}/environ"),
            "environment": sorted(k for k in os.environ if "DATABASE" in k or "SECRET" in k),
        }}

    @task
    def write_code():
        import site, sys
        packages = [p for p in sys.path if p.endswith("site-packages")][0]
        bundle = os.path.dirname(__file__)
        return {{
            "pth": attempt(lambda: open(os.path.join(packages, "evil.pth"), "w")),
            "env_bin": attempt(lambda: open(os.path.join(sys.prefix, "bin", "evil"), "w")),
            "bundle": attempt(lambda: open(os.path.join(bundle, "evil.py"), "w")),
        }}

    @task
    def regain_root():
        out = subprocess.run([SUID, "-u"], capture_output=True, text=True).stdout.strip()
        return {{
            "setuid": attempt(lambda: os.setuid(0)),
            "setgid": attempt(lambda: os.setgid(0)),
            "suid_binary_euid": int(out),
            "uid": os.getuid(),
        }}

    @task
    def inherited_fds():
        fds = {{}}
        for name in os.listdir("/proc/self/fd"):
            try:
                fds[name] = os.readlink(f"/proc/self/fd/{{name}}")
            except OSError:
                pass
        return fds

    @task
    def signal_others():
        victims = []
        deadline = time.monotonic() + 10
        while not victims and time.monotonic() < deadline:
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        status = open(f"/proc/{{pid}}/status").read()
                    except OSError:
                        continue
                    if f"Uid:\\t{{B_UID}}\\t" in status:
                        victims.append(int(pid))
            time.sleep(0.05)
        return {{
            "found_b": bool(victims),
            "kill_b": [attempt(lambda p=p: os.kill(p, signal.SIGKILL)) for p in victims],
            "kill_scheduler": attempt(lambda: os.kill(SCHEDULER, signal.SIGTERM)),
            "kill_init": attempt(lambda: os.kill(1, signal.SIGTERM)),
        }}

    @task
    def fork_bomb():
        children, refused = [], 0
        for _ in range(200):
            try:
                children.append(subprocess.Popen(["sleep", "30"]))
            except OSError:
                refused += 1
        for child in children:
            child.kill()
            child.wait()
        return {{"started": len(children), "refused": refused}}

    @task
    def eat_memory():
        try:
            hog = bytearray(2 << 30)
            return len(hog)
        except MemoryError:
            return "MemoryError"

    @task
    def plant_links():
        run = os.environ["ISOLATE_CTX_RUN_ID"]
        targets = {{
            "next_log": f"{{HOME}}/logs/a.attacks/{{run}}/plant_links/2.log",
            "callback_work": f"{{HOME}}/work/a.attacks/{{run}}/plant_links/1.on_failure",
        }}
        return {{
            name: attempt(lambda p=path: os.symlink(f"{{HOME}}/isolate.db", p))
            for name, path in targets.items()
        }}

    with DAG("a.attacks"):
        read_other_tenant()
        read_node_secrets()
        write_code()
        regain_root()
        probes = [inherited_fds(), signal_others(), plant_links()]
        # The resource attacks come after the probes: A's own fork bomb would starve them.
        probes >> fork_bomb() >> eat_memory()
        CommandTask(
            "escape",
            command="setsid sleep 37 < /dev/null > /dev/null 2>&1 & sleep 30",
            execution_timeout=timedelta(seconds=2),
        )
"""


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    with os_users(A, B) as made:
        yield made


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="isolate-adversarial-"))
    os.chmod(base, 0o711)
    (base / "etc").mkdir(mode=0o755)
    mapping = base / "etc" / "tenants.toml"
    mapping.write_text(MAPPING)
    os.chmod(mapping, 0o600)
    # A setuid-root program the tasks can run (under /usr, so every sandbox has it):
    # no_new_privs must keep it powerless.
    shutil.copy("/usr/bin/id", SUID)
    os.chmod(SUID, 0o4755)
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_HOME", str(base / "home"))
    monkeypatch.setenv("ISOLATE_OFFLINE", "true")
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", PYTHON)
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(mapping))
    monkeypatch.setenv("SCHEDULER_SECRET", "hunter2")  # the supervisor's, never the tasks'
    assert CliRunner().invoke(isolate, ["init"]).exit_code == 0
    try:
        yield base
    finally:
        SUID.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


def cli(*args: str) -> Any:
    result = CliRunner().invoke(isolate, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tasks_of(run_id: str) -> dict[str, dict[str, Any]]:
    return {t["task_id"]: t for t in cli("runs", "show", run_id)["tasks"]}


def matches(seen: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether each value seen is the expected one (or one of an expected tuple)."""
    return seen.keys() == expected.keys() and all(
        seen[k] in want if isinstance(want, tuple) else seen[k] == want
        for k, want in expected.items()
    )


@pytest.mark.parametrize("mode", ["users", "landlock", "bubblewrap"])
def test_tenant_a_attacks_tenant_b_and_the_node(
    node: Path,
    users: dict[str, pwd.struct_passwd],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """The same attacks with the OS users alone, with Landlock, and with bubblewrap."""
    if mode == "landlock" and HOST.landlock_abi == 0:
        pytest.skip("Landlock is not available in this kernel")
    if mode == "bubblewrap" and HOST.bwrap is None:
        pytest.skip(f"bubblewrap cannot be used here: {HOST.bwrap_finding}")
    for name, value in SETTINGS[mode].items():
        monkeypatch.setenv(name, value)
    expected = EXPECTED[mode]
    home = node / "home"
    cli("push", str(write_folder(node / "src" / "victim", {"dag.py": VICTIM})))
    b_run = cli("trigger", "b.victim")["run_id"]
    source = ATTACKS.format(
        home=str(home),
        b_run=b_run,
        b_uid=users[B].pw_uid,
        suid=str(SUID),
        scheduler=os.getpid(),
        mapping=str(node / "etc" / "tenants.toml"),
    )
    cli("push", str(write_folder(node / "src" / "attacks", {"dag.py": source})))
    a_run = cli("trigger", "a.attacks")["run_id"]
    config = load_config(None)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=4, poll_interval=0.02) as scheduler,
    ):
        scheduler.run(until_idle=True)

    victim = tasks_of(b_run)
    assert victim["produce"]["state"] == "success" and victim["produce"]["run_as"] == B
    assert victim["sleeper"]["xcom"] == "undisturbed"  # nothing of A's reached it

    attacks = tasks_of(a_run)
    seen = {task_id: t["xcom"] for task_id, t in attacks.items()}
    failed = {i: t["outcome"] for i, t in attacks.items() if t["state"] != "success"}
    assert failed.keys() == {"escape"}, failed
    assert {t["run_as"] for t in attacks.values()} == {A}
    for attack in ("read_other_tenant", "read_node_secrets", "write_code", "plant_links"):
        assert matches(seen[attack], expected[attack]), (attack, seen[attack])
    root = seen["regain_root"]
    assert (root["setuid"], root["setgid"]) == (expected["setuid_0"],) * 2
    assert root["suid_binary_euid"] == root["uid"] == users[A].pw_uid  # no_new_privs
    fds = seen["inherited_fds"]
    assert set(fds) >= {"0", "1", "2"} and len(fds) <= 5  # stdio, the result pipe, listdir
    assert not [t for t in fds.values() if "isolate.db" in t or t.startswith("socket:")]
    signals, kill = seen["signal_others"], expected["kill"]
    assert signals["found_b"] is kill["found_b"]
    assert set(signals["kill_b"]) == ({kill["kill_b"]} if kill["found_b"] else set())
    assert (signals["kill_scheduler"], signals["kill_init"]) == (
        kill["kill_scheduler"],
        kill["kill_init"],
    )
    bomb = seen["fork_bomb"]
    assert bomb["refused"] > 0 and bomb["started"] < 40  # the tenant's processes = 40
    assert seen["eat_memory"] == "MemoryError"  # the tenant's memory = 512M
    escape = attacks["escape"]
    assert escape["state"] == "failed" and "timed out" in escape["outcome"]
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "37"]]

    # And what B's attempts left is B's and the admins' alone.
    log = home / "logs" / "b.victim" / b_run / "produce" / "1.log"
    info = log.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, users[B].pw_gid, 0o640)
    work = home / "work" / "b.victim" / b_run / "produce" / "1"
    info = work.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (users[B].pw_uid, 0o700)
    # The directories above them can be passed through, not listed (no run or task ids).
    for top in ("logs", "work"):
        for above in (("b.victim",), ("b.victim", b_run), ("b.victim", b_run, "produce")):
            mode = stat.S_IMODE(home.joinpath(top, *above).stat().st_mode)
            assert mode == 0o711, (top, above, oct(mode))


CLAIMS_ROOT = """
    from isolate import DAG, CommandTask

    with DAG("a.claim", run_as="root"):
        CommandTask("t", command=["id"])
"""


def test_a_dag_cannot_choose_its_user(node: Path, users: dict[str, pwd.struct_passwd]) -> None:
    """Nothing in a DAG names a user: the SDK has no such argument and the format no field,
    so the only way to run is as the tenant's mapped user."""
    folder = write_folder(node / "src" / "claim", {"dag.py": CLAIMS_ROOT})
    result = CliRunner().invoke(isolate, ["push", str(folder)])
    assert result.exit_code == 4 and "run_as" in result.output
    assert cli("dags", "list") == []
    # A document written by hand (what the push socket accepts) fares no better.
    document = {
        "format_version": 1,
        "dag_id": "a.claim",
        "tasks": [{"task_id": "t", "kind": "command", "command": ["id"], "run_as": "root"}],
    }
    with pytest.raises(ValidationError, match="unknown field 'run_as'"):
        load_document(json.dumps(document))
