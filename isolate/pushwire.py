"""The push protocol between ``isolate push`` and the scheduler's socket. Pure framing.

A request is one length-prefixed JSON header (the DAG versions as canonical spec JSON, and
a message) followed by the bundle's bytes; the reply is one length-prefixed JSON document.
The server treats every byte as hostile: sizes are capped before anything is read into
memory, and the specs and bundle are validated as at any push.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from typing import Any

from isolate.bundles import Bundle, bundle_hash, list_bundle
from isolate.config import Settings
from isolate.dagfile import FolderSnapshot, LoadedDag
from isolate.errors import IsolateError, UsageError
from isolate.format import canonical_json, load_document, spec_hash
from isolate.store.store import MAX_MESSAGE

_LENGTH = struct.Struct(">I")
MAX_DAGS = 1000


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


def read_exact(conn: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ProtocolError("the connection closed in the middle of a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(conn: socket.socket, *, max_bytes: int) -> dict[str, Any]:
    (size,) = _LENGTH.unpack(read_exact(conn, _LENGTH.size))
    if size > max_bytes:
        raise ProtocolError(f"message of {size} bytes is over the limit of {max_bytes}")
    try:
        document = json.loads(read_exact(conn, size))
    except ValueError:
        raise ProtocolError("message is not JSON") from None
    if not isinstance(document, dict):
        raise ProtocolError("message is not a JSON object")
    return document


def read_request(conn: socket.socket, settings: Settings) -> PushRequest:
    """Read and validate a push request from a client (hostile input)."""
    # Every spec may be as large as the cap; the header holds at most MAX_DAGS of them.
    header = read_frame(conn, max_bytes=settings.max_spec_bytes * 4 + MAX_MESSAGE + 4096)
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
    data = read_exact(conn, length)
    return PushRequest(snapshot=decode_snapshot(specs, data, settings), message=message)


def decode_snapshot(specs: list[str], data: bytes, settings: Settings) -> FolderSnapshot:
    """Specs and bundle as the server accepts them: validated, consistent, canonical."""
    digest = bundle_hash(data)
    files = tuple(list_bundle(data))  # refuses a hostile archive
    dags = []
    seen: set[str] = set()
    for text in specs:
        spec = load_document(text, max_bytes=settings.max_spec_bytes)
        if spec.bundle_hash != digest:
            raise ProtocolError(f"dag {spec.dag_id}: its bundle hash is not the sent bundle's")
        if spec.dag_id in seen:
            raise ProtocolError(f"dag {spec.dag_id} is sent twice")
        seen.add(spec.dag_id)
        lock = spec.environment.lock.encode("utf-8")
        dags.append(
            LoadedDag(
                spec=spec, canonical=canonical_json(spec), spec_hash=spec_hash(spec), lock=lock
            )
        )
    return FolderSnapshot(bundle=Bundle(data=data, hash=digest, files=files), dags=tuple(dags))


def error_reply(exc: BaseException) -> dict[str, Any]:
    message = str(exc) if isinstance(exc, IsolateError) else "internal error in the push server"
    return {"ok": False, "error": message.splitlines()[0] if message else "error"}
