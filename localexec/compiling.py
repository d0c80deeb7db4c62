"""A bundle's bytecode, compiled by a bounded, unprivileged process whose output is checked.

Tasks cannot write into their read-only bundle, so without bytecode written at extraction
every task would compile its DAG's modules from source on each start. Compiling is the
tenant's input fed to the interpreter's parser and compiler: a 5 MiB module can take half a
minute, a deeply nested one can exhaust memory or crash the compiler. So it runs:

- in a subprocess of the env's own interpreter (its cache tag and magic number are those of
  the tasks' interpreter), ``-I -S -B``: no environment variables, no site-packages (the
  env's packages are the tenant's), stdlib only, no bytecode of its own written;
- as an unprivileged user: the tenant's run-as user (it may already run anything as that
  user), else ``nobody`` under root, else this process's own user;
- under rlimits it sets on itself before it reads any input (address space, CPU seconds,
  no file writes at all, no core dumps), at a lower priority, undumpable (no other process
  of its user may ptrace it), and a wall-clock deadline after which its process group is
  killed;
- with no access to the bundle on disk: this side sends it the sources on stdin and it
  answers, on stdout, a length-prefixed stream of (relative path, unchecked-hash ``.pyc``).

Nothing it writes is trusted: the stream is read up to a size cap, and refused whole unless
it is complete and well formed, each path names a module that was sent (once), and each
``.pyc`` has an unchecked-hash header; this side then writes
``<dir>/__pycache__/<module>.<cache tag>.pyc`` itself. A module that fails to compile is
just absent from the answer (its task reports the SyntaxError when it imports it). On a
timeout, a crash, an oversized or refused stream: no bytecode at all, logged, no exception.

Stream, each field a 4-byte big-endian length and its bytes; to the compiler: the directory
the bundle will be at (``co_filename`` of its code), then per module its path and source,
then an empty path. From the compiler: :data:`HEADER`, the cache tag, per module its path
and ``.pyc``, then an empty path.
"""

from __future__ import annotations

import logging
import math
import os
import pwd
import re
import selectors
import signal
import stat
import struct
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

log = logging.getLogger("isolate.workspace")

HEADER = b"isolate-pyc 1\n"
FALLBACK_USER = "nobody"  # who compiles the bundles of no tenant, under root
_LENGTH = struct.Struct(">I")
_UNCHECKED_HASH = (0b01).to_bytes(4, "little")  # PEP 552 flags: hash-based, not checked
_CACHE_TAG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII)
_CHUNK = 1 << 16

# Run as ``python -I -S -B -c CHILD <address space bytes> <CPU seconds>``. Limits come first,
# before anything of the input is read; then only stdin, stdout and the compiler are used.
CHILD = r"""
import resource, sys
def cap(which, soft, hard):
    current = resource.getrlimit(which)[1]
    if current != resource.RLIM_INFINITY:
        hard = min(hard, current)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))
memory, cpu = int(sys.argv[1]), int(sys.argv[2])
cap(resource.RLIMIT_AS, memory, memory)
cap(resource.RLIMIT_CPU, cpu, cpu + 2)
cap(resource.RLIMIT_FSIZE, 0, 0)
cap(resource.RLIMIT_CORE, 0, 0)
import os
os.nice(10)
try:
    import ctypes
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
except (ImportError, OSError, AttributeError):
    pass
import marshal, struct
from importlib.util import MAGIC_NUMBER, source_hash
LENGTH = struct.Struct(">I")
source_in, answer = sys.stdin.buffer, sys.stdout.buffer
def read_field():
    head = source_in.read(4)
    if len(head) != 4:
        raise SystemExit(3)
    data = source_in.read(LENGTH.unpack(head)[0])
    if len(data) != LENGTH.unpack(head)[0]:
        raise SystemExit(3)
    return data
def write_field(data):
    answer.write(LENGTH.pack(len(data)))
    answer.write(data)
root = os.fsdecode(read_field())
answer.write(HEADER)
write_field(sys.implementation.cache_tag.encode("ascii"))
while True:
    rel = read_field()
    if not rel:
        break
    source = read_field()
    try:
        code = compile(source, root + "/" + os.fsdecode(rel), "exec", dont_inherit=True)
        data = MAGIC_NUMBER + (1).to_bytes(4, "little") + source_hash(source)
        data += marshal.dumps(code)
    except Exception:  # SyntaxError, ValueError, RecursionError, MemoryError: left to the task
        continue
    write_field(rel)
    write_field(data)
write_field(b"")
answer.flush()
""".replace("HEADER", repr(HEADER))


