"""The tenant mapping: parsing, validation, the overlap detector, safe loading and the CLI.

Uses real OS users and groups, created here (as root) and removed afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import isolate
from isolate.config import load_config
from isolate.tenancy import (
    DEFAULT_TENANTS_FILE,
    SystemUsers,
    TenancyError,
    TenantHardening,
    TenantLimits,
    UserDatabase,
    check_mapping,
    load_tenants,
    overlap_witness,
    overlaps,
    parse_tenants,
    read_mapping,
    tenants_path,
    user_groups,
    validate_file,
)
from isolate.tenancy.patterns import DAG_ID_ALPHABET
from isolate.validate import is_valid_id
from localexec.tenants import TenantWatch
from tests.osusers import clear_isolate_env, unique
from tests.osusers import os_users as make_os_users

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create OS users")

# A prefix of our own: other test files create users too, and leftovers are found by name.
P = "isotn-"
ANALYTICS, FINANCE, ALICE, BOB, SYSTEM = (
    unique(f"{P}analytics"),
    unique(f"{P}finance"),
    unique(f"{P}alice"),
    unique(f"{P}bob"),
    unique(f"{P}sys"),
)
ANALYSTS = unique(f"{P}analysts")
USERS = (ANALYTICS, FINANCE, ALICE, BOB, SYSTEM)


def _run(*argv: str, check: bool = True) -> None:
    # Another test session may hold /etc/passwd's lock for a moment (exit 10): try again.
    for _ in range(20):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 10:
            break
        time.sleep(0.2)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _remove_all() -> None:
    for user in USERS:
        if _exists_user(user):
            _run("userdel", user, check=False)
    _run("groupdel", ANALYSTS, check=False)


def _exists_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def os_users() -> Iterator[None]:
    """Real users: two run-as users, two pushers, a system account; a group with alice in it."""
    _remove_all()  # leftovers of a crashed run
    try:
        for user in (ANALYTICS, FINANCE, ALICE, BOB):
            _run("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", user)
        _run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM)
        _run("groupadd", ANALYSTS)
        _run("gpasswd", "--add", ALICE, ANALYSTS)
        yield
    finally:
        _remove_all()


GOOD = f"""
[[tenant]]
name = "analytics"
dags = ["analytics.*", "reports_[0-9]*"]
pushers = ["{ALICE}", "@{ANALYSTS}"]
run_as = "{ANALYTICS}"
weight = 3
max_active_tasks = 8
limits = {{ memory = "2G", processes = 256, open_files = 1024, cpu_time = 3600 }}

