"""A ticking "building ... 12s" line on a terminal, for work that may take a while."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click


@contextmanager
def ticking(label: str, *, after: float = 0.0) -> Iterator[None]:
    """On a terminal (stderr), show ``label`` with the seconds elapsed until the body ends.

    With ``after``, the line appears only once the body has run that many seconds: a step
    that is usually quick prints nothing when it is.
    """
    if not sys.stderr.isatty():
        yield
        return
    started = time.monotonic()
    done = threading.Event()
    shown = threading.Event()

    def show() -> None:
        click.echo(f"{label} ...", err=True, nl=False)
        shown.set()

    def tick() -> None:
        if not shown.is_set():
            if done.wait(after):
                return
            show()
        while not done.wait(1.0):
            click.echo(f"\r{label} {time.monotonic() - started:.0f}s", err=True, nl=False)

    if after <= 0:
        show()
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        if shown.is_set():
            click.echo(f"\r{label} done in {time.monotonic() - started:.1f}s", err=True)
