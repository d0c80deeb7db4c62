"""Printing: aligned tables for people, JSON for programs. No logic beyond layout."""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=_default, ensure_ascii=False))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def timestamp(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def short_hash(value: str | None) -> str:
    return "-" if not value else value.removeprefix("sha256:")[:12]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    click.echo(_line(headers, widths))
    for row in cells:
        click.echo(_line(row, widths))


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return timestamp(value)
    return printable(str(value))


def printable(text: str) -> str:
    """``text`` with every non-printable character shown as "?".

    Names, messages and task output come from authors: never let them move the cursor,
    retitle the terminal or forge lines.
    """
    return "".join(ch if ch.isprintable() else "?" for ch in text)


# Task output is hostile: on a terminal, control characters other than newline and tab
# could move the cursor, retitle the window or forge lines, so they are shown as "?": C0 and
# DEL, and C1 (U+0080-U+009F: a UTF-8 terminal takes U+009B for CSI, as ESC [).
_UNSAFE = [*range(32), *range(0x7F, 0xA0)]
_TERMINAL_SAFE = {code: "?" for code in _UNSAFE if chr(code) not in "\n\t"}


def terminal_safe(data: bytes, decoder: codecs.IncrementalDecoder | None = None) -> bytes:
    """``data`` as a terminal may show it: no control characters but newline and tab;
    bytes that are not UTF-8 become U+FFFD (a lone 0x9B byte is CSI to some terminals).
    ``decoder`` carries a character split between two chunks over to the next."""
    text = decoder.decode(data) if decoder else data.decode("utf-8", "replace")
    return text.translate(_TERMINAL_SAFE).encode("utf-8")


# One stream of output per command: a character split across reads is decoded whole.
_decoder = codecs.getincrementaldecoder("utf-8")("replace")


def write_output(data: bytes) -> None:
    """Write task output to stdout: as is when piped, made harmless on a terminal."""
    out = sys.stdout.buffer
    out.write(terminal_safe(data, _decoder) if sys.stdout.isatty() else data)
    out.flush()