[[tenant]]
name = "finance"
dags = ["finance.*", "ledger"]
pushers = ["{BOB}"]
run_as = "{FINANCE}"
hardening = {{ bubblewrap = "required", landlock = "off", network = true }}
"""


def problems_of(text: str, min_uid: int = 1000) -> list[str]:
    return check_mapping(text, SystemUsers(), min_uid=min_uid)[1]


def tenant(**fields: object) -> str:
    """One [[tenant]] table: a valid one, with ``fields`` replaced (None drops a key)."""
    base: dict[str, object] = {
        "name": '"solo"',
        "dags": '["solo.*"]',
        "pushers": f'["{ALICE}"]',
        "run_as": f'"{ANALYTICS}"',
    }
    base.update(fields)
    lines = [f"{k} = {v}" for k, v in base.items() if v is not None]
    return "[[tenant]]\n" + "\n".join(lines) + "\n"


# --- the overlap detector -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("analytics.*", "*.daily"),
        ("etl", "etl*"),
        ("x?", "xy"),
        ("*", "a"),
        ("a*b", "*ab*"),
        ("[a-c]x", "b?"),
        ("[!a]x", "bx"),
        ("a*c*e", "*b*d*"),
        ("same", "same"),
        ("a**b", "ab"),
    ],
)
def test_overlapping_patterns_are_detected(a: str, b: str) -> None:
    witness = overlap_witness(a, b)
    assert witness is not None
    assert fnmatchcase(witness, a) and fnmatchcase(witness, b)
    assert overlaps(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("a.*", "b.*"),
        ("etl", "etl2"),
        ("x?", "x"),
        ("x?", "xyz"),
        ("*.daily", "*.hourly"),
        ("[a-c]x", "[d-f]x"),
        ("[!a]x", "ax"),
        ("a*", "b*"),
        ("abc*", "abd*"),
        ("*a", "*b"),
        ("[z-a]*", "*"),  # an empty range matches nothing in fnmatch
        ("a/b*", "*"),  # '/' is no dag_id character
    ],
)
def test_disjoint_patterns_are_not_reported(a: str, b: str) -> None:
    assert overlap_witness(a, b) is None
    assert not overlaps(b, a)


def test_the_alphabet_is_the_dag_id_alphabet() -> None:
    ascii_chars = {chr(i) for i in range(128)}
    assert {c for c in ascii_chars if is_valid_id(c) or c == "."} == set(DAG_ID_ALPHABET)


_PATTERN = st.text(alphabet="ab.*?[]!-", max_size=7)


@settings(max_examples=400, deadline=None)
@given(a=_PATTERN, b=_PATTERN, samples=st.lists(st.text(alphabet="ab.-c", max_size=6)))
def test_the_detector_agrees_with_fnmatch(a: str, b: str, samples: list[str]) -> None:
    """Exact over dag_id characters: every common match is found, every witness is real."""
    witness = overlap_witness(a, b)
    if witness is not None:
        assert fnmatchcase(witness, a) and fnmatchcase(witness, b)
    for sample in samples:
        if fnmatchcase(sample, a) and fnmatchcase(sample, b):
            assert witness is not None, sample


# --- parsing and validation -------------------------------------------------------------------


def test_a_valid_mapping_answers_owner_run_as_and_may_push(os_users: None) -> None:
    mapping = parse_tenants(GOOD, SystemUsers(), source="t.toml")
    assert [t.name for t in mapping.tenants] == ["analytics", "finance"]
    analytics = mapping.tenants[0]
    assert analytics.limits == TenantLimits(
        memory=2 * 1024**3, processes=256, open_files=1024, cpu_time=3600
    )
    assert mapping.tenants[1].limits == TenantLimits()
    assert (analytics.weight, analytics.max_active_tasks) == (3, 8)
    assert (mapping.tenants[1].weight, mapping.tenants[1].max_active_tasks) == (1, None)
    assert analytics.hardening == TenantHardening()  # the node's settings
    assert mapping.tenants[1].hardening == TenantHardening(
        bubblewrap="required", landlock="off", network=True
    )
    assert mapping.owner("analytics.daily") is analytics
    assert mapping.owner("reports_7x").name == "analytics"
    assert mapping.owner("Analytics.daily") is None  # case-sensitive
    assert mapping.owner("ledger2") is None
    assert mapping.run_as("ledger") == FINANCE
    assert mapping.run_as("nobody.s") is None
    # by user name
    assert mapping.may_push(ALICE, user_groups(ALICE), "analytics.x")
    assert mapping.may_push(BOB, user_groups(BOB), "ledger")
    assert not mapping.may_push(BOB, user_groups(BOB), "analytics.x")
    assert not mapping.may_push(ALICE, user_groups(ALICE), "ledger")
    assert not mapping.may_push(ALICE, user_groups(ALICE), "unowned")
    # by group: anyone in the group, whatever the name
    assert mapping.may_push("carol", frozenset({ANALYSTS}), "analytics.x")
    assert not mapping.may_push("carol", frozenset({"users"}), "analytics.x")


def test_user_groups_include_the_primary_and_supplementary_groups(os_users: None) -> None:
    assert user_groups(ALICE) >= {ALICE, ANALYSTS}
    assert ANALYSTS not in user_groups(BOB)
    assert "root" in user_groups("root")
    with pytest.raises(Exception, match="unknown user"):
        user_groups(f"{P}ghost")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (tenant(run_as='"root"'), "tenant[solo].run_as: 'root' is root (uid 0)"),
        (tenant(run_as=f'"{SYSTEM}"'), "below tenant_min_uid 1000"),
        (tenant(run_as='"nobody"'), "tenant[solo].run_as: 'nobody' is nobody (uid 65534)"),
        (
            tenant() + tenant(name='"other"', dags='["other.*"]'),
            f"tenant[other].run_as: '{ANALYTICS}' is also tenant solo's user",
        ),
        (tenant(run_as=f'"{P}ghost"'), f"tenant[solo].run_as: unknown user '{P}ghost'"),
        (tenant(run_as="7"), "tenant[solo].run_as: expected a user name, got 7"),
        (tenant(run_as=None), "tenant[solo].run_as: missing"),
        (tenant(pushers=f'["{P}ghost"]'), f"tenant[solo].pushers[0]: unknown user '{P}ghost'"),
        (tenant(pushers=f'["@{P}nogroup"]'), f"pushers[0]: unknown group '{P}nogroup'"),
        (tenant(pushers="[]"), "tenant[solo].pushers: empty"),
        (tenant(dags="[]"), "tenant[solo].dags: empty"),
        (tenant(dags='"solo.*"'), "tenant[solo].dags: expected a list of strings, got a string"),
        (tenant(dags='["ok", 3]'), "tenant[solo].dags[1]: expected a non-empty string"),
        (tenant(dags='["a/b"]'), "tenant[solo].dags[0]: 'a/b' matches no dag_id"),
        (tenant(name=None), "tenant[#1].name: missing"),
        (tenant(name='"bad name"'), "tenant[#1].name: expected 1-64 characters"),
        (tenant(extra="1"), "tenant[solo]: unknown key 'extra'"),
        (tenant(limits='{ memory = "lots" }'), "tenant[solo].limits.memory: invalid size"),
        (tenant(limits="{ memory = 0 }"), "tenant[solo].limits.memory: must be positive"),
        (tenant(limits="{ processes = 0 }"), "limits.processes: expected a positive integer"),
        (tenant(limits="{ open_files = true }"), "limits.open_files: expected a positive"),
        (tenant(limits='{ cpu_time = "1h" }'), "limits.cpu_time: expected a positive integer"),
        (tenant(limits="{ swap = 1 }"), "tenant[solo].limits: unknown key 'swap'"),
        (tenant(limits="3"), "tenant[solo].limits: expected a table, got int"),
        (tenant(weight="0"), "tenant[solo].weight: expected a positive integer (at most"),
        (tenant(weight="-2"), "tenant[solo].weight: expected a positive integer"),
        (tenant(weight="1.5"), "tenant[solo].weight: expected a positive integer"),
        (tenant(weight="true"), "tenant[solo].weight: expected a positive integer"),
        (tenant(weight='"3"'), "tenant[solo].weight: expected a positive integer"),
        (tenant(weight=str(2**31)), "tenant[solo].weight: expected a positive integer"),
        (tenant(max_active_tasks="0"), "tenant[solo].max_active_tasks: expected a positive"),
        (tenant(max_active_tasks='"8"'), "tenant[solo].max_active_tasks: expected a positive"),
        (tenant(hardening='"on"'), "tenant[solo].hardening: expected a table, got a string"),
        (tenant(hardening="{ seccomp = 'auto' }"), "tenant[solo].hardening: unknown key 'seccomp'"),
        (
            tenant(hardening="{ landlock = 'yes' }"),
            "tenant[solo].hardening.landlock: expected one of auto, required, off, got 'yes'",
        ),
        (tenant(hardening="{ cgroup = true }"), "hardening.cgroup: expected one of auto"),
        (tenant(hardening="{ network = 'on' }"), "hardening.network: expected true or false"),
        (tenant() + tenant(dags='["other"]'), "tenant[solo]: duplicate name (tenants #1 and #2)"),
        (
            tenant(name='"a"', dags='["analytics.*"]') + tenant(name='"b"', dags='["*.daily"]'),
            "tenant[b].dags[0]: '*.daily' overlaps tenant[a].dags[0] 'analytics.*'",
        ),
        ("owner = 'me'\n" + tenant(), "unknown key 'owner'"),
        ("[tenant]\nname = 'x'\n", "expected [[tenant]] tables"),
        ("[[tenant]\nname = 'x'\n", "not valid TOML"),
    ],
)
def test_every_validation_error_is_located(os_users: None, text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(expected in p for p in problems), problems


def test_every_problem_is_reported_at_once(os_users: None) -> None:
    text = tenant(run_as='"root"', pushers="[]", dags='["a.*"]') + tenant(
        name='"other"', dags='["a.b"]', run_as=f'"{P}ghost"'
    )
    problems = problems_of(text)
    assert len(problems) == 4, problems
    with pytest.raises(TenancyError) as caught:
        parse_tenants(text, SystemUsers(), source="/etc/t.toml")
    assert caught.value.problems == problems
    assert caught.value.exit_code == 5
    assert str(caught.value).startswith("/etc/t.toml: tenant[solo].pushers: empty")


def test_invalid_toml_names_the_line(os_users: None) -> None:
    (problem,) = problems_of('[[tenant]]\nname = "x"\ndags = ["a" "b"]\n')
    assert problem.startswith("not valid TOML") and "(at line 3, column" in problem


def test_the_minimum_uid_is_configurable(os_users: None) -> None:
    low = pwd.getpwnam(SYSTEM).pw_uid
    assert problems_of(tenant(run_as=f'"{SYSTEM}"'), min_uid=low) == []
    assert problems_of(tenant(run_as=f'"{SYSTEM}"'), min_uid=low + 1) != []
    # root stays refused whatever the minimum
    assert any("is root" in p for p in problems_of(tenant(run_as='"root"'), min_uid=1))


def test_an_empty_mapping_owns_nothing(os_users: None) -> None:
    mapping = parse_tenants("", SystemUsers())
    assert mapping.tenants == () and mapping.owner("etl") is None


# --- reading the file safely -------------------------------------------------------------------


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A root-owned 0755 directory; its parents are 0700 (pytest) and /tmp (sticky 1777)."""
    path = tmp_path / "etc"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path


def write(path: Path, text: str = GOOD, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_safe_file_is_read(etc: Path) -> None:
    assert read_mapping(write(etc / "tenants.toml")) == GOOD


def test_a_file_owned_by_another_user_is_refused(os_users: None, etc: Path) -> None:
    path = write(etc / "tenants.toml")
    os.chown(path, pwd.getpwnam(ALICE).pw_uid, -1)
    with pytest.raises(TenancyError, match=f"owned by {ALICE}, not root: chown root"):
        read_mapping(path)
    assert read_mapping(path, check_permissions=False) == GOOD


def test_a_group_writable_file_is_refused(etc: Path) -> None:
    path = write(etc / "tenants.toml", mode=0o664)
    with pytest.raises(TenancyError, match="mode 0664 is writable by group or others: chmod go-w"):
        read_mapping(path)


def test_a_group_writable_directory_above_is_refused(etc: Path) -> None:
    path = write(etc / "tenants.toml")
    etc.chmod(0o775)
    with pytest.raises(TenancyError, match=f"{etc}: mode 0775"):
        read_mapping(path)


def test_a_directory_above_owned_by_a_user_is_refused(os_users: None, etc: Path) -> None:
    path = write(etc / "tenants.toml")
    os.chown(etc, pwd.getpwnam(BOB).pw_uid, -1)
    with pytest.raises(TenancyError, match=f"{etc}: owned by {BOB}"):
        read_mapping(path)


def test_symlinks_are_refused(etc: Path) -> None:
    real = write(etc / "real.toml")
    link = etc / "tenants.toml"
    link.symlink_to(real)
    with pytest.raises(TenancyError, match="is a symlink"):
        read_mapping(link)
    linked_dir = etc / "linked"
    linked_dir.symlink_to(etc)
    with pytest.raises(TenancyError, match=f"{linked_dir}: is a symlink"):
        read_mapping(linked_dir / "real.toml")


def test_a_sticky_root_directory_is_accepted_but_not_a_plain_writable_one(etc: Path) -> None:
    sticky = etc / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    path = write(sticky / "tenants.toml")
    assert read_mapping(path) == GOOD
    sticky.chmod(0o777)
    with pytest.raises(TenancyError, match="mode 0777"):
        read_mapping(path)


def test_not_a_regular_file_is_refused(etc: Path) -> None:
    fifo = etc / "tenants.toml"
    os.mkfifo(fifo, 0o644)
    with pytest.raises(TenancyError, match="not a regular file"):
        read_mapping(fifo)


def test_a_missing_file_says_how_to_point_elsewhere(etc: Path) -> None:
    for path in (etc / "none.toml", etc / "nodir" / "none.toml"):
        with pytest.raises(TenancyError) as caught:
            read_mapping(path)
        message = str(caught.value)
        assert f"tenant mapping {path} does not exist" in message
        assert "tenants_file" in message and "ISOLATE_TENANTS_FILE" in message


def test_validate_file_reports_permissions_and_content_together(os_users: None, etc: Path) -> None:
    bad = write(etc / "bad.toml", tenant(run_as='"root"'), mode=0o666)
    assert any("mode 0666" in p for p in validate_file(bad, min_uid=1000))
    problems = validate_file(bad, min_uid=1000, check_permissions=False)
    assert problems == ["tenant[solo].run_as: 'root' is root (uid 0): tasks never run as root"]
    assert validate_file(write(etc / "good.toml"), min_uid=1000) == []


# --- configuration -----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    clear_isolate_env(monkeypatch)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ISOLATE_HOME", str(home))
    return home


def test_the_path_comes_from_the_env_then_the_home_then_etc(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tenants_path(load_config()) == DEFAULT_TENANTS_FILE
    (clean_env / "isolate.toml").write_text('tenants_file = "/srv/t.toml"\ntenant_min_uid = 500\n')
    assert tenants_path(load_config()) == Path("/srv/t.toml")
    assert load_config().settings.tenant_min_uid == 500
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", "/opt/t.toml")
    monkeypatch.setenv("ISOLATE_TENANT_MIN_UID", "2000")
    assert tenants_path(load_config()) == Path("/opt/t.toml")
    assert load_config().settings.tenant_min_uid == 2000
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", "relative.toml")
    with pytest.raises(TenancyError, match="must be an absolute path"):
        tenants_path(load_config())


def test_load_tenants_reads_the_configured_file(
    os_users: None, clean_env: Path, etc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(etc / "tenants.toml")
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(path))
    mapping = load_tenants(load_config())
    assert mapping.source == str(path) and mapping.run_as("ledger") == FINANCE
    write(path, tenant(run_as='"root"'))
    with pytest.raises(TenancyError, match=f"^{path}: tenant\\[solo\\].run_as"):
        load_tenants(load_config())


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def live(os_users: None, clean_env: Path, etc: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write(etc / "tenants.toml")
    monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(path))
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(isolate, ["tenants", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_list(live: Path) -> None:
    code, out, _ = run("list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "TENANT",
        "DAGS",
        "PUSHERS",
        "RUN_AS",
        "SHARE",
        "LIMITS",
        "HARDENING",
    ]
    assert lines[1].startswith("analytics") and ANALYTICS in lines[1]
    assert f"{ANALYTICS}  weight=3 max=8  memory=2.0 GiB processes=256" in lines[1]
    assert lines[2].split() == [
        "finance",
        "finance.*,ledger",
        BOB,
        FINANCE,
        "weight=1",
        "max=-",
        "-",
        "landlock=off",
        "bubblewrap=required",
        "network=true",
    ]
    code, out, _ = run("list", "--json")
    data = json.loads(out)
    assert data[1] == {
        "name": "finance",
        "dags": ["finance.*", "ledger"],
        "pushers": [BOB],
        "run_as": FINANCE,
        "weight": 1,
        "max_active_tasks": None,
        "limits": {"memory": None, "processes": None, "open_files": None, "cpu_time": None},
        "hardening": {
            "cgroup": None,
            "landlock": "off",
            "bubblewrap": "required",
            "network": True,
        },
    }
    assert data[0]["limits"]["memory"] == 2 * 1024**3
    assert (data[0]["weight"], data[0]["max_active_tasks"]) == (3, 8)


def test_cli_check(live: Path) -> None:
    code, out, _ = run("check", "analytics.daily", "--user", ALICE)
    assert code == 0
    assert "tenant:    analytics" in out and f"run_as:    {ANALYTICS}" in out
    assert "share:     weight=3 max=8" in out
    assert f"may push:  yes ({ALICE})" in out
    # The node's settings (defaults here) where the tenant's table says nothing.
    assert "hardening: cgroup=auto landlock=auto bubblewrap=auto (no network" in out
    code, out, _ = run("check", "analytics.daily", "--user", BOB, "--json")
    assert json.loads(out) == {
        "dag_id": "analytics.daily",
        "tenant": "analytics",
        "run_as": ANALYTICS,
        "weight": 3,
        "max_active_tasks": 8,
        "limits": {"cpu_time": 3600, "memory": 2 * 1024**3, "open_files": 1024, "processes": 256},
        "hardening": {"cgroup": None, "landlock": None, "bubblewrap": None, "network": None},
        "effective_hardening": {
            "cgroup": "auto",
            "landlock": "auto",
            "bubblewrap": "auto",
            "network": False,
        },
        "user": BOB,
        "may_push": False,
    }
    code, out, _ = run("check", "ledger")  # default user: root, not a pusher
    assert code == 0 and "may push:  no (root)" in out
    assert "hardening: cgroup=auto landlock=off bubblewrap=required (network" in out
    code, out, err = run("check", "unowned.dag")
    assert code == 3 and out == ""
    assert err.strip() == (
        f"isolate: error: no tenant owns DAG 'unowned.dag' in {live}: it will not run; "
        "add a matching pattern to a tenant's dags"
    )
    code, _, err = run("check", "ledger", "--user", f"{P}ghost")
    assert code == 2 and f"unknown user '{P}ghost'" in err


def test_cli_refuses_an_unsafe_live_mapping(live: Path) -> None:
    live.chmod(0o646)
    code, _, err = run("list")
    assert code == 5 and "mode 0646 is writable by group or others" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_validate(live: Path, etc: Path) -> None:
    assert run("validate") == (0, "ok\n", "")
    candidate = write(etc / "new.toml", tenant(run_as='"root"', pushers="[]"), mode=0o600)
    code, out, _ = run("validate", str(candidate))
    assert code == 5
    assert out.splitlines() == [
        "tenant[solo].pushers: empty: list at least one",
        "tenant[solo].run_as: 'root' is root (uid 0): tasks never run as root",
    ]
    os.chown(candidate, pwd.getpwnam(ALICE).pw_uid, -1)
    code, out, _ = run("validate", str(candidate))
    assert code == 5 and f"owned by {ALICE}" in out
    write(candidate, GOOD.replace("ledger", "ledger2"), mode=0o600)
    assert run("validate", str(candidate), "--no-permissions") == (0, "ok\n", "")
    code, out, _ = run("validate", str(candidate))
    assert code == 5 and f"owned by {ALICE}" in out
    code, _, err = run("validate", "--no-permissions")
    assert code == 2 and "is the live mapping: its permissions are always checked" in err
    live.unlink()
    code, out, _ = run("validate")
    assert code == 5 and "does not exist" in out


def test_every_command_has_an_example_and_home() -> None:
    for name in ("list", "check", "validate"):
        result = CliRunner().invoke(isolate, ["tenants", name, "--help"])
        assert "Example:" in result.output and "--home" in result.output


# --- weights, caps and groups shared between tenants ------------------------------------------


class FakeUsers(UserDatabase):
    """A user database of plain data: name -> (uid, primary gid, supplementary gids)."""

    def __init__(self, users: dict[str, tuple[int, int, set[int]]], groups: dict[int, str]):
        self.users = users
        self.groups = groups

    def uid_of(self, user: str) -> int | None:
        return self.users[user][0] if user in self.users else None

    def has_group(self, group: str) -> bool:
        return group in self.groups.values()

    def primary_gid_of(self, user: str) -> int | None:
        return self.users[user][1] if user in self.users else None

    def gids_of(self, user: str) -> frozenset[int]:
        if user not in self.users:
            return frozenset()
        _, primary, others = self.users[user]
        return frozenset({primary, *others})

    def group_name_of(self, gid: int) -> str | None:
        return self.groups.get(gid)


def two_tenants(a_user: str, b_user: str, c_user: str | None = None) -> str:
    text = tenant(name='"a"', dags='["a.*"]', pushers='["root"]', run_as=f'"{a_user}"')
    text += tenant(name='"b"', dags='["b.*"]', pushers='["root"]', run_as=f'"{b_user}"')
    if c_user:
        text += tenant(name='"c"', dags='["c.*"]', pushers='["root"]', run_as=f'"{c_user}"')
    return text


FAKE_GROUPS = {100: "users", 2001: "svc-a", 2002: "svc-b", 2003: "svc-c", 3000: "docker"}


def fake_problems(users: dict[str, tuple[int, int, set[int]]], text: str) -> list[str]:
    db = FakeUsers({"root": (0, 0, set()), **users}, FAKE_GROUPS)
    return check_mapping(text, db)[1]


def test_tenants_whose_users_share_a_primary_group_are_refused_fake_users() -> None:
    users = {
        "svc-a": (2001, 100, set()),
        "svc-b": (2002, 100, set()),
        "svc-c": (2003, 100, set()),
    }
    tail = (
        "a tenant's bundles and logs are opened to its user's primary group, so each tenant "
        "could read the other's; give each run-as user a group of its own (usermod -g)"
    )
    assert fake_problems(users, two_tenants("svc-a", "svc-b", "svc-c")) == [
        f"tenant[b].run_as: 'svc-b' and tenant a's user 'svc-a' share the primary group "
        f"'users' (gid 100): {tail}",
        f"tenant[c].run_as: 'svc-c' and tenant a's user 'svc-a' share the primary group "
        f"'users' (gid 100): {tail}",
    ]


def test_a_member_of_another_tenants_primary_group_is_refused_fake_users() -> None:
    users = {"svc-a": (2001, 2001, set()), "svc-b": (2002, 2002, {2001, 3000})}
    assert fake_problems(users, two_tenants("svc-a", "svc-b")) == [
        "tenant[b].run_as: 'svc-b' is a member of the group 'svc-a' (gid 2001), the primary group "
        "of tenant a's user 'svc-a': its tasks could read tenant a's bundles and logs; remove "
        "it from the group (gpasswd -d svc-b svc-a)"
    ]


def test_own_primary_groups_and_a_common_supplementary_one_are_fine_fake_users() -> None:
    users = {"svc-a": (2001, 2001, {3000}), "svc-b": (2002, 2002, {3000, 100})}
    assert fake_problems(users, two_tenants("svc-a", "svc-b")) == []
    # One user for two tenants is one problem, reported as such, not also as a group.
    (problem,) = fake_problems(users, two_tenants("svc-a", "svc-a"))
    assert "'svc-a' is also tenant a's user" in problem


SHARED_A, SHARED_B, SHARED_GROUP = unique(f"{P}sh-a"), unique(f"{P}sh-b"), unique(f"{P}shared")
OWN_C, OWN_D, COMMON = unique(f"{P}own-c"), unique(f"{P}own-d"), unique(f"{P}common")


def test_real_users_sharing_a_primary_group_are_refused_everywhere(
    clean_env: Path, etc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reported by `tenants validate`, and refused when the scheduler loads the mapping."""
    with make_os_users(SHARED_A, SHARED_B, primary_group=SHARED_GROUP) as made:
        gid = made[SHARED_A].pw_gid
        assert made[SHARED_B].pw_gid == gid
        text = two_tenants(SHARED_A, SHARED_B)
        expected = (
            f"tenant[b].run_as: '{SHARED_B}' and tenant a's user '{SHARED_A}' share the primary "
            f"group '{SHARED_GROUP}' (gid {gid}): a tenant's bundles and logs are opened to its "
            "user's primary group, so each tenant could read the other's; give each run-as user "
            "a group of its own (usermod -g)"
        )
        assert problems_of(text) == [expected]
        path = write(etc / "tenants.toml", text, mode=0o600)
        monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(path))
        assert run("validate") == (5, expected + "\n", "")
        with pytest.raises(TenancyError) as caught:
            load_tenants(load_config())
        assert caught.value.problems == [expected]
        watch = TenantWatch(load_config(), store=None)
        with pytest.raises(TenancyError, match="the tenant mapping is invalid, no task starts"):
            watch.tenant_for("a.etl")


def test_real_users_with_own_groups_and_a_common_one_are_fine(
    clean_env: Path, etc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group both users are members of is no tenant's: only primary groups open files."""
    with make_os_users(OWN_C, OWN_D, groups=(COMMON,)) as made:
        assert made[OWN_C].pw_gid != made[OWN_D].pw_gid
        text = two_tenants(OWN_C, OWN_D)
        assert problems_of(text) == []
        path = write(etc / "tenants.toml", text, mode=0o600)
        monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(path))
        assert run("validate") == (0, "ok\n", "")


def test_a_group_change_after_loading_stops_the_launch(
    clean_env: Path, etc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """usermod -g after the scheduler loaded the mapping: the next launch re-checks it."""
    with make_os_users(OWN_C, OWN_D) as made:
        path = write(etc / "tenants.toml", two_tenants(OWN_C, OWN_D), mode=0o600)
        monkeypatch.setenv("ISOLATE_TENANTS_FILE", str(path))
        watch = TenantWatch(load_config(), store=None)
        owner = watch.tenant_for("b.etl")
        assert owner is not None and owner.run_as == OWN_D
        _run("usermod", "-g", str(made[OWN_C].pw_gid), OWN_D)
        try:
            shared = f"'{OWN_D}' and tenant a's user '{OWN_C}' share the primary group"
            with pytest.raises(TenancyError, match=shared):
                watch.tenant_for("b.etl")
        finally:
            _run("usermod", "-g", str(made[OWN_D].pw_gid), OWN_D)
        assert watch.tenant_for("b.etl") == owner
