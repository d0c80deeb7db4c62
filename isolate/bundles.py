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
    _members: tuple[_Member, ...] | None = field(default=None, compare=False, repr=False)

    def read_files(self, paths: Iterable[str]) -> dict[str, bytes]:
        """The content of each of ``paths`` that is a file of the bundle (see
        :func:`read_bundle_files`)."""
        if self._members is None:
            return read_bundle_files(self.data, paths)
        wanted = set(paths)
        return {m.name: self._content(m) for m in self._members if m.name in wanted}

    def extract(self, dest: Path, *, select: Callable[[str], bool] | None = None) -> None:
        """:func:`extract_bundle` of the bundle's data (only the files ``select`` accepts)."""
        if self._members is None:
            extract_bundle(self.data, dest, select=select)
        else:
            _extract(self._members, self.data, Path(dest), select)

    def _content(self, member: _Member) -> bytes:
        return self.data[member.start : member.start + member.size]


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
        root = Path(os.path.realpath(folder, strict=True))
    except OSError as exc:
        raise BundleError(f"DAG folder {folder} cannot be opened: {exc.strerror}") from None
    if not root.is_dir():
        raise BundleError(f"DAG folder {folder} is not a directory")
    walk = _Walk(folder, root, max_bytes, max_files)
    walk.visit(root, (), frozenset({root}))
    if max_files is not None and walk.count > max_files:
        raise BundleError(
            f"DAG folder {folder} has {walk.count} files to bundle, over the cap of {max_files} "
            "files (the max_bundle_files setting); leave out what tasks do not need or raise "
            "max_bundle_files"
        )
    if not walk.files:
        raise BundleError(f"DAG folder {folder} has no files to bundle (after exclusions)")
    names = sorted(walk.files)
    chunks: list[bytes] = []
    members: list[_Member] = []
    offset = 0
    for name in names:
        content, executable = _read_file(walk.files[name], folder, name, max_bytes)
        mode = _EXEC_MODE if executable else _FILE_MODE
        header = _header(name, len(content), mode)
        offset += len(header)
        members.append(_Member(name, False, mode, offset, len(content)))
        padding = -len(content) % _BLOCK
        chunks += (header, content, bytes(padding))
        offset += len(content) + padding
        if offset > max_bytes:  # files grew since the walk measured them
            raise _too_big(folder, offset, max_bytes, at_least=True)
    # The end: two zero blocks, then zeros up to a whole record (as tarfile writes it).
    end = offset + len(_END_MARKER)
    chunks.append(bytes(len(_END_MARKER) + -end % tarfile.RECORDSIZE))
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise _too_big(folder, len(data), max_bytes, at_least=False)
    return Bundle(data=data, hash=bundle_hash(data), files=tuple(names), _members=tuple(members))


def _header(name: str, size: int, mode: int) -> bytes:
    """The tar header of a regular file, byte for byte as :mod:`tarfile` writes it in PAX
    format with mtime 0 and owner 0/0 without names.

    The common case (an ASCII name of at most 100 characters) is one ustar block built here,
    far faster than a ``TarInfo``; any other name gets tarfile's own header (with a PAX
    extended header before it).
    """
    encoded = name.encode("utf-8")
    if len(encoded) <= _NAME_FIELD and encoded.isascii() and size < _MAX_USTAR_SIZE:
        fields = b"%b%07o\x00%b%011o\x00%b" % (
            encoded.ljust(_NAME_FIELD, b"\x00"),
            mode,
            _OWNER_FIELDS,
            size,
            _AFTER_SIZE,
        )
        block = fields.ljust(_BLOCK, b"\x00")
        checksum = sum(block)  # with the checksum field as 8 spaces, as the format says
        return block[:148] + b"%06o\x00" % checksum + block[155:]
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type, info.mode = size, 0, tarfile.REGTYPE, mode
    info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_NAME_FIELD = 100
_MAX_USTAR_SIZE = 8**11
# uid and gid 0, then (after the size) mtime 0, the checksum as spaces, a regular file, no
# link name, the ustar magic, empty user and group names, no device numbers, no prefix.
_OWNER_FIELDS = b"0000000\x00" * 2
_AFTER_SIZE = b"00000000000\x00" + b" " * 8 + tarfile.REGTYPE + bytes(100) + tarfile.POSIX_MAGIC


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
    _extract(_members(data), data, Path(dest), select)


def _extract(
    members: Sequence[_Member], data: bytes, dest: Path, select: Callable[[str], bool] | None
) -> None:
    created = _prepare_dest(dest)
    try:
        dest_fd = os.open(dest, _DIR_FLAGS)
        try:
            if created:
                os.fchmod(dest_fd, _DIR_MODE)  # mkdir's mode was narrowed by the umask
            for member in members:
                if member.is_dir or select is None or select(member.name):
                    _write_member(dest_fd, member, data)
        finally:
            os.close(dest_fd)
    except OSError as exc:
        _discard(dest, created)
        raise BundleError(f"cannot extract bundle into {dest}: {exc}") from None
    except BaseException:
        _discard(dest, created)
        raise


