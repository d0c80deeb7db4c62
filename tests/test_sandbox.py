"""Landlock and bubblewrap around real task processes, and the hardening modes that choose them.

The process tests run their tasks as root where the suite runs as root: file permissions
then allow everything, so each denial seen is the sandbox's own. The same mechanisms under
two real tenant users are in test_adversarial.py; the per-tenant modes are at the end here.
"""

# The fixtures come from a shared module; pyflakes sees their use as arguments as
# redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from cli.main import isolate
from isolate.config import load_config
from isolate.errors import ConfigError
from isolate.services.home import open_store
from isolate.tenancy import Tenant, TenantHardening
from localexec import sandbox as sandbox_module
from localexec.attempt import Attempt
from localexec.sandbox import (
    Hardening,
    HardeningUnavailable,
    HostSandbox,
    Sandbox,
    database_ports,
    exit_signal,
    layers_for,
    resolve,
    wanted_hardening,
)
from localexec.scheduler import Scheduler
from localexec.supervisor import run
from tests.conftest import PYTHON, write_folder
from tests.localexec_support import (  # noqa: F401 - fixtures
    MakeAttempt,
    env_python,
    make_attempt,
    runtime,
)
from tests.osusers import clear_isolate_env, os_users, unique

HOST = HostSandbox.detect(cgroups=False, cgroups_finding="not used here")
needs_landlock = pytest.mark.skipif(
    HOST.landlock_abi == 0, reason="Landlock is not available in this kernel"
)
needs_bwrap = pytest.mark.skipif(
    HOST.bwrap is None, reason=f"bubblewrap cannot be used here: {HOST.bwrap_finding}"
)
NOTHING = HostSandbox(cgroups_finding="no cgroup v2", bwrap_finding="bwrap not installed")
EVERYTHING = HostSandbox(landlock_abi=6, bwrap=Path("/usr/bin/bwrap"), cgroups=True)

PROBES = {
    "probes.py": """
        import errno, os, socket

        def attempt(fn):
            try:
                result = fn()
            except PermissionError:
                return "denied"
            except OSError as exc:
                return errno.errorcode.get(exc.errno, str(exc.errno))
            return "allowed" if result is None else result

        def read(path):
            return attempt(lambda: open(path).read())

        def write(path):
            def go():
                with open(path, "w") as fh:
                    fh.write("x")
            return attempt(go)

        def connect(port):
            def go():
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    pass
            return attempt(go)

        def files(outside):
            return {
                "outside": read(outside),
                "tmp": write(f"/tmp/isolate-sandbox-probe-{os.getpid()}"),
                "work": write("here.txt"),
                "devnull": write("/dev/null"),
                "shm": write(f"/dev/shm/isolate-probe-{os.getpid()}"),
                "etc": attempt(lambda: len(open("/etc/passwd").read()) > 0),
            }

        def ports(denied, allowed):
            return {"denied": connect(denied), "allowed": connect(allowed)}

        def signal_to(pid):
            return attempt(lambda: os.kill(pid, 0))

        def namespaces(parent):
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            return {
                "pids": pids,
                "parent_visible": os.path.exists(f"/proc/{parent}"),
                "tmp": sorted(os.listdir("/tmp")),
                "hostname_file": read("/etc/hostname") != "ENOENT",
            }

        def make_tmp(name):
            with open(f"/tmp/{name}", "w") as fh:
                fh.write("mine")
            return sorted(os.listdir("/tmp"))

        def die():
            os.kill(os.getpid(), 9)
    """
}


def sandbox(attempt: Attempt, host: HostSandbox, **want: Any) -> Attempt:
    """``attempt`` confined as the scheduler would: its env, runtime and bundle readable,
    its work dir writable."""
    env_root = attempt.python.parent.parent
    denied_ports = want.pop("denied_ports", ())
    confined = resolve(
        Hardening(**want),
        host,
        read_only=(
            env_root,
            env_root.parent.parent / "objects" / "trees",
            attempt.sdk_dir.parent,
            attempt.bundle_dir,
        ),
        writable=(attempt.work_dir,),
        denied_ports=denied_ports,
    )
    return replace(attempt, sandbox=confined)


