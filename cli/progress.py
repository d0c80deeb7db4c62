"""A ticking "building ... 12s" line on a terminal, for work that may take a while."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click


@contextmanager
def ticking(label: str) -> Iterator[None]:
    """On a terminal (stderr), show ``label`` with the seconds elapsed until the body ends."""
    if not sys.stderr.isatty():
        yield
        return
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(1.0):
            click.echo(f"\r{label} {time.monotonic() - started:.0f}s", err=True, nl=False)

    click.echo(f"{label} ...", err=True, nl=False)
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        click.echo(f"\r{label} done in {time.monotonic() - started:.1f}s", err=True)
