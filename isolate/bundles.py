"""Content-addressed code bundles: a DAG folder snapshotted as one deterministic tar.

A push turns the author's DAG folder into a :class:`Bundle`; tasks later run against exactly that
bundle, extracted by the root supervisor into a directory the unprivileged task imports from. So
:func:`make_bundle` is reproducible byte for byte (the hash is the bundle's identity), and
:func:`extract_bundle` treats its input as hostile: only plain files and directories with safe
relative names, written without following links, and nothing left behind on failure.

Format: an uncompressed POSIX.1-2001 (PAX) tar as written by :mod:`tarfile`. PAX is the standard
answer for long and non-ASCII names and is byte-stable: tarfile adds an extended header only when a
name does not fit the ustar field, never a timestamp of its own. No compression: the hash covers
the stored bytes, and zlib does not promise identical output across versions or machines.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from isolate.errors import BundleError

#: Tool, VCS and environment directories that never belong to a DAG's code.
# fmt: off
EXCLUDED_DIRS = frozenset({
    "__pycache__", ".git", ".hg", ".svn", ".tox", ".nox", ".venv", "venv", "node_modules",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis",
})
# fmt: on
#: A submodule's or worktree's ``.git`` is a file pointing at the real repository.
EXCLUDED_FILES = frozenset({".DS_Store", ".git"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")

_BLOCK = tarfile.BLOCKSIZE
_END_MARKER = bytes(2 * _BLOCK)
_FILE_MODE, _EXEC_MODE, _DIR_MODE = 0o644, 0o755, 0o755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Bundle:
    """An immutable code bundle: ``data`` is the tar, ``hash`` its identity, ``files`` its paths.

    :func:`make_bundle` also keeps where each file's content lies in ``data``, so that reading
    files of a bundle just made needs no parse of the archive.
    """

    data: bytes
    hash: str
    files: tuple[str, ...]
    _layout: _Layout | None = field(default=None, compare=False, repr=False)

    def read_files(self, paths: Iterable[str]) -> dict[str, bytes]:
        """The content of each of ``paths`` that is a file of the bundle (see
        :func:`read_bundle_files`)."""
        if self._layout is None:
            return read_bundle_files(self.data, paths)
        wanted, data = set(paths), self.data
        return {
            name: data[start : start + size]
            for name, start, size in zip(
                self.files, self._layout.starts, self._layout.sizes, strict=True
            )
            if name in wanted
        }

    def extract(self, dest: Path, *, select: Callable[[str], bool] | None = None) -> None:
        """:func:`extract_bundle` of the bundle's data (only the files ``select`` accepts)."""
        if self._layout is None:
            extract_bundle(self.data, dest, select=select)
            return
        layout = self._layout
        members = (
            _Member(name, False, mode, start, size)
            for name, mode, start, size in zip(
                self.files, layout.modes, layout.starts, layout.sizes, strict=True
            )
            if select is None or select(name)
        )
        _extract(members, self.data, Path(dest))


@dataclass(frozen=True)
class _Layout:
    """Where the content of each file of a bundle just made lies in its data, and the file's
    mode, in the order of its ``files``."""

    starts: tuple[int, ...]
    sizes: tuple[int, ...]
    modes: tuple[int, ...]