@dataclass(frozen=True)
class CompileLimits:
    """Bounds of one bundle's compile process."""

    timeout: float = 60.0  # wall clock, seconds; CPU seconds are capped to it too
    memory: int = 1 << 30  # address space, bytes
    # Largest answer accepted: this many times the sources' size, plus ``output_slack``,
    # but never above ``max_output`` (the answer is held in memory). Real code's bytecode
    # is about 1.3 times its source.
    output_ratio: int = 4
    output_slack: int = 1 << 20
    max_output: int = 128 << 20

    def output_cap(self, source_bytes: int) -> int:
        return min(self.output_ratio * source_bytes + self.output_slack, self.max_output)


@dataclass(frozen=True)
class Compiled:
    """What :func:`compile_bytecode` did to a bundle."""

    written: tuple[str, ...] = ()  # modules given bytecode, as relative paths
    modules: int = 0  # how many .py files the bundle has
    problem: str | None = None  # why none has bytecode, if none was even attempted
    user: str | None = None  # who compiled (None: this process's own user)
    seconds: float = field(default=0.0, compare=False)


class StreamRefused(Exception):
    """The compiler's answer is malformed or names a module it was not given."""


def compile_user(run_as: str | None) -> str | None:
    """Who compiles a bundle whose tasks run as ``run_as`` (None: no tenant): that user under
    root, else :data:`FALLBACK_USER`; this process's own user (None) when it is not root."""
    if os.geteuid() != 0:
        return None
    return run_as or FALLBACK_USER


def compile_bytecode(
    staging: Path,
    final: Path,
    *,
    python: Path,
    user: str | None,
    limits: CompileLimits | None = None,
) -> Compiled:
    """Give the modules of the bundle extracted at ``staging`` (root's, still writable) the
    bytecode of ``python`` as if they were at ``final``, compiled as ``user`` (see
    :func:`compile_user`). Never raises: a problem means less or no bytecode, and is logged."""
    limits = limits or CompileLimits()
    started = time.monotonic()
    sources: dict[str, bytes] = {}
    try:
        sources = _sources(staging)
        if not sources:
            return Compiled(user=user)
        answer = _run_compiler(final, sources, python=python, user=user, limits=limits)
        tag, compiled = read_stream(answer, sources)
        written = _write_bytecode(staging, tag, compiled)
    except Exception as exc:  # bytecode only saves time: a problem never fails the bundle
        if not isinstance(exc, _EXPECTED):
            log.exception("unexpected failure compiling the bundle at %s", final)
        problem = _describe(exc)
        log.warning(
            "no bytecode for the bundle at %s (%d modules, compiled as %s): %s; its tasks "
            "compile its modules from source",
            final,
            len(sources),
            user or "this process's user",
            problem,
        )
        return Compiled(
            modules=len(sources),
            problem=problem,
            user=user,
            seconds=time.monotonic() - started,
        )
    seconds = time.monotonic() - started
    log.info(
        "bytecode for %d of the %d modules of the bundle at %s, compiled as %s in %.1f s",
        len(written),
        len(sources),
        final,
        user or "this process's user",
        seconds,
    )
    return Compiled(written=tuple(written), modules=len(sources), user=user, seconds=seconds)


class _CompileFailed(Exception):
    """The compile process timed out, crashed or answered too much."""