def run_confined(attempt: Attempt) -> Any:
    outcome = run(attempt, layers=layers_for(attempt.sandbox))
    log = attempt.log_path.read_text()
    assert outcome.ok, (outcome.message, log)
    assert f"sandbox: {attempt.sandbox.describe()}" in log
    return outcome.xcom


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A world-readable file in a world-readable directory that no sandbox allows."""
    base = Path(tempfile.mkdtemp(prefix="isolate-outside-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    path = base / "public.txt"
    path.write_text("anyone may read this")
    os.chmod(path, 0o644)
    try:
        yield path
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def listeners() -> Iterator[tuple[int, int]]:
    """Two loopback TCP ports that accept connections."""
    sockets = []
    for _ in range(2):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        sockets.append(server)
    try:
        yield sockets[0].getsockname()[1], sockets[1].getsockname()[1]
    finally:
        for server in sockets:
            server.close()


# --- modes ---------------------------------------------------------------------------------


def test_auto_uses_what_the_host_has_and_off_nothing() -> None:
    paths: dict[str, Any] = {"read_only": (Path("/opt/env"),), "writable": (Path("/w"),)}
    assert resolve(Hardening(), NOTHING, **paths) == Sandbox(
        cgroup=False, landlock=0, bwrap=None, network=True, **paths
    )
    full = resolve(Hardening(), EVERYTHING, denied_ports=(5432,), **paths)
    assert (full.cgroup, full.landlock, full.bwrap, full.network) == (
        True,
        6,
        Path("/usr/bin/bwrap"),
        False,
    )
    # No network at all: no port to filter, only the scopes are Landlock's.
    assert full.describe() == "bubblewrap (no network, own /proc and /tmp); landlock (scopes)"
    off = resolve(Hardening("off", "off", "off"), EVERYTHING, **paths)
    assert (off.cgroup, off.landlock, off.bwrap) == (False, 0, None)
    assert off.describe() == "none"
    networked = resolve(Hardening(network=True), EVERYTHING, denied_ports=(3306,), **paths)
    assert networked.network and "landlock (no TCP to port 3306, scopes)" in networked.describe()
    # Landlock alone limits the filesystem itself; the network is the host's.
    alone = resolve(Hardening(bubblewrap="off"), EVERYTHING, denied_ports=(3306,), **paths)
    assert alone.describe() == "landlock (filesystem, no TCP to port 3306, scopes)"
    # An ABI without TCP rules and scopes has nothing to add to bubblewrap.
    old = replace(EVERYTHING, landlock_abi=3)
    assert resolve(Hardening(network=True), old, denied_ports=(1,), **paths).landlock == 0
    assert resolve(Hardening(bubblewrap="off"), old, **paths).landlock == 3


def test_required_but_missing_names_who_requires_what_and_why() -> None:
    want = Hardening(cgroup="required", landlock="auto", bubblewrap="required")
    with pytest.raises(HardeningUnavailable) as caught:
        resolve(want, NOTHING, read_only=(), writable=(), who="tenant analytics")
    message = str(caught.value)
    assert message.startswith("tenant analytics requires a cgroup per attempt (no cgroup v2)")
    assert "and bubblewrap (bwrap not installed)" in message
    assert "Landlock" not in message  # auto: its absence is no error
    assert "the task does not start" in message
    resolve(want, EVERYTHING, read_only=(), writable=())  # all there: fine


def test_a_tenants_table_overrides_the_nodes_settings(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISOLATE_LANDLOCK", "required")
    monkeypatch.setenv("ISOLATE_BUBBLEWRAP", "false")
    monkeypatch.setenv("ISOLATE_SANDBOX_NETWORK", "true")
    settings = load_config(home).settings
    assert wanted_hardening(settings, None) == Hardening("auto", "required", "off", True)
    tenant = Tenant(
        name="t",
        dags=("t.*",),
        pushers=("root",),
        run_as="nobody",
        hardening=TenantHardening(landlock="off", bubblewrap="required", network=False),
    )
    assert wanted_hardening(settings, tenant) == Hardening("auto", "off", "required", False)


@pytest.mark.parametrize(
    ("value", "mode"),
    [("true", "auto"), ("false", "off"), ("required", "required"), ("AUTO", "auto")],
)
def test_mode_settings_accept_modes_and_booleans(
    home: Path, monkeypatch: pytest.MonkeyPatch, value: str, mode: str
) -> None:
    monkeypatch.setenv("ISOLATE_BUBBLEWRAP", value)
    assert load_config(home).settings.bubblewrap == mode


def test_an_unknown_mode_is_a_clear_configuration_error(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "isolate.toml").write_text('landlock = "sometimes"\n')
    with pytest.raises(ConfigError, match="landlock: expected one of auto, required, off"):
        load_config(home)


@pytest.mark.parametrize(
    ("url", "ports"),
    [
        (None, ()),
        ("postgresql+psycopg://u@db.example:6543/x", (6543,)),
        ("postgresql://u@127.0.0.1/x", (5432,)),
        ("mysql+pymysql://root@127.0.0.1/test", (3306,)),
        ("postgresql://u@/x?host=/var/run/postgresql", ()),  # a unix socket
        ("mysql+pymysql://root@localhost/test?unix_socket=/run/mysqld/mysqld.sock", ()),
    ],
)
def test_the_database_port_is_what_tasks_may_not_connect_to(
    home: Path, monkeypatch: pytest.MonkeyPatch, url: str | None, ports: tuple[int, ...]
) -> None:
    if url:
        monkeypatch.setenv("ISOLATE_DATABASE_URL", url)
    assert database_ports(load_config(home)) == ports


def test_bubblewrap_mounts_parents_before_what_lies_beneath() -> None:
    confined = Sandbox(
        bwrap=Path("/usr/bin/bwrap"),
        network=False,
        read_only=(Path("/tmp/h/envcache/envs/k"), Path("/tmp/h/runtime")),
        writable=(Path("/tmp/h/work"),),
    )
    argv = confined.bwrap_argv()
    assert argv[:3] == ["/usr/bin/bwrap", "--unshare-all", "--die-with-parent"]
    assert "--share-net" not in argv and argv[-1] == "--"
    tmpfs = argv.index("/tmp") - 1
    assert argv[tmpfs] == "--tmpfs"
    for path in ("/tmp/h/runtime", "/tmp/h/work", "/tmp/h/envcache/envs/k"):
        assert argv.index(path) > tmpfs  # mounted onto the fresh /tmp, not hidden by it
    assert argv.index("/tmp/h/work") < argv.index("/tmp/h/envcache/envs/k")
    assert argv[argv.index("/tmp/h/work") - 1] == "--bind"
    assert argv[argv.index("/tmp/h/runtime") - 1] == "--ro-bind-try"


@pytest.mark.parametrize(("code", "signum"), [(137, 9), (143, 15), (1, None), (128, None)])
def test_bubblewraps_exit_code_is_turned_back_into_the_signal(
    code: int, signum: int | None
) -> None:
    assert exit_signal(Sandbox(bwrap=Path("/usr/bin/bwrap")), code) == signum
    assert exit_signal(Sandbox(), code) is None  # a task exiting 137 itself stays an exit


# --- Landlock ------------------------------------------------------------------------------


@needs_landlock
def test_landlock_limits_the_filesystem_even_for_root(
    make_attempt: MakeAttempt, outside: Path
) -> None:
    attempt = make_attempt(PROBES, callable="probes:files", args=[str(outside)])
    free = run_confined(sandbox(attempt, HOST, landlock="off", bubblewrap="off"))
    assert free["outside"] == "anyone may read this"
    assert free["tmp"] == "allowed"
    confined = run_confined(
        sandbox(make_attempt(PROBES, callable="probes:files", args=[str(outside)]), HOST,
                landlock="required", bubblewrap="off")
    )  # fmt: skip
    assert confined == {
        "outside": "denied",
        "tmp": "denied",
        "work": "allowed",
        "devnull": "allowed",
        "shm": "denied",  # the host's: shared by every tenant (test_sandbox_env.py)
        "etc": True,
    }
    for leftover in Path("/tmp").glob("isolate-sandbox-probe-*"):
        leftover.unlink()
    for leftover in Path("/dev/shm").glob("isolate-probe-*"):
        leftover.unlink()


@needs_landlock
def test_landlock_denies_tcp_to_the_database_port_only(
    make_attempt: MakeAttempt, listeners: tuple[int, int]
) -> None:
    if HOST.landlock_abi < 4:
        pytest.skip(f"Landlock ABI {HOST.landlock_abi} has no TCP rules (4 is needed)")
    database, other = listeners
    attempt = make_attempt(PROBES, callable="probes:ports", args=[database, other])
    confined = sandbox(
        attempt, HOST, landlock="required", bubblewrap="off", denied_ports=(database,)
    )
    assert run_confined(confined) == {"denied": "denied", "allowed": "allowed"}


@needs_landlock
def test_landlock_scopes_signals_to_the_attempt(make_attempt: MakeAttempt) -> None:
    if HOST.landlock_abi < 6:
        pytest.skip(f"Landlock ABI {HOST.landlock_abi} has no scopes (6 is needed)")
    bystander = subprocess.Popen(["sleep", "30"])  # the same user's: only Landlock can refuse
    try:
        free = make_attempt(PROBES, callable="probes:signal_to", args=[bystander.pid])
        assert run_confined(sandbox(free, HOST, landlock="off", bubblewrap="off")) == "allowed"
        scoped = make_attempt(PROBES, callable="probes:signal_to", args=[bystander.pid])
        assert run_confined(sandbox(scoped, HOST, landlock="required", bubblewrap="off")) == (
            "denied"
        )
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@needs_landlock
def test_a_command_task_is_confined_too(make_attempt: MakeAttempt, outside: Path) -> None:
    attempt = make_attempt(
        kind="command", command=f"cat {outside}", callable=None, task_id="cat_it"
    )
    outcome = run(sandbox(attempt, HOST, landlock="required", bubblewrap="off"))
    assert outcome.exit_code == 1
    assert "Permission denied" in attempt.log_path.read_text()


# --- bubblewrap ----------------------------------------------------------------------------


@needs_bwrap
def test_bubblewrap_gives_own_processes_tmp_and_no_network(
    make_attempt: MakeAttempt, outside: Path, listeners: tuple[int, int]
) -> None:
    want = {"landlock": "off", "bubblewrap": "required"}
    attempt = sandbox(
        make_attempt(PROBES, callable="probes:namespaces", args=[os.getpid()]), HOST, **want
    )
    seen = run_confined(attempt)
    assert not seen["parent_visible"] and max(seen["pids"]) < 10  # its own pid namespace
    # Its own /tmp: nothing of the host's but the way to the env and work dirs bound in it.
    bound = {p.parts[2] for p in (*attempt.sandbox.read_only, *attempt.sandbox.writable)
             if p.parts[1] == "tmp"}  # fmt: skip
    assert set(seen["tmp"]) == bound and seen["hostname_file"]
    files = run_confined(
        sandbox(make_attempt(PROBES, callable="probes:files", args=[str(outside)]), HOST, **want)
    )
    assert files["outside"] == "ENOENT" and files["tmp"] == "allowed"
    assert not list(Path("/tmp").glob("isolate-sandbox-probe-*"))  # that was its own /tmp
    port = listeners[0]
    cut_off = run_confined(
        sandbox(make_attempt(PROBES, callable="probes:ports", args=[port, port]), HOST, **want)
    )
    assert cut_off == {"denied": "ECONNREFUSED", "allowed": "ECONNREFUSED"}  # own loopback
    networked = run_confined(
        sandbox(make_attempt(PROBES, callable="probes:ports", args=[port, port]), HOST,
                network=True, **want)
    )  # fmt: skip
    assert networked == {"denied": "allowed", "allowed": "allowed"}


@needs_bwrap
def test_bubblewrap_covers_the_mapping_under_etc(
    make_attempt: MakeAttempt,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the stand-in mapping goes under /etc: that needs root")
    fd, name = tempfile.mkstemp(prefix="isolate-test-mapping-", suffix=".toml", dir="/etc")
    mapping = Path(name)
    try:
        os.write(fd, b"[[tenant]]  # the admin's secret layout")
        os.close(fd)
        os.chmod(mapping, 0o644)  # readable: only the sandbox stands in the way
        attempt = make_attempt(PROBES, callable="probes:read", args=[str(mapping)])
        confined = sandbox(attempt, HOST, landlock="off", bubblewrap="required")
        confined = replace(confined, sandbox=replace(confined.sandbox, hidden=(mapping,)))
        assert run_confined(confined) == "denied"  # /dev/null on a nodev mount: no content
    finally:
        mapping.unlink()


@needs_bwrap
@needs_landlock
def test_bubblewrap_with_landlock_still_denies_the_database_port(
    make_attempt: MakeAttempt, listeners: tuple[int, int]
) -> None:
    database, other = listeners
    attempt = make_attempt(PROBES, callable="probes:ports", args=[database, other])
    confined = sandbox(
        attempt,
        HOST,
        landlock="required",
        bubblewrap="required",
        network=True,
        denied_ports=(database,),
    )
    assert run_confined(confined) == {"denied": "denied", "allowed": "allowed"}


@needs_bwrap
def test_a_task_killed_in_its_sandbox_reports_the_signal(make_attempt: MakeAttempt) -> None:
    attempt = sandbox(make_attempt(PROBES, callable="probes:die"), HOST, bubblewrap="required")
    outcome = run(attempt, layers=layers_for(attempt.sandbox))
    assert (outcome.signal, outcome.exit_code) == (signal.SIGKILL, None)
    assert outcome.message == "killed by SIGKILL"


@needs_bwrap
def test_a_timeout_ends_the_whole_sandbox(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt(
        kind="command",
        command="setsid sleep 41 < /dev/null > /dev/null 2>&1 & sleep 40",
        callable=None,
        execution_timeout=1,
    )
    outcome = run(sandbox(attempt, HOST, bubblewrap="required"))
    assert outcome.timed_out
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] in (
        ["sleep", "41"], ["sleep", "40"])]  # fmt: skip


# --- through the scheduler, warm starts included ---------------------------------------------

CHAIN = """
from isolate import DAG, task