@dataclass
class _Walk:
    """Collects ``relpath -> real path`` of the files to bundle, checking the size cap early."""

    folder: Path
    root: Path
    max_bytes: int
    max_files: int | None = None
    files: dict[str, str | Path] = field(default_factory=dict)
    # Files found, kept or not: past max_files the walk only counts.
    count: int = 0
    # A lower bound of the archive size: a header block per file, padded data, the end marker.
    estimate: int = len(_END_MARKER)

    def visit(self, real_dir: Path, rel: tuple[str, ...], ancestors: frozenset[Path]) -> None:
        # Plain strings and the directory entries' own lstat below: pathlib per file would
        # cost more than reading the file.
        try:
            with os.scandir(real_dir) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            raise BundleError(f"cannot list {self.folder.joinpath(*rel)}: {exc.strerror}") from None
        for entry in entries:
            name = entry.name
            parts = (*rel, name)
            target: str | Path = entry.path
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    if is_excluded(parts, True) or is_excluded(parts, False):
                        continue  # e.g. a `.venv` link to an environment elsewhere
                    target = self._follow(Path(target), self.folder.joinpath(*parts))
                    st = target.stat()
            except OSError as exc:
                shown = self.folder.joinpath(*parts)
                raise BundleError(f"cannot read {shown}: {exc.strerror}") from None
            if stat.S_ISDIR(st.st_mode):
                real = Path(target)
                if is_excluded(parts, True, is_venv=(real / "pyvenv.cfg").exists()):
                    continue
                _check_name(name, self.folder, parts)
                if real in ancestors:
                    shown = self.folder.joinpath(*parts)
                    raise BundleError(f"symlink loop: {shown} leads back to {real}")
                self.visit(real, parts, ancestors | {real})
            elif stat.S_ISREG(st.st_mode):
                if is_excluded(parts, False):
                    continue
                _check_name(name, self.folder, parts)
                self.count += 1
                if self.max_files is not None and self.count > self.max_files:
                    self.files.clear()  # too many: from here on, only count
                    continue
                self.estimate += _BLOCK + -(-st.st_size // _BLOCK) * _BLOCK
                if self.estimate > self.max_bytes:
                    raise _too_big(self.folder, self.estimate, self.max_bytes, at_least=True)
                self.files["/".join(parts)] = target
            else:
                shown = self.folder.joinpath(*parts)
                raise BundleError(f"{shown} is a socket, fifo or device, not a regular file")

    def _follow(self, link: Path, shown: Path) -> Path:
        pointee = link.readlink()
        try:
            real = Path(os.path.realpath(link, strict=True))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BundleError(f"symlink loop: {shown} -> {pointee}") from None
            raise BundleError(f"symlink {shown} -> {pointee} is dangling") from None
        if not real.is_relative_to(self.root):
            raise BundleError(
                f"symlink {shown} -> {pointee} points outside the DAG folder {self.folder}; "
                "copy what it points to into the folder"
            )
        return real


def _check_name(name: str, folder: Path, parts: tuple[str, ...]) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(
            f"file name {os.fsencode(folder.joinpath(*parts))!r} is not valid UTF-8; rename it"
        ) from None
    if "\n" in name or "\r" in name:
        shown = str(folder.joinpath(*parts))
        raise BundleError(f"file name {shown!r} contains a newline; rename it")


def _read_file(path: str | Path, folder: Path, rel: str, limit: int) -> tuple[bytes, bool]:
    """Content and exec bit of ``path``; O_NONBLOCK so a file swapped for a fifo cannot hang us.

    Reads the size ``fstat`` gives, plus a byte to see whether the file grew (then the rest,
    up to ``limit`` + 1): asking for ``limit`` bytes at once would allocate that much for
    every file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(
                    f"{folder / rel} stopped being a regular file while it was bundled"
                )
            content = _read_up_to(fd, min(st.st_size, limit) + 1)
            if len(content) > st.st_size:
                content += _read_up_to(fd, limit + 1 - len(content))
            return content, bool(st.st_mode & 0o111)
        finally:
            os.close(fd)
    except OSError as exc:
        raise BundleError(f"cannot read {folder / rel}: {exc.strerror}") from None


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


@dataclass(frozen=True)
class _Member:
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


def _open_dirs(dest_fd: int, parts: Sequence[str]) -> int:
    """An fd of ``dest/parts...``, creating missing directories, never following a symlink."""
    fd = os.dup(dest_fd)
    try:
        for part in parts:
            try:
                os.mkdir(part, _DIR_MODE, dir_fd=fd)
                made = True
            except FileExistsError:
                made = False
            sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = sub
            if made:
                os.fchmod(fd, _DIR_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_member(dest_fd: int, member: _Member, data: bytes) -> None:
    parts = member.name.split("/")
    if member.is_dir:
        os.close(_open_dirs(dest_fd, parts))
        return
    dir_fd = _open_dirs(dest_fd, parts[:-1])
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        out = os.open(parts[-1], flags, member.mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
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