_EXPECTED = (OSError, subprocess.SubprocessError, StreamRefused, _CompileFailed)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StreamRefused):
        return f"its compiler's answer is refused: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def _sources(staging: Path) -> dict[str, bytes]:
    """``relative path -> source`` of every regular ``.py`` file (``__pycache__`` skipped)."""
    found: dict[str, bytes] = {}
    for directory, dirnames, filenames in os.walk(staging):
        dirnames[:] = sorted(name for name in dirnames if name != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith(".py") or name == ".py":
                continue
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    continue
                rel = PurePosixPath(os.path.relpath(path, staging)).as_posix()
                try:
                    rel.encode("utf-8")
                except UnicodeEncodeError:  # never extracted: bundle names are UTF-8
                    continue
                found[rel] = handle.read()
    return found


def _identity(user: str) -> tuple[int, int, list[int]]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise _CompileFailed(f"no user {user!r} to compile as") from None
    if entry.pw_uid == 0:
        raise _CompileFailed(f"refusing to compile as {user!r} (uid 0)")
    return entry.pw_uid, entry.pw_gid, sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid)))


def _request(final: Path, sources: dict[str, bytes]) -> bytes:
    parts = [_field(os.fsencode(final))]
    for rel, source in sources.items():
        parts += [_field(rel.encode("utf-8")), _field(source)]
    parts.append(_field(b""))
    return b"".join(parts)


def _field(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


def _run_compiler(
    final: Path, sources: dict[str, bytes], *, python: Path, user: str | None, limits: CompileLimits
) -> bytes:
    """The compiler's whole answer, if it exits 0 in time without answering too much."""
    request = _request(final, sources)
    cap = limits.output_cap(sum(len(source) for source in sources.values()))
    uid = gid = groups = None
    if user is not None:
        uid, gid, groups = _identity(user)
    argv = [os.fspath(python), "-I", "-S", "-B", "-c", CHILD]
    argv += [str(limits.memory), str(max(1, math.ceil(limits.timeout)))]
    deadline = time.monotonic() + limits.timeout
    # user, group and extra_groups are applied by subprocess's C code between fork and exec:
    # no Python runs in the child of this multi-threaded process before the interpreter.
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd="/",
        env={},
        start_new_session=True,  # its own process group, killed whole
        user=uid,
        group=gid,
        extra_groups=groups,
    ) as proc:
        try:
            answer = _exchange(proc, request, cap, deadline)
            try:
                code = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise _CompileFailed(f"it did not exit within {limits.timeout:g} s") from None
        finally:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    if code != 0:
        how = f"signal {-code}" if code < 0 else f"status {code}"
        raise _CompileFailed(f"its compiler exited with {how}")
    return answer


def _exchange(proc: subprocess.Popen[bytes], request: bytes, cap: int, deadline: float) -> bytes:
    """Feed ``request`` to the compiler while reading its answer, until it closes stdout."""
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin.fileno(), proc.stdout.fileno()
    os.set_blocking(stdin, False)
    answer = bytearray()
    sent = 0
    view = memoryview(request)
    with selectors.DefaultSelector() as selector:
        selector.register(stdin, selectors.EVENT_WRITE)
        selector.register(stdout, selectors.EVENT_READ)
        reading = True
        while reading:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _CompileFailed(f"it did not finish in time ({len(answer)} bytes answered)")
            for key, _events in selector.select(remaining):
                if key.fd == stdout:
                    chunk = os.read(stdout, _CHUNK)
                    if not chunk:
                        reading = False
                        continue
                    answer += chunk
                    if len(answer) > cap:
                        raise _CompileFailed(f"its answer exceeds {cap} bytes")
                    continue
                try:
                    sent += os.write(stdin, view[sent : sent + _CHUNK])
                except BrokenPipeError:
                    sent = len(request)  # it stopped reading: its exit status tells why
                if sent >= len(request):
                    selector.unregister(stdin)
                    proc.stdin.close()
    if not proc.stdin.closed:
        proc.stdin.close()
    return bytes(answer)