def peek():
    try:
        open({outside!r}).read()
        return "visible"
    except FileNotFoundError:
        return "hidden"
    except PermissionError:
        return "denied"

@task
def one():
    return peek()

@task
def two():
    return peek()

@task
def three():
    return peek()

with DAG("peek"):
    one() >> two() >> three()
"""


@needs_bwrap
def test_warm_started_tasks_are_confined_like_cold_ones(
    home: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISOLATE_BUBBLEWRAP", "required")
    folder = write_folder(home.parent / "src", {"dag.py": CHAIN.format(outside=str(outside))})
    runner = CliRunner()
    assert runner.invoke(isolate, ["push", str(folder)]).exit_code == 0
    run_id = json.loads(runner.invoke(isolate, ["trigger", "peek", "--json"]).stdout)["run_id"]
    config = load_config(home)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=2, poll_interval=0.02) as scheduler,
    ):
        scheduler.run(until_idle=True)
    shown = json.loads(runner.invoke(isolate, ["runs", "show", run_id, "--json"]).stdout)
    assert {t["task_id"]: t["xcom"] for t in shown["tasks"]} == dict.fromkeys(
        ("one", "two", "three"), "hidden"
    )
    logs = [
        (home / "logs" / "peek" / run_id / name / "1.log").read_text()
        for name in ("one", "two", "three")
    ]
    assert all("sandbox: bubblewrap (no network" in log for log in logs)
    assert any("start: warm" in log for log in logs[1:]), logs


# --- per tenant ------------------------------------------------------------------------------

OPEN, CLOSED = unique("isosb-open"), unique("isosb-closed")
MAPPING = f"""
[[tenant]]
name = "open"
dags = ["open.*"]
pushers = ["root"]
run_as = "{OPEN}"
hardening = {{ landlock = "off", bubblewrap = "off" }}

