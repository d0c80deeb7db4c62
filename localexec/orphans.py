"""Attempts left behind by a scheduler that was killed: recognise them for sure, kill them."""

from __future__ import annotations

import os
import signal
import time

import psutil


def kill_if_alive(pid: int | None, started: float | None) -> bool:
    """Kill the process group of ``pid`` if it is still the attempt's process (same start time)."""
    if pid is None or started is None:
        return False
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) > 0.01:
            return False  # the pid was reused by another process
        os.killpg(pid, signal.SIGKILL)  # the attempt's process leads its own group (setsid)
    except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
        return False
    for _ in range(50):
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.02)
    return True
