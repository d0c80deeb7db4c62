"""Tests of isolate.bundles: deterministic snapshots of real folders, hostile archives refused."""

from __future__ import annotations

import gzip
import io
import os
import socket
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from isolate.bundles import (
    Bundle,
    bundle_hash,
    extract_bundle,
    is_excluded,
    list_bundle,
    make_bundle,
    read_bundle_file,
)
from isolate.errors import BundleError

CAP = 32 * 1024 * 1024
REPO = Path(__file__).resolve().parents[1]


def write(root: Path, rel: str, content: bytes = b"x\n", mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def sample_folder(
    root: Path, *, reverse: bool = False, modes: tuple[int, int] = (0o644, 0o755)
) -> Path:
    files = [
        ("dag.py", b"from isolate.sdk import dag\n", modes[0]),
        ("pkg/__init__.py", b"", modes[0]),
        ("pkg/helpers.py", b"def f():\n    return 1\n", modes[0]),
        ("scripts/run.sh", b"#!/bin/sh\necho hi\n", modes[1]),
        ("uv.lock", b"version = 1\n", modes[0]),
    ]
    for rel, content, mode in reversed(files) if reverse else files:
        write(root, rel, content, mode)
    return root


def sample_files() -> tuple[str, ...]:
    return ("dag.py", "pkg/__init__.py", "pkg/helpers.py", "scripts/run.sh", "uv.lock")


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {info.name: info for info in tar.getmembers()}


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- make_bundle: determinism -------------------------------------------------------------------


def test_same_content_gives_identical_bytes_whatever_the_folder(tmp_path: Path) -> None:
    a = sample_folder(tmp_path / "a")
    old_umask = os.umask(0o077)
    try:
        b = sample_folder(tmp_path / "elsewhere" / "b", reverse=True, modes=(0o600, 0o700))
    finally:
        os.umask(old_umask)
    for i, path in enumerate(sorted(b.rglob("*"))):
        os.utime(path, (1_000_000 + i, 2_000_000 + i))
    first, second = make_bundle(a, max_bytes=CAP), make_bundle(b, max_bytes=CAP)
    assert first.data == second.data
    assert first.hash == second.hash == bundle_hash(first.data)
    assert first.files == sample_files()


def test_same_hash_in_another_process(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path / "dags")
    code = (
        "import sys; from pathlib import Path; from isolate.bundles import make_bundle; "
        "print(make_bundle(Path(sys.argv[1]), max_bytes=2**25).hash)"
    )
    hashes = set()
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", code, str(folder)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        hashes.add(out.stdout.strip())
    assert hashes == {make_bundle(folder, max_bytes=CAP).hash}


def test_known_content_has_a_pinned_hash(tmp_path: Path) -> None:
    # Bundle hashes are stored identities: if this changes (a new tar layout, a new Python), every
    # pushed DAG would look changed. Change the pin only on purpose.
    write(tmp_path, "dag.py", b"print('hi')\n")
    write(tmp_path, "pkg/run.sh", b"#!/bin/sh\n", 0o755)
    assert make_bundle(tmp_path, max_bytes=CAP).hash == (
        "sha256:62209adb9e4349ad2f8831d69d2f52a2e07d4ca89099b90ee68d3ce865c6aed8"
    )


def test_tar_metadata_is_normalized(tmp_path: Path) -> None:
    write(tmp_path, "plain.py", mode=0o600)
    write(tmp_path, "group.py", mode=0o664)
    write(tmp_path, "owner_exec.sh", mode=0o700)
    write(tmp_path, "other_exec.sh", mode=0o641)
    write(tmp_path, "setuid.sh", mode=0o4755)
    found = members(make_bundle(tmp_path, max_bytes=CAP).data)
    modes = {name: info.mode for name, info in found.items()}
    assert modes == {
        "group.py": 0o644,
        "other_exec.sh": 0o755,
        "owner_exec.sh": 0o755,
        "plain.py": 0o644,
        "setuid.sh": 0o755,
    }
    for info in found.values():
        assert info.type == tarfile.REGTYPE
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")


def test_folder_given_through_a_symlink_gives_the_same_bundle(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path / "real")
    (tmp_path / "link").symlink_to(folder)
    assert make_bundle(tmp_path / "link", max_bytes=CAP) == make_bundle(folder, max_bytes=CAP)


@pytest.mark.parametrize(
    ("rel", "content"),
    [("pkg/helpers.py", b"def f():\n    return 2\n"), ("new.py", b""), ("pkg/__init__.py", b"#")],
)
def test_content_change_changes_the_hash(tmp_path: Path, rel: str, content: bytes) -> None:
    folder = sample_folder(tmp_path)
    before = make_bundle(folder, max_bytes=CAP).hash
    write(folder, rel, content)
    assert make_bundle(folder, max_bytes=CAP).hash != before


def test_rename_and_exec_bit_change_the_hash(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path)
    before = make_bundle(folder, max_bytes=CAP).hash
    (folder / "uv.lock").chmod(0o755)
    chmodded = make_bundle(folder, max_bytes=CAP).hash
    (folder / "uv.lock").rename(folder / "uv2.lock")
    renamed = make_bundle(folder, max_bytes=CAP).hash
    assert len({before, chmodded, renamed}) == 3


# --- make_bundle: what goes in ------------------------------------------------------------------


def test_exclusions(tmp_path: Path) -> None:
    kept = ["dag.py", "pkg/helper.py", "venvs_docs/readme.txt", "notes.pyc.txt", "env/x.py"]
    dropped = [
        "__pycache__/dag.cpython-311.pyc",
        "pkg/__pycache__/helper.cpython-311.pyc",
        "stale.pyc",
        "pkg/old.pyo",
        ".git/HEAD",
        "vendored/.git",  # a submodule's .git is a file
        ".hg/store",
        ".svn/entries",
        ".tox/py311/x",
        ".nox/s/x",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/x",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        ".venv/bin/python",
        "venv/lib/x.py",
        "pkg/node_modules/left-pad/index.js",
        "myenv/pyvenv.cfg",
        "myenv/lib/site.py",
        ".DS_Store",
        "pkg/.DS_Store",
    ]
    for rel in kept + dropped:
        write(tmp_path, rel)
    assert make_bundle(tmp_path, max_bytes=CAP).files == tuple(sorted(kept))


def test_excluded_symlink_is_skipped_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside_venv"
    outside.mkdir()
    folder = sample_folder(tmp_path / "dags")
    before = make_bundle(folder, max_bytes=CAP)
    (folder / ".venv").symlink_to(outside)  # e.g. an IDE's venv kept elsewhere
    (folder / "__pycache__").symlink_to(tmp_path / "dangling")
    assert make_bundle(folder, max_bytes=CAP) == before


@pytest.mark.parametrize(
    ("parts", "is_dir", "is_venv", "expected"),
    [
        (("dag.py",), False, False, False),
        (("__pycache__",), True, False, True),
        (("pkg", "__pycache__", "m.pyc"), False, False, True),
        (("pkg", ".git"), True, False, True),
        (("pkg", ".git"), False, False, True),
        (("x.pyc",), False, False, True),
        (("x.pyo",), False, False, True),
        (("x.pyc.txt",), False, False, False),
        ((".DS_Store",), False, False, True),
        (("node_modules",), True, False, True),
        (("node_modules",), False, False, False),  # only the directory is a tool's
        (("venv", "lib", "a.py"), False, False, True),
        (("myenv",), True, True, True),
        (("myenv",), True, False, False),
        (("src", "venvs"), True, False, False),
        ((), True, False, False),
    ],
)
def test_is_excluded(parts: tuple[str, ...], is_dir: bool, is_venv: bool, expected: bool) -> None:
    assert is_excluded(parts, is_dir, is_venv=is_venv) is expected


def test_empty_directories_are_not_kept(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path / "a")
    before = make_bundle(folder, max_bytes=CAP)
    (folder / "empty" / "nested").mkdir(parents=True)
    after = make_bundle(folder, max_bytes=CAP)
    assert after == before
    assert not any(info.isdir() for info in members(after.data).values())


def test_symlinks_inside_the_folder_are_dereferenced(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path / "dags")
    (folder / "alias.py").symlink_to("dag.py")
    (folder / "pkg" / "up.py").symlink_to("../uv.lock")
    (folder / "lib").symlink_to("pkg")
    (folder / "abs.py").symlink_to(folder / "pkg" / "helpers.py")
    bundle = make_bundle(folder, max_bytes=CAP)
    assert {"alias.py", "pkg/up.py", "lib/helpers.py", "lib/up.py", "abs.py"} <= set(bundle.files)
    assert read_bundle_file(bundle.data, "alias.py") == (folder / "dag.py").read_bytes()
    assert read_bundle_file(bundle.data, "lib/up.py") == b"version = 1\n"
    assert all(info.type == tarfile.REGTYPE for info in members(bundle.data).values())


def test_symlink_to_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("s")
    folder = sample_folder(tmp_path / "dags")
    (folder / "pkg" / "creds").symlink_to("../../secret.txt")
    with pytest.raises(BundleError, match=r"creds -> \.\./\.\./secret\.txt.*outside"):
        make_bundle(folder, max_bytes=CAP)


def test_dangling_symlink_is_refused(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path)
    (folder / "gone.py").symlink_to("nowhere.py")
    with pytest.raises(BundleError, match=r"gone\.py -> nowhere\.py is dangling"):
        make_bundle(folder, max_bytes=CAP)


@pytest.mark.parametrize(("link", "target"), [("pkg/again", ".."), ("me", "me"), ("a", "b")])
def test_symlink_loop_is_refused(tmp_path: Path, link: str, target: str) -> None:
    folder = sample_folder(tmp_path)
    (folder / link).symlink_to(target)
    if link == "a":
        (folder / "b").symlink_to("a")
    with pytest.raises(BundleError, match="symlink loop"):
        make_bundle(folder, max_bytes=CAP)


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_special_files_are_refused(tmp_path: Path, kind: str) -> None:
    folder = sample_folder(tmp_path)
    path = folder / "pkg" / "special"
    if kind == "fifo":
        os.mkfifo(path)
        sock = None
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    try:
        with pytest.raises(
            BundleError, match=r"pkg/special is a socket, fifo or device, not a regular file"
        ):
            make_bundle(folder, max_bytes=CAP)
    finally:
        if sock is not None:
            sock.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path)
    write(folder, "private.py", mode=0o000)
    with pytest.raises(BundleError, match=r"cannot read .*private\.py"):
        make_bundle(folder, max_bytes=CAP)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_directory_is_refused(tmp_path: Path) -> None:
    # Looking for its pyvenv.cfg raised a bare PermissionError, not a BundleError.
    folder = sample_folder(tmp_path)
    write(folder, "closed/a.py")
    (folder / "closed").chmod(0o000)
    try:
        with pytest.raises(BundleError, match=r"cannot list .*closed: Permission denied"):
            make_bundle(folder, max_bytes=CAP)
    finally:
        (folder / "closed").chmod(0o755)


