"""The push protocol between ``isolate push`` and the scheduler's socket. Pure framing.

A request is one length-prefixed JSON header (the DAG versions as canonical spec JSON, and
a message) followed by the bundle's bytes; the reply is one length-prefixed JSON document.
The server treats every byte as hostile: sizes are capped before anything is read into
memory, the JSON must be finite and at most 64 levels deep (:mod:`isolate.jsondata`), the
whole request must arrive by one deadline, and the specs and bundle are validated as at any
push.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from isolate import jsondata
from isolate.bundles import Bundle, bundle_hash, list_bundle
from isolate.config import Settings
from isolate.errors import IsolateError, UsageError
from isolate.format import canonical_json, load_document, spec_hash
from isolate.services.dagfile import FolderSnapshot, LoadedDag
from isolate.store.records import MAX_MESSAGE
from isolate.validate import check_push

_LENGTH = struct.Struct(">I")
MAX_DAGS = 1000
INTERNAL_ERROR = "internal error in the push server"
LATE = "the request was not received in time"


class ProtocolError(UsageError):
    """A malformed or oversized request or reply."""


@dataclass(frozen=True)
class PushRequest:
    snapshot: FolderSnapshot
    message: str | None


def encode_request(snapshot: FolderSnapshot, message: str | None) -> bytes:
    header = {
        "version": 1,
        "message": message,
        "specs": [dag.canonical for dag in snapshot.dags],
        "bundle_len": len(snapshot.bundle.data),
    }
    return frame(header) + snapshot.bundle.data


def frame(document: dict[str, Any]) -> bytes:
    data = json.dumps(document, sort_keys=True).encode("utf-8")
    return _LENGTH.pack(len(data)) + data


def read_exact(conn: socket.socket, size: int, *, deadline: float | None = None) -> bytes:
    """``size`` bytes from ``conn``; with a ``deadline`` (``time.monotonic()``), all of them
    by then, however slowly they trickle in (the socket's timeout is what is left of it)."""
    chunks: list[bytes] = []
    left = size
    while left:
        if deadline is not None:
            conn.settimeout(_remaining(deadline))
        try:
            chunk = conn.recv(min(left, 1 << 20))
        except TimeoutError:
            if deadline is None:
                raise
            raise ProtocolError(LATE) from None
        if not chunk:
            raise ProtocolError("the connection closed in the middle of a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:  # a timeout of 0 would make the socket non-blocking, not late
        raise ProtocolError(LATE)
    return left


def read_frame(
    conn: socket.socket, *, max_bytes: int, deadline: float | None = None
) -> dict[str, Any]:
    """One length-prefixed JSON object, at most ``max_bytes`` long, finite and depth-capped."""
    (size,) = _LENGTH.unpack(read_exact(conn, _LENGTH.size, deadline=deadline))
    if size > max_bytes:
        raise ProtocolError(f"message of {size} bytes is over the limit of {max_bytes}")
    try:
        document = jsondata.loads(read_exact(conn, size, deadline=deadline))
    except jsondata.JsonDataError as exc:
        raise ProtocolError(f"message is not JSON this server accepts: {exc}") from None
    if not isinstance(document, dict):
        raise ProtocolError("message is not a JSON object")
    return document


def read_request(
    conn: socket.socket, settings: Settings, *, deadline: float | None = None
) -> PushRequest:
    """Read and validate a push request from a client (hostile input), all of it by
    ``deadline``. Raises :class:`IsolateError` for anything wrong with it, ``OSError`` if
    the connection fails."""
    # Every spec may be as large as the cap; the header holds at most MAX_DAGS of them.
    header = read_frame(
        conn, max_bytes=settings.max_spec_bytes * 4 + MAX_MESSAGE + 4096, deadline=deadline
    )
    specs, message, length = header.get("specs"), header.get("message"), header.get("bundle_len")
    if header.get("version") != 1:
        raise ProtocolError(f"unknown push protocol version {header.get('version')!r}")
    if not isinstance(specs, list) or not 0 < len(specs) <= MAX_DAGS:
        raise ProtocolError("specs: expected a non-empty list")
    if not all(isinstance(text, str) for text in specs):
        raise ProtocolError("specs: expected strings")
    if message is not None and (not isinstance(message, str) or len(message) > MAX_MESSAGE):
        raise ProtocolError(f"message: expected at most {MAX_MESSAGE} characters of text")
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ProtocolError("bundle_len: expected a positive integer")
    if length > settings.max_bundle_bytes:
        raise ProtocolError(
            f"bundle of {length} bytes is over the cap of {settings.max_bundle_bytes} "
            "(setting max_bundle_bytes)"
        )
    data = read_exact(conn, length, deadline=deadline)
    try:
        snapshot = decode_snapshot(specs, data, settings)
    except ValueError as exc:  # e.g. text that cannot be encoded: the request's fault
        raise ProtocolError(f"malformed request: {' '.join(str(exc).split())[:200]}") from None
    return PushRequest(snapshot=snapshot, message=message)


def decode_snapshot(specs: list[str], data: bytes, settings: Settings) -> FolderSnapshot:
    """Specs and bundle as the server accepts them: validated, consistent, canonical."""
    digest = bundle_hash(data)
    files = tuple(list_bundle(data))  # refuses a hostile archive
    if len(files) > settings.max_bundle_files:
        raise ProtocolError(
            f"bundle of {len(files)} files is over the cap of {settings.max_bundle_files} "
            "(setting max_bundle_files)"
        )
    dags = []
    seen: set[str] = set()
    for text in specs:
        spec = load_document(text, max_bytes=settings.max_spec_bytes)
        check_push(spec)
        if spec.bundle_hash != digest:
            raise ProtocolError(f"dag {spec.dag_id}: its bundle hash is not the sent bundle's")
        if spec.dag_id in seen:
            raise ProtocolError(f"dag {spec.dag_id} is sent twice")
        seen.add(spec.dag_id)
        lock = spec.lockfile.text.encode("utf-8")
        dags.append(
            LoadedDag(
                spec=spec, canonical=canonical_json(spec), spec_hash=spec_hash(spec), lock=lock
            )
        )
    return FolderSnapshot(bundle=Bundle(data=data, hash=digest, files=files), dags=tuple(dags))


def error_reply(exc: BaseException) -> dict[str, Any]:
    """The one-line reply for ``exc``: its message if it is ours, else an internal error's."""
    message = str(exc) if isinstance(exc, IsolateError) else INTERNAL_ERROR
    return {"ok": False, "error": message.splitlines()[0] if message else "error"}


def internal_error_reply() -> dict[str, Any]:
    """The reply to a request the server failed on by a fault of its own (never says which)."""
    return {"ok": False, "error": INTERNAL_ERROR}