[[tenant]]
name = "closed"
dags = ["closed.*"]
pushers = ["root"]
run_as = "{CLOSED}"
hardening = {{ bubblewrap = "required" }}
"""
PEEK = """
    from isolate import DAG, task

    @task(retries=2, retry_delay=0)
    def peek():
        try:
            return open({outside!r}).read()
        except OSError as exc:
            return type(exc).__name__

    with DAG("{dag_id}"):
        peek()
"""


@pytest.fixture
def tenants_node(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("tenants run as their own users: that needs root")
    base = Path(tempfile.mkdtemp(prefix="isolate-sandbox-"))
    os.chmod(base, 0o711)
    (base / "etc").mkdir(mode=0o755)
    (base / "etc" / "tenants.toml").write_text(MAPPING)
    os.chmod(base / "etc" / "tenants.toml", 0o600)
    clear_isolate_env(monkeypatch)
    monkeypatch.setenv("ISOLATE_HOME", str(base / "home"))
    monkeypatch.setenv("ISOLATE_OFFLINE", "true")
    monkeypatch.setenv("ISOLATE_ENV_PYTHON", PYTHON)
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(base / "etc" / "tenants.toml"))
    assert CliRunner().invoke(isolate, ["init"]).exit_code == 0
    try:
        with os_users(OPEN, CLOSED):
            yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(isolate, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _schedule_both(base: Path, outside: Path) -> tuple[str, str]:
    runs = []
    for dag_id in ("open.peek", "closed.peek"):
        source = PEEK.format(outside=str(outside), dag_id=dag_id)
        _cli("push", str(write_folder(base / "src" / dag_id, {"dag.py": textwrap.dedent(source)})))
        runs.append(_cli("trigger", dag_id)["run_id"])
    config = load_config(None)
    with (
        open_store(config) as store,
        Scheduler(config, store, parallelism=2, poll_interval=0.02) as scheduler,
    ):
        scheduler.run(until_idle=True)
    return runs[0], runs[1]


@needs_bwrap
def test_each_tenant_gets_the_hardening_its_table_asks_for(
    tenants_node: Path, outside: Path
) -> None:
    open_run, closed_run = _schedule_both(tenants_node, outside)
    opened = _cli("runs", "show", open_run)["tasks"][0]
    closed = _cli("runs", "show", closed_run)["tasks"][0]
    assert (opened["run_as"], opened["xcom"]) == (OPEN, "anyone may read this")
    assert (closed["run_as"], closed["xcom"]) == (CLOSED, "FileNotFoundError")
    home = tenants_node / "home"
    log = (home / "logs" / "closed.peek" / closed_run / "peek" / "1.log").read_text()
    assert "sandbox: bubblewrap (no network" in log
    log = (home / "logs" / "open.peek" / open_run / "peek" / "1.log").read_text()
    assert "sandbox: none" in log


def test_a_tenant_requiring_what_the_host_lacks_does_not_run(
    tenants_node: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        sandbox_module, "bubblewrap", lambda: (None, "bwrap not installed (simulated)")
    )
    open_run, closed_run = _schedule_both(tenants_node, outside)
    assert _cli("runs", "show", open_run)["tasks"][0]["state"] == "success"
    closed = _cli("runs", "show", closed_run)["tasks"][0]
    assert closed["state"] == "failed" and closed["try_number"] == 1  # retries cannot help
    assert (
        "tenant closed requires bubblewrap (bwrap not installed (simulated)), which this "
        "host does not offer" in closed["outcome"]
    )
    log = tenants_node / "home" / "logs" / "closed.peek" / closed_run / "peek" / "1.log"
    assert "tenant closed requires bubblewrap" in log.read_text()
    assert pwd.getpwnam(CLOSED)  # the users are the fixture's, removed after it
