"""``isolate push`` for authors who cannot write the store: through the scheduler's socket.

The DAG folder is loaded and validated here, in the author's own process, as for a direct
push; the server identifies the author by the kernel's peer credentials, checks the tenant
mapping, validates everything again, and stores the versions with the author as pushed_by.
"""

from __future__ import annotations

import socket
from pathlib import Path

from isolate.config import Config
from isolate.errors import IsolateError
from isolate.services.dagfile import FolderSnapshot
from isolate.services.push import PushResult
from isolate.services.pushwire import encode_request, read_frame

SOCKET_NAME = "push.sock"
REPLY_MAX_BYTES = 1 << 20


class PushDeniedError(IsolateError):
    """The server refused the push: the caller may not push these DAGs."""

    exit_code = 8


class NoPushServerError(IsolateError):
    """No scheduler serves pushes on this home's socket: nothing is wrong with the push."""

    exit_code = 9


def socket_path(config: Config) -> Path:
    return config.run_dir / SOCKET_NAME


def push_via_server(
    path: Path, snapshot: FolderSnapshot, message: str | None, *, timeout: float = 600.0
) -> list[PushResult]:
    """Send ``snapshot`` to the push server at ``path``; its results, or its one-line error."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        try:
            conn.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoPushServerError(
                f"no scheduler is serving pushes at {path}: ask an admin to start "
                "`isolate scheduler`, or push as an admin"
            ) from None
        try:
            conn.sendall(encode_request(snapshot, message))
            conn.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read it all (over a cap, a task): its reply says why
        reply = read_frame(conn, max_bytes=REPLY_MAX_BYTES)
    except OSError as exc:
        raise IsolateError(f"push server at {path}: {exc.strerror or exc}") from None
    finally:
        conn.close()
    if not reply.get("ok"):
        error = str(reply.get("error") or "refused")
        kind = PushDeniedError if reply.get("denied") else IsolateError
        raise kind(f"push server: {error}")
    return [PushResult(**result) for result in reply.get("results", [])]
