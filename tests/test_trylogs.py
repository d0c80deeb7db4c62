"""Following a try's log: everything written before the try stopped is copied, footer too."""

from __future__ import annotations

import io
from pathlib import Path

from localexec.trylogs import copy_log


def test_following_copies_until_the_try_stops_then_reads_once_more(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    path.write_bytes(b"header\n")
    out = io.BytesIO()
    states = iter([True, True, False])
    writes = iter([b"line 1\n", b"line 2\n", b"footer\n"])

    def writing() -> bool:
        # The writer appends before each look at the state; the last append (the footer)
        # lands just before the state says the try has stopped.
        with path.open("ab") as log:
            log.write(next(writes))
        return next(states)

    with path.open("rb") as handle:
        copy_log(handle, out.write, writing=writing, sleep=lambda _s: None)
    assert out.getvalue() == b"header\nline 1\nline 2\nfooter\n"


def test_without_following_it_copies_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    path.write_bytes(b"x" * 200_000)
    out = io.BytesIO()
    with path.open("rb") as handle:
        copy_log(handle, out.write)
    assert out.getvalue() == b"x" * 200_000
