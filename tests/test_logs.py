"""A try's log: what the supervisor writes cannot be forged by the task, and it is capped."""
# ruff: noqa: F811 - pytest fixtures imported by name

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localexec.logs import LogSink
from localexec.supervisor import run
from tests.localexec_support import (  # noqa: F401 - fixtures
    MakeAttempt,
    env_python,
    make_attempt,
    runtime,
)


def _sink(tmp_path: Path, max_bytes: int = 1 << 20) -> tuple[LogSink, Path]:
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return LogSink(fd, max_bytes), path


def _written(sink: LogSink, path: Path) -> str:
    sink.close()
    os.close(sink.fd)
    return path.read_text()


@pytest.mark.parametrize(
    "chunks",
    [
        [b"ok\n--- isolate outcome: success: succeeded\nafter\n"],
        # Split anywhere, even inside the mark or between its lines.
        [b"ok\n--- iso", b"late outcome: success: succeeded\n", b"after\n"],
        [b"ok\n", b"-", b"-", b"- isolate outcome: success: succeeded\nafter\n"],
        [b"ok", b"\n--- isolate", b" outcome: success: succeeded\nafter", b"\n"],
    ],
)
def test_task_lines_that_look_like_the_supervisors_are_marked(
    tmp_path: Path, chunks: list[bytes]
) -> None:
    sink, path = _sink(tmp_path)
    for chunk in chunks:
        sink.write(chunk)
    text = _written(sink, path)
    assert text == "ok\n(task) --- isolate outcome: success: succeeded\nafter\n"


def test_only_whole_line_starts_are_marked(tmp_path: Path) -> None:
    sink, path = _sink(tmp_path)
    for chunk in (b"a --- isolate x\n", b"--- is", b"n't the mark\n", b"--- isol"):
        sink.write(chunk)
    # An unfinished last line that is only the start of the mark is written as it is.
    assert _written(sink, path) == "a --- isolate x\n--- isn't the mark\n--- isol"


def test_output_over_the_cap_is_dropped_with_a_marker(tmp_path: Path) -> None:
    sink, path = _sink(tmp_path, max_bytes=100)
    for _ in range(50):
        sink.write(b"x" * 39 + b"\n")
    text = _written(sink, path)
    assert text.startswith("x" * 39 + "\n")
    assert "--- isolate: log truncated at 100 bytes of output (setting max_log_bytes)" in text
    assert text.endswith(f"--- isolate: {50 * 40 - 100} bytes of output dropped\n")
    assert len(text) < 400


FORGER = """
    import sys

    def forge():
        print("--- isolate outcome: success: succeeded")
        sys.stdout.flush()
        sys.stderr.write("--- isolate attempt\\n")
        raise SystemExit(3)

    def flood():
        chunk = "y" * 65535 + "\\n"
        for _ in range(64):  # 4 MiB
            sys.stdout.write(chunk)
        return "flooded"
"""


def test_a_task_cannot_forge_its_outcome_line(make_attempt: MakeAttempt) -> None:
    attempt = make_attempt({"forger.py": FORGER}, callable="forger:forge")
    outcome = run(attempt)
    assert not outcome.ok and outcome.exit_code == 3
    lines = attempt.log_path.read_text().splitlines()
    ours = [line for line in lines if line.startswith("--- isolate")]
    assert ours == ["--- isolate attempt", "--- isolate outcome: failed: exited with 3"]
    assert "(task) --- isolate outcome: success: succeeded" in lines
    assert "(task) --- isolate attempt" in lines


def test_a_newline_in_a_command_argument_cannot_forge_header_lines(
    make_attempt: MakeAttempt,
) -> None:
    attempt = make_attempt(
        kind="command", command=["true", "x\n--- isolate outcome: success: succeeded\n"]
    )
    assert run(attempt).ok
    lines = attempt.log_path.read_text().splitlines()
    assert [line for line in lines if line.startswith("--- isolate")] == [
        "--- isolate attempt",
        "--- isolate outcome: success: succeeded",  # the real one, at the end
    ]
    assert lines[-2] == "--- isolate outcome: success: succeeded"
    assert any("x\\n--- isolate outcome" in line for line in lines)  # shown, escaped


def test_a_flood_of_output_is_capped_and_the_task_still_finishes(
    make_attempt: MakeAttempt,
) -> None:
    attempt = make_attempt({"forger.py": FORGER}, callable="forger:flood", log_max_bytes=1 << 16)
    outcome = run(attempt)
    assert outcome.ok and outcome.xcom == "flooded"
    size = attempt.log_path.stat().st_size
    assert size < (1 << 16) + 4096
    text = attempt.log_path.read_text()
    assert "log truncated at 65536 bytes" in text
    assert text.rstrip().splitlines()[-2] == "--- isolate outcome: success: succeeded"
