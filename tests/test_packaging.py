"""The systemd unit in packaging/, and the guides: every command they name exists.

The unit must start the real ``isolate scheduler`` command with what it needs (root, cgroup
delegation, a restart policy, SIGTERM to the scheduler alone) and none of the systemd options
that would break switching users, cgroups or bubblewrap. The guides may only name command
paths and options that the click command tree really has.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cli.main import isolate

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "isolate-scheduler.service"
GUIDES = [ROOT / "docs" / name for name in ("admin-guide.md", "author-guide.md", "concepts.md")]

# Options that would break the scheduler or its tasks (see the unit's own comments).
FORBIDDEN = {
    "NoNewPrivileges",
    "ProtectControlGroups",
    "RestrictNamespaces",
    "PrivateUsers",
    "ProtectKernelTunables",
    "ProtectKernelLogs",
    "ProtectProc",
    "ProcSubset",
    "DynamicUser",
}
SHELL_FENCES = {"sh", "bash", "shell", "console"}
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1"}
COMMAND_WORD = re.compile(r"[a-z][a-z0-9-]*\Z")


class UnitParser(configparser.ConfigParser):
    """systemd units are INI-like: repeated keys are allowed, keys are case-sensitive, and
    "%" starts a specifier, not an interpolation."""

    def __init__(self) -> None:
        super().__init__(strict=False, interpolation=None)

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def read_unit() -> configparser.ConfigParser:
    parser = UnitParser()
    parser.read_string(UNIT.read_text(encoding="utf-8"), source=str(UNIT))
    return parser


def test_the_unit_file_parses_with_its_sections() -> None:
    unit = read_unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    assert unit["Service"]["Type"] == "simple"
    assert unit["Service"]["User"] == "root"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_exec_start_runs_the_real_scheduler_command() -> None:
    argv = shlex.split(read_unit()["Service"]["ExecStart"])
    assert Path(argv[0]).is_absolute(), "systemd needs an absolute path"
    assert Path(argv[0]).name == "isolate"
    assert argv[1] == "scheduler"
    command = isolate.commands[argv[1]]
    assert not isinstance(command, click.Group)
    unknown = [a for a in argv[2:] if a.startswith("-") and a.split("=")[0] not in opts(command)]
    assert not unknown


def test_the_unit_keeps_what_the_scheduler_needs() -> None:
    service = read_unit()["Service"]
    assert service["Delegate"] == "yes"
    assert service["Restart"] == "on-failure"
    assert service.get("RestartSec")
    # SIGTERM to the scheduler alone: it stops after its pass (cli/runs.py handles SIGTERM).
    assert service["KillMode"] == "mixed"
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
    assert service.get("TimeoutStopSec")
    assert service["Environment"] == "ISOLATE_HOME=/var/lib/isolate"
    assert service.get("ProtectSystem") != "strict"
    assert not FORBIDDEN & set(service)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    installed = Path(sys.executable).parent / "isolate"
    if not installed.is_file():
        pytest.skip(f"no installed isolate command next to {sys.executable}")
    # verify also checks that ExecStart's program exists: point it at this installation.
    text = UNIT.read_text(encoding="utf-8")
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/usr/local/bin/isolate", str(installed)), encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "isolate-scheduler.service" not in done.stderr, done.stderr


def opts(command: click.Command) -> set[str]:
    """Every spelling of every option of ``command``, its help options included."""
    names = {"-h", "--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts, param.secondary_opts)
    return names


def shell_snippets(text: str) -> list[str]:
    """Lines of shell code blocks, and inline code spans outside any code block."""
    snippets: list[str] = []
    fence = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
    for match in fence.finditer(text):
        if match.group(1) in SHELL_FENCES:
            snippets += match.group(2).splitlines()
    prose = fence.sub("", text)
    snippets += re.findall(r"`([^`\n]+)`", prose)
    return snippets


def invocations(snippet: str) -> list[list[str]]:
    """The words after each ``isolate`` (or ``.../bin/isolate``) in a snippet, up to the end
    of that command (a shell operator, or an ellipsis standing for "and so on")."""
    try:
        words = shlex.split(snippet, comments=True)
    except ValueError:
        words = snippet.split()
    found = []
    for i, word in enumerate(words):
        if i and words[i - 1] in ("from", "import"):
            continue  # Python in prose: `from isolate import DAG, task`
        if word == "isolate" or word.endswith("/bin/isolate"):
            rest: list[str] = []
            for item in words[i + 1 :]:
                if item in SHELL_OPERATORS or item in ("...", "…") or item == "--":
                    break
                rest.append(item)
            found.append(rest)
    return found


def check_invocation(words: list[str]) -> str | None:
    """None if ``isolate <words>`` names a real command path with real options, else why not."""
    command: click.Command = isolate
    path = ["isolate"]
    for word in words:
        if word.startswith("-"):
            if word.split("=")[0] not in opts(command):
                return f"{' '.join(path)} has no option {word}"
        elif isinstance(command, click.Group):
            if not COMMAND_WORD.match(word):
                return None  # a path or a placeholder: not an invocation (`ln -s .../isolate x`)
            if word not in command.commands:
                return f"{' '.join(path)} has no command {word!r}"
            command = command.commands[word]
            path.append(word)
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in GUIDES:
        for snippet in shell_snippets(doc.read_text(encoding="utf-8")):
            found += [(doc.name, words) for words in invocations(snippet)]
    return found


def test_the_guides_name_only_real_commands_and_options() -> None:
    found = documented_commands()
    names = {tuple(w for w in words if COMMAND_WORD.match(w))[:1] for _, words in found}
    # The extraction works: the guides name many commands (a broken regex would find none).
    assert len(found) > 50
    assert {("scheduler",), ("push",), ("gc",), ("db",), ("tenants",), ("test",)} <= names
    problems = [
        f"{doc}: `isolate {' '.join(words)}`: {why}"
        for doc, words in found
        if (why := check_invocation(words)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_command_that_does_not_exist() -> None:
    assert check_invocation(["dags", "history", "etl"]) is None
    assert check_invocation(["push", "dags/etl", "--no-build", "-m", "x"]) is None
    assert check_invocation(["db", "downgrade"]) == "isolate db has no command 'downgrade'"
    assert check_invocation(["gc", "--keep", "2"]) == "isolate gc has no option --keep"
    assert invocations("isolate runs list etl | head  # newest first") == [["runs", "list", "etl"]]
    assert invocations("from isolate import DAG, task") == []
    assert invocations("ln -s /opt/isolate/bin/isolate /usr/local/bin/isolate") == [
        ["/usr/local/bin/isolate"],
        [],
    ]


def test_the_guides_link_to_files_that_exist() -> None:
    missing = []
    for doc in GUIDES:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                missing.append(f"{doc.name}: {target}")
    assert not missing


def test_the_repository_tracks_nothing_it_ignores() -> None:
    """A tracked path that .gitignore names (a stray .venv file, a build tree) is a mistake:
    scripts/demo.sh could not make its .venv directory in a fresh clone."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        # safe.directory: the checkout may belong to another user (the plain-user lane).
        ["git", "-c", f"safe.directory={ROOT}", "ls-files", "-ci", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == []
