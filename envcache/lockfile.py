"""Lockfiles: parse and validate a hashed ``requirements.txt`` or a PEP 751 ``pylock.toml``.

Both give a :class:`~envcache.lock.Lock`. Every problem is located (``requirements.txt:12: ...``)
and all of them are reported at once.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envcache.errors import LockfileError
from envcache.lock import Lock, LockEntry

# Hash algorithms uv and pip both accept in hash-checking mode, with their hex digest lengths.
HASH_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
# Options pip-tools and uv may write at the top of a lock to say where packages come from. They
# are accepted and ignored: the cache's own find_links/offline settings decide the source, and the
# hashes pin every file's content whatever the source.
_SOURCE_OPTIONS = {
    "-i": True,
    "--index-url": True,
    "--extra-index-url": True,
    "-f": True,
    "--find-links": True,
    "--trusted-host": True,
    "--no-index": False,
}
_VCS_SCHEMES = ("git+", "hg+", "svn+", "bzr+")
# pip's comment rule (pip/_internal/req/req_file.py): "#" at the start or after whitespace.
_COMMENT = re.compile(r"(^|\s+)#.*$")


def load_lock(path: Path, *, allow_direct_references: bool = False) -> Lock:
    """Read and validate a lockfile; ``pylock.toml``/``pylock.*.toml`` is PEP 751, else pip's."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LockfileError([f"{path}: cannot read the lockfile: {exc}"]) from exc
    if re.fullmatch(r"pylock(\.[^.]+)?\.toml", path.name):
        return parse_pylock(text, source=path.name, allow_direct_references=allow_direct_references)
    return parse_requirements(
        text, source=path.name, allow_direct_references=allow_direct_references
    )


def parse_requirements(
    text: str, *, source: str = "requirements.txt", allow_direct_references: bool = False
) -> Lock:
    """Parse a pip-tools/uv requirements.txt with ``--hash`` options into a validated Lock."""
    problems: list[str] = []
    entries: list[LockEntry] = []
    for number, line in _logical_lines(text):
        where = f"{source}:{number}"
        try:
            entry = _parse_line(line, where, allow_direct_references)
        except _Problem as problem:
            problems.append(f"{where}: {problem}")
            continue
        if entry is not None:
            entries.append(entry)
    problems += _duplicates(entries)
    if problems:
        raise LockfileError(problems)
    return Lock(tuple(entries), source)


def parse_pylock(
    text: str, *, source: str = "pylock.toml", allow_direct_references: bool = False
) -> Lock:
    """Parse a PEP 751 ``pylock.toml`` into a validated Lock."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockfileError([f"{source}: invalid TOML: {exc}"]) from exc
    lock_version = data.get("lock-version")
    if not isinstance(lock_version, str) or lock_version.split(".")[0] != "1":
        raise LockfileError(
            [f"{source}: lock-version {lock_version!r} is not supported; use '1.0'"]
        )
    packages = data.get("packages", [])
    if not isinstance(packages, list):
        raise LockfileError([f"{source}: 'packages' must be an array of tables"])
    problems: list[str] = []
    entries: list[LockEntry] = []
    for index, package in enumerate(packages):
        where = f"{source}: packages[{index}]"
        try:
            entries.append(_pylock_entry(package, where, allow_direct_references))
        except _Problem as problem:
            problems.append(f"{where}: {problem}")
    problems += _duplicates(entries)
    if problems:
        raise LockfileError(problems)
    return Lock(tuple(entries), source)


class _Problem(Exception):
    """One validation problem, located by the caller."""


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each non-empty logical line, as pip joins and strips them."""
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.endswith("\\") and not _COMMENT.match(line):
            if not pending:
                start = number
            pending.append(line[:-1])
            continue
        if pending:
            # A comment line ends a continuation; pip keeps it apart so it is stripped below.
            joined, pending = "".join([*pending, " " + line]), []
            number = start
        else:
            joined = line
        stripped = _COMMENT.sub("", joined).strip()
        if stripped:
            yield number, stripped
    if pending:
        stripped = _COMMENT.sub("", "".join(pending)).strip()
        if stripped:
            yield start, stripped


def _parse_line(line: str, where: str, allow_direct: bool) -> LockEntry | None:
    if line.startswith("-"):
        _check_global_option(line, allow_direct)
        return None
    # pip's rule (req_file.break_args_options): the requirement ends at the first "-" token.
    words = line.split(" ")
    cut = next((i for i, word in enumerate(words) if word.startswith("-")), len(words))
    spec, options = " ".join(words[:cut]).strip(), " ".join(words[cut:])
    hashes = _hash_options(options)
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        if "/" in spec or spec.startswith(".") or spec.endswith((".whl", ".zip", ".tar.gz")):
            raise _Problem(
                f"{spec!r} is a local path or URL without a name; "
                "lock packages by name, e.g. 'name==1.0 --hash=sha256:...'"
            ) from exc
        raise _Problem(f"invalid requirement {spec!r}: {exc}") from exc
    name = canonicalize_name(requirement.name)
    marker = str(requirement.marker) if requirement.marker else None
    if requirement.url:
        _check_direct_reference(requirement.url, allow_direct)
        version, url = "", requirement.url
    else:
        version, url = _exact_version(requirement), None
    if not hashes:
        raise _Problem(
            f"{requirement.name} has no --hash; every requirement needs one "
            "(generate the lock with `isolate lock` or `uv pip compile --generate-hashes`)"
        )
    return LockEntry(name, version, frozenset(hashes), marker, url, where)


def _check_global_option(line: str, allow_direct: bool) -> None:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise _Problem(f"cannot parse options {line!r}: {exc}") from exc
    option, _, inline_value = words[0].partition("=")
    if option in ("-e", "--editable"):
        raise _Problem(
            "editable requirements (-e) cannot be used: an env is built once and never changes; "
            "build a wheel and lock it by name and hash"
        )
    if option in ("-r", "--requirement", "-c", "--constraint"):
        raise _Problem(f"{option} includes are not supported; inline the other file's requirements")
    if option not in _SOURCE_OPTIONS:
        raise _Problem(f"unknown option {option!r}; a lock holds only pinned, hashed requirements")
    takes_value = _SOURCE_OPTIONS[option]
    count = 1 if inline_value or not takes_value else 2
    if len(words) != count:
        raise _Problem(f"option {option!r} takes {'a value' if takes_value else 'no value'}")


def _hash_options(options: str) -> set[str]:
    try:
        words = shlex.split(options)
    except ValueError as exc:
        raise _Problem(f"cannot parse options {options!r}: {exc}") from exc
    hashes: set[str] = set()
    position = 0
    while position < len(words):
        option, has_inline, value = words[position].partition("=")
        if option != "--hash":
            raise _Problem(f"unknown option {option!r}; only --hash is allowed after a requirement")
        if not has_inline:
            position += 1
            if position == len(words):
                raise _Problem("--hash needs a value like sha256:<hex>")
            value = words[position]
        algorithm, _, digest = value.partition(":")
        hashes.add(_checked_hash(algorithm, digest))
        position += 1
    return hashes


def _checked_hash(algorithm: str, digest: str) -> str:
    algorithm, digest = algorithm.lower(), digest.lower()
    length = HASH_ALGORITHMS.get(algorithm)
    if length is None:
        raise _Problem(
            f"unsupported hash algorithm {algorithm!r}; use one of {', '.join(HASH_ALGORITHMS)}"
        )
    if len(digest) != length or not re.fullmatch(r"[0-9a-f]+", digest):
        raise _Problem(f"malformed {algorithm} hash {digest!r}")
    return f"{algorithm}:{digest}"


def _exact_version(requirement: Requirement) -> str:
    specifiers = list(requirement.specifier)
    hint = f"pin it as '{requirement.name}==<version>' (run `isolate lock`)"
    if len(specifiers) != 1 or specifiers[0].operator != "==":
        shown = str(requirement.specifier) or "no version"
        raise _Problem(f"{requirement.name} is not pinned ({shown}); {hint}")
    version = specifiers[0].version
    if "*" in version:
        raise _Problem(f"{requirement.name}=={version} is a wildcard, not an exact version; {hint}")
    try:
        return str(Version(version))
    except InvalidVersion as exc:  # pragma: no cover - packaging rejects these in Requirement
        raise _Problem(f"{requirement.name}: invalid version {version!r}") from exc


