"""``isolate scheduler`` as a service: one per home, waiting for its database, serving pushes.

The command (``cli/runs.py``) parses its options and configures logging; this module holds
what the service does around the loop of :class:`~localexec.scheduler.Scheduler`: the home's
lock (a second scheduler would settle the first one's running attempts as left by a killed
one, and kill them), SIGTERM and SIGINT as an orderly stop after the current pass (the
caller's handlers come back when it returns: it may run inside another program, a test or
the demo), waiting for a database that cannot be reached yet rather than exiting into a
service manager's restart loop, and the push server beside the loop.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

from filelock import FileLock, Timeout

from isolate.config import Config
from isolate.errors import IsolateError, StoreError
from isolate.services.home import open_store
from isolate.store import Store
from localexec.pushserver import PushServer
from localexec.scheduler import MAX_OUTAGE_PAUSE, MIN_OUTAGE_PAUSE, Scheduler

log = logging.getLogger("isolate.scheduler")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SchedulerRunningError(IsolateError):
    """Another scheduler holds the home's lock."""


def serve(config: Config, *, parallelism: int, until_idle: bool = False) -> None:
    """Run the scheduler and its push server on ``config``'s home until stopped (or idle)."""
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    lock = FileLock(config.run_dir / "scheduler.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SchedulerRunningError(
            f"another `isolate scheduler` is running on {config.home}: one per home"
        ) from None
    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    try:
        with open_when_reachable(config, lambda: stopping) as store:
            server = PushServer(config, store)
            server.start()  # authors who cannot write the store push through its socket
            try:
                with Scheduler(
                    config, store, parallelism=parallelism, push_health=server.health
                ) as scheduler:
                    log.info("%s; push socket %s", scheduler.describe(), server.path)
                    scheduler.run(until_idle=until_idle, stop=lambda: stopping)
                    log.info("stopped")
            finally:
                server.stop()
    finally:
        lock.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def open_when_reachable(config: Config, stopping: Callable[[], bool]) -> Store:
    """The store, waiting (with growing pauses) while its database cannot be reached; any
    other problem (no home, an outdated schema) is raised at once, as is the outage once
    ``stopping()`` says so."""
    pause = MIN_OUTAGE_PAUSE
    while True:
        try:
            return open_store(config)
        except StoreError as exc:
            if not str(exc).startswith("cannot connect to database") or stopping():
                raise
            log.warning("%s; retrying in %.1fs", exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, MAX_OUTAGE_PAUSE)