def read_stream(data: bytes, sent: Collection[str]) -> tuple[str, dict[str, bytes]]:
    """``(cache tag, relative path -> .pyc)`` of a compiler's answer to the modules ``sent``;
    :class:`StreamRefused` unless all of it is well formed."""
    if not data.startswith(HEADER):
        raise StreamRefused("it does not start with the stream header")
    cursor = _Cursor(data, len(HEADER))
    tag = _cache_tag(cursor.field())
    compiled: dict[str, bytes] = {}
    magic: bytes | None = None
    while rel_bytes := cursor.field():
        pyc = cursor.field()
        rel = _module_path(rel_bytes, sent)
        if rel in compiled:
            raise StreamRefused(f"it answers {rel!r} twice")
        if len(pyc) < 16 or pyc[2:4] != b"\r\n" or pyc[4:8] != _UNCHECKED_HASH:
            raise StreamRefused(f"the bytecode of {rel!r} has no unchecked-hash .pyc header")
        if magic is not None and pyc[:4] != magic:
            raise StreamRefused(f"the bytecode of {rel!r} is of another Python version")
        magic = pyc[:4]
        compiled[rel] = pyc
    if cursor.position != len(data):
        raise StreamRefused("it goes on after its end")
    return tag, compiled


@dataclass
class _Cursor:
    data: bytes
    position: int

    def field(self) -> bytes:
        end = self.position + _LENGTH.size
        if end > len(self.data):
            raise StreamRefused("it is truncated")
        (length,) = _LENGTH.unpack_from(self.data, self.position)
        if end + length > len(self.data):
            raise StreamRefused("it is truncated")
        self.position = end + length
        return self.data[end : self.position]


def _cache_tag(raw: bytes) -> str:
    tag = raw.decode("ascii", errors="replace")
    if not _CACHE_TAG.fullmatch(tag):
        raise StreamRefused(f"{tag[:80]!r} is not a cache tag")
    return tag


def _module_path(raw: bytes, sent: Collection[str]) -> str:
    """A path the compiler names: one of those it was sent (which are all plain relative
    paths of ``.py`` files; checked again, the set is the caller's)."""
    try:
        rel = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StreamRefused(f"the path {raw[:80]!r} is not UTF-8") from None
    parts = rel.split("/")
    if (
        rel.startswith("/")
        or "\x00" in rel
        or any(part in ("", ".", "..") for part in parts)
        or not parts[-1].endswith(".py")
        or parts[-1] == ".py"
    ):
        raise StreamRefused(f"{rel[:200]!r} is not a module's relative path")
    if rel not in sent:
        raise StreamRefused(f"{rel[:200]!r} is not a module of the bundle")
    return rel


def _write_bytecode(staging: Path, tag: str, compiled: dict[str, bytes]) -> list[str]:
    """Write each module's ``__pycache__/<module>.<tag>.pyc`` under ``staging``; a file that
    cannot be written (a name too long, a ``__pycache__`` that is not a directory) is
    skipped. Returns the modules given bytecode."""
    written: list[str] = []
    for rel, pyc in sorted(compiled.items()):
        folder, _, filename = rel.rpartition("/")
        cache = staging / folder / "__pycache__" if folder else staging / "__pycache__"
        target = f"{filename.removesuffix('.py')}.{tag}.pyc"
        try:
            try:
                cache.mkdir(mode=0o755)
            except FileExistsError:
                pass
            if not stat.S_ISDIR(cache.lstat().st_mode):
                raise NotADirectoryError(20, "not a directory", str(cache))
            dir_fd = os.open(cache, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(target, flags, 0o644, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pyc)
        except OSError as exc:
            log.warning("no bytecode for %s of %s: %s", rel, staging, _describe(exc))
            continue
        written.append(rel)
    return written