def bundle_hash(data: bytes) -> str:
    """The content address of bundle bytes: ``"sha256:<hex>"``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_excluded(parts: Sequence[str], is_dir: bool, *, is_venv: bool = False) -> bool:
    """Whether the entry at relative path ``parts`` stays out of a bundle.

    Pure: ``is_venv`` says the directory holds a ``pyvenv.cfg`` (the caller looks). An excluded
    directory anywhere among the parents excludes the entry too.
    """
    if not parts:
        return False
    if any(part in EXCLUDED_DIRS for part in parts[:-1]):
        return True
    name = parts[-1]
    if is_dir:
        return is_venv or name in EXCLUDED_DIRS
    return name in EXCLUDED_FILES or name.endswith(EXCLUDED_SUFFIXES)


def make_bundle(folder: Path, *, max_bytes: int, max_files: int | None = None) -> Bundle:
    """Snapshot the DAG ``folder`` into a deterministic bundle of at most ``max_bytes`` bytes
    and ``max_files`` files (no cap on the count if ``None``).

    Only regular files are stored, sorted by path, with mtime 0, owner 0/0 without names, and mode
    0o755 if any exec bit is set, else 0o644. Directories are implied by file paths, so empty
    directories are not kept (as in git): leftover empty directories never change the hash.
    Excluded entries (see :func:`is_excluded`) are skipped. Symlinks that stay inside the folder
    are followed and stored under the link's own path; any other symlink, special file,
    unreadable file, non-UTF-8 or multi-line name, or exceeding a cap raises
    :class:`BundleError`. A folder with no file left to bundle is an error too. Over the file
    cap, the walk goes on only to count: the error says how many files there are.
    """
    folder = Path(folder)
    try:
        root = os.path.realpath(folder, strict=True)
        root_fd = os.open(root, _DIR_FLAGS)
    except NotADirectoryError:
        raise BundleError(f"DAG folder {folder} is not a directory") from None
    except OSError as exc:
        raise BundleError(f"DAG folder {folder} cannot be opened: {exc.strerror}") from None
    walk = _Walk(folder, root, max_bytes, max_files)
    try:
        walk.visit(root_fd, root, "", frozenset({root}))
    finally:
        os.close(root_fd)
    if max_files is not None and walk.count > max_files:
        raise BundleError(
            f"DAG folder {folder} has {walk.count} files to bundle, over the cap of {max_files} "
            "files (the max_bundle_files setting); leave out what tasks do not need or raise "
            "max_bundle_files"
        )
    if not walk.files:
        raise BundleError(f"DAG folder {folder} has no files to bundle (after exclusions)")
    names = sorted(walk.files)
    # Plain lists and local names: this loop runs once per file (20,000 for a vendored
    # library) and shows in the time of a push.
    chunks: list[bytes] = []
    starts: list[int] = []
    sizes: list[int] = []
    modes: list[int] = []
    offset = 0
    files, header_of, add = walk.files, _header, chunks.append
    for name in names:
        content, mode = files[name]
        size = len(content)
        header = header_of(name, size, mode)
        offset += len(header)
        starts.append(offset)
        sizes.append(size)
        modes.append(mode)
        padding = -size % _BLOCK
        add(header)
        add(content)
        add(_PADDING[padding])
        offset += size + padding
    # The end: two zero blocks, then zeros up to a whole record (as tarfile writes it).
    end = offset + len(_END_MARKER)
    chunks.append(bytes(len(_END_MARKER) + -end % tarfile.RECORDSIZE))
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise _too_big(folder, len(data), max_bytes, at_least=False)
    layout = _Layout(starts=tuple(starts), sizes=tuple(sizes), modes=tuple(modes))
    return Bundle(data=data, hash=bundle_hash(data), files=tuple(names), _layout=layout)


def _header(name: str, size: int, mode: int) -> bytes:
    """The tar header of a regular file, byte for byte as :mod:`tarfile` writes it in PAX
    format with mtime 0 and owner 0/0 without names.

    The common case (an ASCII name of at most 100 characters) is one ustar block built here,
    far faster than a ``TarInfo``; any other name gets tarfile's own header (with a PAX
    extended header before it).
    """
    encoded = name.encode("utf-8")
    if len(encoded) <= _NAME_FIELD and encoded.isascii() and size < _MAX_USTAR_SIZE:
        size_field = b"%011o\x00" % size
        # The checksum is the sum of the header's bytes with its own field as 8 spaces: the
        # fixed fields' share is summed once, at import.
        checksum = _FIXED_SUM[mode] + sum(encoded) + sum(size_field)
        return b"".join(
            (
                encoded.ljust(_NAME_FIELD, b"\x00"),
                _MODE_FIELD[mode],
                _OWNER_FIELDS,
                size_field,
                _MTIME_FIELD,
                b"%06o\x00 " % checksum,
                _AFTER_CHECKSUM,
            )
        )
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type, info.mode = size, 0, tarfile.REGTYPE, mode
    info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_NAME_FIELD = 100
_MAX_USTAR_SIZE = 8**11
# The fields of a header other than the name and the size: the mode, uid and gid 0, mtime 0,
# then (after the checksum) a regular file, no link name, the ustar magic, empty user and
# group names, no device numbers, no prefix, zeros to the end of the block.
_MODE_FIELD = {mode: b"%07o\x00" % mode for mode in (_FILE_MODE, _EXEC_MODE)}
_OWNER_FIELDS = b"0000000\x00" * 2
_MTIME_FIELD = b"00000000000\x00"
_AFTER_CHECKSUM = (tarfile.REGTYPE + bytes(100) + tarfile.POSIX_MAGIC).ljust(_BLOCK - 156, b"\x00")
_FIXED_SUM = {
    mode: sum(field + _OWNER_FIELDS + _MTIME_FIELD + b" " * 8 + _AFTER_CHECKSUM)
    for mode, field in _MODE_FIELD.items()
}
#: The zeros after a file's content, for each size of the last block's remainder.
_PADDING = tuple(bytes(n) for n in range(_BLOCK))


def list_bundle(data: bytes) -> list[str]:
    """The sorted file paths in bundle ``data``, validated as strictly as :func:`extract_bundle`."""
    return sorted(m.name for m in _members(data) if not m.is_dir)


def read_bundle_file(data: bytes, path: str) -> bytes:
    """The content of the file ``path`` in bundle ``data``; :class:`BundleError` if absent.

    Each call reads the whole archive: to read several files, use :func:`read_bundle_files`.
    """
    found = read_bundle_files(data, [path])
    if path not in found:
        raise BundleError(f"bundle has no file {path!r}")
    return found[path]


def read_bundle_files(data: bytes, paths: Iterable[str]) -> dict[str, bytes]:
    """The content of each of ``paths`` that is a file in bundle ``data`` (absent ones are left
    out), reading and validating the archive once whatever the number of paths."""
    wanted = set(paths)
    return {
        m.name: data[m.start : m.start + m.size]
        for m in _members(data)
        if not m.is_dir and m.name in wanted
    }


def extract_bundle(
    data: bytes,
    dest: Path,
    *,
    expected_hash: str | None = None,
    select: Callable[[str], bool] | None = None,
) -> None:
    """Write bundle ``data`` under ``dest``, which must not exist yet or be an empty directory.

    Everything is validated before the first write; files are created exclusively, never through
    a symlink, with mode 0o644 or 0o755 (never setuid, setgid or sticky) and the caller's
    ownership. On any failure the partial extraction is removed and :class:`BundleError` raised.
    With ``select``, only the files whose path it accepts are written (and their directories).
    """
    if expected_hash is not None and (actual := bundle_hash(data)) != expected_hash:
        raise BundleError(f"bundle hash {actual} does not match the expected {expected_hash}")
    members = _members(data)
    selected = (m for m in members if m.is_dir or select is None or select(m.name))
    _extract(selected, data, Path(dest))


def _extract(members: Iterable[_Member], data: bytes, dest: Path) -> None:
    created = _prepare_dest(dest)
    try:
        dest_fd = os.open(dest, _DIR_FLAGS)
        dirs = _Dirs(dest_fd)
        try:
            if created:
                os.fchmod(dest_fd, _DIR_MODE)  # mkdir's mode was narrowed by the umask
            for member in members:
                _write_member(dirs, member, data)
        finally:
            dirs.close()
            os.close(dest_fd)
    except OSError as exc:
        _discard(dest, created)
        raise BundleError(f"cannot extract bundle into {dest}: {exc}") from None
    except BaseException:
        _discard(dest, created)
        raise


@dataclass
class _Walk:
    """Reads the files to bundle into ``files`` (``relpath -> (content, mode)``), walking
    the folder once, checking the size cap before each read."""

    folder: Path
    root: str
    max_bytes: int
    max_files: int | None = None
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    # Files found, kept or not: past max_files the walk only counts.
    count: int = 0
    # A lower bound of the archive size: a header block per file, padded data, the end marker.
    estimate: int = len(_END_MARKER)

    def visit(self, dir_fd: int, real: str, rel: str, ancestors: frozenset[str]) -> None:
        """Walk the directory open as ``dir_fd``, whose real path is ``real`` and whose path
        in the bundle is ``rel`` ("" or ending in "/").

        Per file, only what a read needs: the entry's type comes with the listing, and the
        file is opened relative to its directory and stat-ed once, by its own descriptor.
        """
        try:
            with os.scandir(dir_fd) as listing:
                entries = sorted(listing, key=_entry_name)
        except OSError as exc:
            raise BundleError(f"cannot list {self._shown(rel)}: {exc.strerror}") from None
        for entry in entries:
            name = entry.name
            relpath = rel + name
            try:
                if entry.is_symlink():
                    self._link(dir_fd, real, relpath, name, ancestors)
                elif entry.is_dir(follow_symlinks=False):
                    if name not in EXCLUDED_DIRS:
                        self._directory(name, dir_fd, os.path.join(real, name), relpath, ancestors)
                elif entry.is_file(follow_symlinks=False):
                    if name not in EXCLUDED_FILES and not name.endswith(EXCLUDED_SUFFIXES):
                        self._file(name, dir_fd, relpath, name)
                else:
                    raise BundleError(
                        f"{self._shown(relpath)} is a socket, fifo or device, not a regular file"
                    )
            except OSError as exc:
                raise BundleError(f"cannot read {self._shown(relpath)}: {exc.strerror}") from None

    def _link(
        self, dir_fd: int, real: str, relpath: str, name: str, ancestors: frozenset[str]
    ) -> None:
        """A symlink that stays inside the folder: its target, under the link's own path."""
        parts = tuple(relpath.split("/"))
        if is_excluded(parts, True) or is_excluded(parts, False):
            return  # e.g. a `.venv` link to an environment elsewhere
        link, shown = os.path.join(real, name), self._shown(relpath)
        pointee = os.readlink(name, dir_fd=dir_fd)
        try:
            target = os.path.realpath(link, strict=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BundleError(f"symlink loop: {shown} -> {pointee}") from None
            raise BundleError(f"symlink {shown} -> {pointee} is dangling") from None
        if not Path(target).is_relative_to(self.root):
            raise BundleError(
                f"symlink {shown} -> {pointee} points outside the DAG folder {self.folder}; "
                "copy what it points to into the folder"
            )
        mode = os.stat(target).st_mode
        if stat.S_ISDIR(mode):
            self._directory(target, None, target, relpath, ancestors)
        elif stat.S_ISREG(mode):
            self._file(target, None, relpath, name)
        else:
            raise BundleError(f"{shown} is a socket, fifo or device, not a regular file")

    def _directory(
        self, path: str, dir_fd: int | None, real: str, relpath: str, ancestors: frozenset[str]
    ) -> None:
        """The directory ``path`` (relative to ``dir_fd``), unless it holds a virtualenv."""
        try:
            fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise BundleError(f"cannot list {self._shown(relpath)}: {exc.strerror}") from None
        try:
            if _has_pyvenv_cfg(fd):
                return
            name = relpath.rpartition("/")[2]
            self._check_name(name, relpath)
            if real in ancestors:
                raise BundleError(f"symlink loop: {self._shown(relpath)} leads back to {real}")
            self.visit(fd, real, relpath + "/", ancestors | {real})
        finally:
            os.close(fd)

    def _file(self, path: str, dir_fd: int | None, relpath: str, name: str) -> None:
        """Read the regular file ``path`` (relative to ``dir_fd``), ``name`` in its directory
        of the bundle, into ``files``.

        O_NONBLOCK, so that a file swapped for a fifo cannot hang the walk; O_NOFOLLOW, so
        that one swapped for a symlink is not followed. One read of the size ``fstat`` gives
        plus a byte: a regular file's read stops short only at its end, and the extra byte
        tells whether it grew meanwhile (then the rest is read, up to the cap).
        """
        self._check_name(name, relpath)
        self.count += 1
        if self.max_files is not None and self.count > self.max_files:
            self.files.clear()  # too many: from here on, only count
            return
        fd = os.open(path, _FILE_FLAGS, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(
                    f"{self._shown(relpath)} stopped being a regular file while it was bundled"
                )
            self._reserve(_padded(st.st_size))
            content = os.read(fd, st.st_size + 1)
            if len(content) != st.st_size:  # it changed since fstat: read to its end
                content += _read_up_to(fd, self.max_bytes + 1 - len(content))
                self._reserve(_padded(len(content)) - _padded(st.st_size))
        finally:
            os.close(fd)
        self.files[relpath] = (content, _EXEC_MODE if st.st_mode & 0o111 else _FILE_MODE)

    def _reserve(self, size: int) -> None:
        """Count ``size`` more bytes of the archive (fewer if negative) against the size cap."""
        self.estimate += size
        if self.estimate > self.max_bytes:
            raise _too_big(self.folder, self.estimate, self.max_bytes, at_least=True)

    def _shown(self, relpath: str) -> Path:
        return self.folder / relpath.rstrip("/") if relpath else self.folder

    def _check_name(self, name: str, relpath: str) -> None:
        if name.isascii() and "\n" not in name and "\r" not in name:
            return  # nearly every name: nothing to encode
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise BundleError(
                f"file name {os.fsencode(self._shown(relpath))!r} is not valid UTF-8; rename it"
            ) from None
        if "\n" in name or "\r" in name:
            raise BundleError(
                f"file name {str(self._shown(relpath))!r} contains a newline; rename it"
            )


_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _padded(size: int) -> int:
    """The archive bytes of a file of ``size`` bytes: its header and its padded content."""
    return _BLOCK + -(-size // _BLOCK) * _BLOCK


def _has_pyvenv_cfg(dir_fd: int) -> bool:
    """Whether the directory holds a ``pyvenv.cfg`` (a virtualenv), as ``Path.exists`` says."""
    try:
        os.stat("pyvenv.cfg", dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return False
        raise
    return True


def _read_up_to(fd: int, count: int) -> bytes:
    """At most ``count`` bytes of ``fd``, fewer only at its end."""
    chunks = []
    while count > 0 and (chunk := os.read(fd, count)):
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _too_big(folder: Path, size: int, cap: int, *, at_least: bool) -> BundleError:
    qualifier = "at least " if at_least else ""
    return BundleError(
        f"bundle of DAG folder {folder} would be {qualifier}{size} bytes, over the cap of {cap} "
        "bytes (the max_bundle_bytes setting); remove large files or raise max_bundle_bytes"
    )


class _Member(NamedTuple):
    name: str
    is_dir: bool
    mode: int
    start: int
    size: int


def _members(data: bytes) -> list[_Member]:
    """Every member of hostile ``data``, validated, in archive order."""
    members: list[_Member] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8") as tar:
            for info in tar:
                members.append(_check_member(info, len(data)))
            end = tar.offset
    except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
        raise BundleError(f"corrupt bundle: {exc}") from None
    # tarfile silently stops at a header it cannot parse after the first one, so a truncated
    # archive would list as a shorter one: insist on the end-of-archive marker.
    if data[end : end + len(_END_MARKER)] != _END_MARKER:
        raise BundleError("corrupt bundle: truncated or garbled after the last valid member")
    files = {m.name for m in members if not m.is_dir}
    if not files:  # make_bundle never writes one; Python versions differ on zero-only input
        raise BundleError("bad bundle: it holds no files")
    seen: set[str] = set()
    for member in members:
        if member.name in seen:
            raise BundleError(f"bad bundle: duplicate member {member.name!r}")
        seen.add(member.name)
        parts = member.name.split("/")
        for i in range(1, len(parts)):
            if (parent := "/".join(parts[:i])) in files:
                raise BundleError(f"bad bundle: {member.name!r} is inside the file {parent!r}")
    return members


def _check_member(info: tarfile.TarInfo, total: int) -> _Member:
    name = info.name
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE) or info.sparse:
        kind = {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink"}.get(info.type, "special")
        raise BundleError(
            f"bad bundle: member {name!r} is a {kind} entry (tar type "
            f"{info.type.decode(errors='replace')}); only regular files and directories are allowed"
        )
    if not name or "\x00" in name or "\n" in name or "\r" in name:
        raise BundleError(f"bad bundle: invalid member name {name!r}")
    if name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise BundleError(f"bad bundle: member {name!r} is not a plain relative path")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"bad bundle: member name {name!r} is not valid UTF-8") from None
    is_dir = info.type == tarfile.DIRTYPE
    if not is_dir and info.offset_data + info.size > total:
        raise BundleError(f"corrupt bundle: data of {name!r} is truncated")
    mode = _DIR_MODE if is_dir else _EXEC_MODE if info.mode & 0o111 else _FILE_MODE
    return _Member(name, is_dir, mode, info.offset_data, 0 if is_dir else info.size)


def _prepare_dest(dest: Path) -> bool:
    """Create ``dest`` (True) or accept an existing empty directory (False)."""
    try:
        dest.mkdir(mode=_DIR_MODE)
        return True
    except FileExistsError:
        pass
    except OSError as exc:
        raise BundleError(f"cannot create {dest}: {exc.strerror}") from None
    try:
        if not stat.S_ISDIR(dest.lstat().st_mode):
            raise BundleError(f"cannot extract into {dest}: it exists and is not a directory")
        if any(dest.iterdir()):
            raise BundleError(f"cannot extract into {dest}: it is not empty")
    except OSError as exc:
        raise BundleError(f"cannot extract into {dest}: {exc.strerror}") from None
    return False


class _Dirs:
    """Descriptors of the directories of an extraction, made on the way and never through a
    symlink: those of the last path asked for stay open, so the files of one directory (a
    bundle's members are sorted) cost no walk from the top each."""

    def __init__(self, dest_fd: int) -> None:
        self.dest_fd = dest_fd
        self.parts: list[str] = []
        self.fds: list[int] = []

    def open(self, parts: Sequence[str]) -> int:
        """An fd of ``dest/parts...`` (owned by this object), creating missing directories."""
        if parts == self.parts:
            return self.fds[-1] if self.fds else self.dest_fd
        common = 0
        for have, want in zip(self.parts, parts, strict=False):
            if have != want:
                break
            common += 1
        while len(self.fds) > common:
            self.parts.pop()
            os.close(self.fds.pop())
        for part in parts[common:]:
            parent = self.fds[-1] if self.fds else self.dest_fd
            try:
                os.mkdir(part, _DIR_MODE, dir_fd=parent)
                made = True
            except FileExistsError:
                made = False
            fd = os.open(part, _DIR_FLAGS, dir_fd=parent)
            self.parts.append(part)
            self.fds.append(fd)
            if made:
                os.fchmod(fd, _DIR_MODE)  # mkdir's mode was narrowed by the umask
        return self.fds[-1] if self.fds else self.dest_fd

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())
        self.parts.clear()


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_member(dirs: _Dirs, member: _Member, data: bytes) -> None:
    parts = member.name.split("/")
    if member.is_dir:
        dirs.open(parts)
        return
    out = os.open(parts[-1], _CREATE_FLAGS, member.mode, dir_fd=dirs.open(parts[:-1]))
    try:
        os.fchmod(out, member.mode)  # the creation mode was narrowed by the umask
        view = memoryview(data)[member.start : member.start + member.size]
        while view:
            view = view[os.write(out, view) :]
    finally:
        os.close(out)


def _discard(dest: Path, created: bool) -> None:
    """Remove a partial extraction: ``dest`` itself if we created it, else its contents."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    try:
        for child in dest.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    except OSError:
        pass  # best effort: the original error is the one worth reporting