def _refuse_vcs(url: str) -> NoReturn:
    # uv and pip refuse VCS requirements in hash-checking mode: there is no file to hash.
    raise _Problem(
        f"VCS requirement {url!r} cannot be hash-checked; build a wheel and lock it by hash"
    )


def _check_direct_reference(url: str, allow_direct: bool) -> None:
    if url.startswith(_VCS_SCHEMES):
        _refuse_vcs(url)
    if allow_direct:
        return
    kind = "local path" if url.startswith("file:") else "URL requirement"
    raise _Problem(
        f"{kind} {url!r} is not allowed by the lock policy; "
        "lock the package by name, version and hash, or ask an admin to allow direct references"
    )


def _duplicates(entries: list[LockEntry]) -> list[str]:
    """Same package twice, unless each copy has its own marker (uv's universal locks do that)."""
    problems = []
    seen: dict[str, list[LockEntry]] = {}
    for entry in entries:
        for other in seen.get(entry.name, []):
            if entry.marker is None or other.marker is None or entry.marker == other.marker:
                problems.append(
                    f"{entry.origin}: duplicate package {entry.name!r} "
                    f"(also at {other.origin}); keep one"
                )
                break
        seen.setdefault(entry.name, []).append(entry)
    return problems


def _pylock_entry(package: Any, where: str, allow_direct: bool) -> LockEntry:
    if not isinstance(package, dict):
        raise _Problem("must be a table")
    name = package.get("name")
    if not isinstance(name, str) or not name:
        raise _Problem("has no 'name'")
    marker = _pylock_marker(package.get("marker"))
    url, hashes = _pylock_direct(package, allow_direct)
    exact = ""
    if url is None:
        version = package.get("version")
        if not isinstance(version, str):
            raise _Problem(f"{name} has no 'version'; a lock must pin every package")
        try:
            exact = str(Version(version))
        except InvalidVersion as exc:
            raise _Problem(f"{name}: invalid version {version!r}") from exc
        hashes = _pylock_hashes(package)
    if not hashes:
        raise _Problem(f"{name} has no sha256/sha384/sha512 hashes; every package needs one")
    return LockEntry(canonicalize_name(name), exact, hashes, marker, url, where)


def _pylock_marker(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(Marker(str(value)))
    except InvalidMarker as exc:
        raise _Problem(f"invalid marker {value!r}: {exc}") from exc


def _pylock_direct(
    package: dict[str, Any], allow_direct: bool
) -> tuple[str | None, frozenset[str]]:
    """(url, hashes) of a vcs/archive/directory package; (None, empty) for an index package."""
    vcs, archive, directory = (package.get(k) for k in ("vcs", "archive", "directory"))
    if vcs is None and archive is None and directory is None:
        return None, frozenset()
    if isinstance(vcs, dict):
        _refuse_vcs(f"{vcs.get('type', 'git')}+{vcs.get('url', '')}")
    local = directory if directory is not None else archive
    if isinstance(local, dict) and "url" not in local:
        _check_direct_reference(f"file:{local.get('path', '')}", allow_direct)
        raise _Problem("local directories and archives are not supported in pylock.toml input")
    if not isinstance(archive, dict):
        raise _Problem("'archive' must be a table")
    url = str(archive["url"])
    _check_direct_reference(url, allow_direct)
    return url, frozenset(_hash_table(archive.get("hashes")))


def _pylock_hashes(package: dict[str, Any]) -> frozenset[str]:
    hashes: set[str] = set()
    sdist = package.get("sdist")
    files = [sdist] if isinstance(sdist, dict) else []
    wheels = package.get("wheels", [])
    files += (
        [wheel for wheel in wheels if isinstance(wheel, dict)] if isinstance(wheels, list) else []
    )
    for file in files:
        hashes |= _hash_table(file.get("hashes"))
    return frozenset(hashes)


def _hash_table(table: Any) -> set[str]:
    """PEP 751 ``hashes = {sha256 = "..."}``; algorithms uv can't check are skipped."""
    if not isinstance(table, dict):
        return set()
    return {
        _checked_hash(algorithm, str(digest))
        for algorithm, digest in table.items()
        if algorithm.lower() in HASH_ALGORITHMS
    }
