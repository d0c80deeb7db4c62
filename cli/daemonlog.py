"""Logging for the daemons (``isolate scheduler``): lines on stderr that journald reads.

Library code logs through :mod:`logging` under the ``isolate`` logger and never configures
it; a daemon's command does, once. Each line is ``isolate <component>: <level>: <message>``,
with a ``<N>`` syslog priority prefix when stderr is the journal (``JOURNAL_STREAM``, set by
systemd), so ``journalctl -p warning`` filters by level. A traceback follows a contained
fault's line, indented, for the admin.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class DaemonFormatter(logging.Formatter):
    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        component = record.name.split(".", 1)[1] if "." in record.name else record.name
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = f"isolate {component}: {level}{record.getMessage()}"
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            text += "\n" + "\n".join("    " + line for line in trace.splitlines())
        if self.journal:
            prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
            text = "\n".join(prefix + line for line in text.splitlines())
        return text


def configure(level: int = logging.INFO) -> None:
    """Send the ``isolate`` loggers' records to stderr (idempotent)."""
    logger = logging.getLogger("isolate")
    logger.setLevel(level)
    if any(getattr(h, "_isolate_daemon", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(DaemonFormatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    handler._isolate_daemon = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