def test_non_utf8_name_is_refused(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path)
    fd = os.open(os.fsencode(folder / "pkg") + b"/bad\xff.py", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    with pytest.raises(BundleError, match=r"pkg/bad\\xff\.py' is not valid UTF-8"):
        make_bundle(folder, max_bytes=CAP)


def test_newline_in_name_is_refused(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path)
    write(folder, "two\nlines.py")
    with pytest.raises(BundleError, match="contains a newline"):
        make_bundle(folder, max_bytes=CAP)


@pytest.mark.parametrize("what", ["missing", "file", "empty", "only_excluded"])
def test_bad_folders_are_refused(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "dags"
    if what == "file":
        folder.write_text("x")
    elif what == "empty":
        folder.mkdir()
    elif what == "only_excluded":
        write(folder, "__pycache__/a.pyc")
        write(folder, "b.pyc")
    with pytest.raises(BundleError, match="DAG folder"):
        make_bundle(folder, max_bytes=CAP)


def test_size_cap_is_checked_before_reading(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path)
    with open(folder / "huge.bin", "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: costs no disk, only the early check avoids reading
    with pytest.raises(BundleError, match=r"at least \d+ bytes.*cap of 1048576.*max_bundle_bytes"):
        make_bundle(folder, max_bytes=1024 * 1024)


def test_size_cap_is_exact_on_the_final_archive(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path)
    bundle = make_bundle(folder, max_bytes=CAP)
    size = len(bundle.data)
    assert make_bundle(folder, max_bytes=size) == bundle
    with pytest.raises(BundleError) as err:
        make_bundle(folder, max_bytes=size - 1)
    message = str(err.value)
    assert f"would be {size} bytes" in message
    assert f"cap of {size - 1} bytes" in message
    assert "max_bundle_bytes" in message


# --- extract, list, read ------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    folder = sample_folder(tmp_path / "dags", modes=(0o600, 0o700))
    (folder / "alias.py").symlink_to("dag.py")
    bundle = make_bundle(folder, max_bytes=CAP)
    dest = tmp_path / "out"
    old_umask = os.umask(0o077)  # extraction modes must not depend on the supervisor's umask
    try:
        extract_bundle(bundle.data, dest, expected_hash=bundle.hash)
    finally:
        os.umask(old_umask)
    files = tree(dest)
    assert tuple(files) == bundle.files == tuple(list_bundle(bundle.data))
    for rel, (content, mode) in files.items():
        assert content == (folder / rel).read_bytes()
        assert content == read_bundle_file(bundle.data, rel)
        assert mode == (0o755 if rel == "scripts/run.sh" else 0o644)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "pkg").stat().st_mode) == 0o755


def test_extract_into_existing_empty_directory(tmp_path: Path) -> None:
    bundle = make_bundle(sample_folder(tmp_path / "dags"), max_bytes=CAP)
    dest = tmp_path / "out"
    dest.mkdir()
    extract_bundle(bundle.data, dest)
    assert tuple(tree(dest)) == bundle.files


def test_long_and_unicode_paths_round_trip(tmp_path: Path) -> None:
    long_rel = "d" * 90 + "/" + "e" * 120 + "/" + "f" * 200 + ".py"
    assert len(long_rel) > 255
    folder = sample_folder(tmp_path / "dags")
    write(folder, long_rel, b"long\n")
    write(folder, "données/été.py", b"unicode\n")
    bundle = make_bundle(folder, max_bytes=CAP)
    assert {long_rel, "données/été.py"} <= set(bundle.files)
    extract_bundle(bundle.data, tmp_path / "out")
    assert (tmp_path / "out" / long_rel).read_bytes() == b"long\n"
    assert (tmp_path / "out" / "données" / "été.py").read_bytes() == b"unicode\n"
    assert list_bundle(bundle.data) == list(bundle.files)


def test_read_bundle_file_of_a_missing_path(tmp_path: Path) -> None:
    bundle = make_bundle(sample_folder(tmp_path), max_bytes=CAP)
    for path in ("nope.py", "pkg", "/dag.py"):
        with pytest.raises(BundleError, match="has no file"):
            read_bundle_file(bundle.data, path)


def test_bundle_is_frozen(tmp_path: Path) -> None:
    bundle = make_bundle(sample_folder(tmp_path), max_bytes=CAP)
    with pytest.raises(AttributeError):
        bundle.hash = "sha256:0"  # type: ignore[misc]
    assert isinstance(bundle, Bundle)


# --- hostile archives ---------------------------------------------------------------------------


def reg(name: str, content: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(content), mode
    return info, content


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def build(*entries: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=fmt) as tar:
        for info, content in entries:
            tar.addfile(info, None if content is None else io.BytesIO(content))
    return buf.getvalue()


def gnu_non_utf8() -> bytes:
    info, content = reg("ok.py")
    bad, _ = reg("bad\udcff.py")
    return build((info, content), (bad, b"x"), fmt=tarfile.GNU_FORMAT)


HOSTILE = {
    "absolute": build(reg("ok.py"), reg("/etc/cron.d/evil")),
    "dotdot": build(reg("ok.py"), reg("../evil.py")),
    "inner_dotdot": build(reg("pkg/../../evil.py")),
    "dot": build(reg("./ok.py")),
    "empty_component": build(reg("pkg//ok.py")),
    "empty_name": build(reg("")),
    "root_dir": build(special("/", tarfile.DIRTYPE)),
    "nul_in_name": build(reg("p" * 120 + "\x00.py")),
    "newline_in_name": build(reg("two\nlines.py")),
    "non_utf8_name": gnu_non_utf8(),
    "symlink": build(reg("ok.py"), special("link.py", tarfile.SYMTYPE, "/etc/passwd")),
    "hardlink": build(reg("ok.py"), special("hard.py", tarfile.LNKTYPE, "ok.py")),
    "chardev": build(special("null", tarfile.CHRTYPE)),
    "blockdev": build(special("sda", tarfile.BLKTYPE)),
    "fifo": build(special("pipe", tarfile.FIFOTYPE)),
    "duplicate": build(reg("ok.py", b"first"), reg("ok.py", b"second")),
    "duplicate_dir": build(
        special("pkg", tarfile.DIRTYPE), special("pkg", tarfile.DIRTYPE), reg("pkg/a.py")
    ),
    "file_then_dir": build(reg("pkg"), reg("pkg/evil.py")),
    "file_and_dir": build(reg("pkg"), special("pkg", tarfile.DIRTYPE)),
    "gzip": gzip.compress(build(reg("ok.py")), mtime=0),
    "garbage": b"this is not a tar archive" * 100,
    "empty": b"",
    "only_end_marker": bytes(10240),
    "only_a_directory": build(special("pkg", tarfile.DIRTYPE)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    data = HOSTILE[case]
    with pytest.raises(BundleError):
        list_bundle(data)
    with pytest.raises(BundleError):
        read_bundle_file(data, "ok.py")
    with pytest.raises(BundleError):
        extract_bundle(data, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "existing").mkdir()
    with pytest.raises(BundleError):
        extract_bundle(data, tmp_path / "existing")
    assert list((tmp_path / "existing").iterdir()) == []


def test_special_bits_are_stripped_on_extract(tmp_path: Path) -> None:
    data = build(
        special("shared", tarfile.DIRTYPE),
        reg("shared/suid.sh", b"#!/bin/sh\n", 0o4755),
        reg("shared/sgid.py", b"", 0o2640),
        reg("private.py", b"", 0o600),
    )
    extract_bundle(data, tmp_path / "out")
    assert tree(tmp_path / "out") == {
        "private.py": (b"", 0o644),
        "shared/sgid.py": (b"", 0o644),
        "shared/suid.sh": (b"#!/bin/sh\n", 0o755),
    }
    assert stat.S_IMODE((tmp_path / "out" / "shared").stat().st_mode) == 0o755


def test_sticky_directory_mode_is_not_kept(tmp_path: Path) -> None:
    info, _ = special("tmp", tarfile.DIRTYPE)
    info.mode = 0o1777
    extract_bundle(build((info, None), reg("tmp/a.py")), tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out" / "tmp").stat().st_mode) == 0o755


def test_hash_mismatch_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(sample_folder(tmp_path / "dags"), max_bytes=CAP)
    other = bundle_hash(bundle.data + b"\0")
    with pytest.raises(BundleError, match="does not match"):
        extract_bundle(bundle.data, tmp_path / "out", expected_hash=other)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cut", [10, 511, 512, 700, 1024, 1536, 1600, 2048, 2560])
def test_truncated_archive_is_refused(tmp_path: Path, cut: int) -> None:
    data = build(reg("a.py", b"a" * 100), reg("b.py", b"b" * 100))
    assert len(data) > 3072  # two members of two blocks each, then the two-block end marker
    list_bundle(data)
    with pytest.raises(BundleError):
        list_bundle(data[:cut])
    with pytest.raises(BundleError):
        extract_bundle(data[:cut], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failure_while_writing_removes_the_partial_extraction(tmp_path: Path) -> None:
    # Valid as an archive, but no filesystem takes a 300-byte name: fails after a.py is written.
    data = build(reg("a.py"), reg("pkg/b.py"), reg("x" * 300 + ".py"))
    with pytest.raises(BundleError, match="cannot extract"):
        extract_bundle(data, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "existing").mkdir()
    with pytest.raises(BundleError, match="cannot extract"):
        extract_bundle(data, tmp_path / "existing")
    assert list((tmp_path / "existing").iterdir()) == []


def test_destination_must_be_new_or_an_empty_directory(tmp_path: Path) -> None:
    bundle = make_bundle(sample_folder(tmp_path / "dags"), max_bytes=CAP)
    full = tmp_path / "full"
    write(full, "keep.txt", b"mine")
    with pytest.raises(BundleError, match="not empty"):
        extract_bundle(bundle.data, full)
    assert tree(full) == {"keep.txt": (b"mine", 0o644)}
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(BundleError, match="not a directory"):
        extract_bundle(bundle.data, tmp_path / "link")
    assert list((tmp_path / "empty").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="not a directory"):
        extract_bundle(bundle.data, tmp_path / "file")
    with pytest.raises(BundleError, match="cannot create"):
        extract_bundle(bundle.data, tmp_path / "missing" / "out")
