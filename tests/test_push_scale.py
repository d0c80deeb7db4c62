"""Pushing folders of many files: one read of the bundle, the file cap, importing from the
bundle's bytes, and progress on a terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from isolate import bundles
from isolate.bundles import Bundle, make_bundle, read_bundle_files
from isolate.config import Settings, load_config
from isolate.errors import BundleError, ConfigError
from isolate.services.dagfile import load_folder
from isolate.services.home import _TEMPLATE

CAP = 32 * 1024 * 1024
TINY_DAG = """
    from isolate import DAG, CommandTask

    with DAG("many") as dag:
        CommandTask("t", command=["true"])
"""


def many_files(root: Path, count: int) -> Path:
    for i in range(count):
        path = root / f"pkg{i // 50}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"X = {i}\n")
    return root


def test_loading_a_folder_never_parses_the_bundle_it_just_made(make_folder, monkeypatch) -> None:
    # A parse of the whole archive per file read made loading quadratic in the file count.
    parses = []
    real = bundles._members

    def counting(data: bytes) -> list[bundles._Member]:
        parses.append(len(data))
        return real(data)

    monkeypatch.setattr(bundles, "_members", counting)
    folder = many_files(make_folder({"dag.py": TINY_DAG}), 300)
    snapshot = load_folder(folder)
    assert [d.spec.dag_id for d in snapshot.dags] == ["many"]
    assert len(snapshot.bundle.files) == 302 and parses == []
    # A bundle received as bytes (the push server's) is parsed once for any number of files.
    received = Bundle(data=snapshot.bundle.data, hash=snapshot.bundle.hash, files=())
    contents = received.read_files(snapshot.bundle.files)
    assert len(contents) == 302 and len(parses) == 1
    assert contents == snapshot.bundle.read_files(snapshot.bundle.files)
    assert read_bundle_files(received.data, ["dag.py", "absent.py"]).keys() == {"dag.py"}


def _counting(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, object]]) -> None:
    """Record in ``calls`` each call of os.open, fstat, read, stat and lstat."""
    for name in ("open", "fstat", "read", "stat", "lstat"):
        real = getattr(os, name)

        def counting(*args: object, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            calls.append((_name, args[0]))
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, counting)


def test_bundling_opens_stats_and_reads_each_file_once(tmp_path: Path, monkeypatch) -> None:
    # The walk stat-ed every file by its path, then each was opened, stat-ed and read twice
    # (to see its end): six system calls per file where four do, for 20,000 files a push.
    folder = many_files(tmp_path / "dags", 120)  # pkg0, pkg1, pkg2
    calls: list[tuple[str, object]] = []
    _counting(monkeypatch, calls)
    bundle = make_bundle(folder, max_bytes=CAP)
    monkeypatch.undo()
    assert len(bundle.files) == 120
    by_name = [(name, arg) for name, arg in calls if isinstance(arg, str) and arg.endswith(".py")]
    assert sorted(name for name, _ in by_name) == ["open"] * 120  # opened by name, once each
    assert [name for name, _ in calls].count("fstat") == 120
    assert [name for name, _ in calls].count("read") == 120
    # Each directory: opened once, and its pyvenv.cfg looked for.
    assert [arg for name, arg in calls if name == "stat"] == ["pyvenv.cfg"] * 3


def test_extracting_opens_each_directory_once(tmp_path: Path, monkeypatch) -> None:
    # Each file's directories were made and opened again from the top: 15 system calls for
    # a file three levels down, where creating, writing and closing it take 4.
    folder = many_files(tmp_path / "dags", 120)
    (folder / "pkg1" / "deeper").mkdir()
    (folder / "pkg1" / "deeper" / "data.json").write_text("{}")
    bundle = make_bundle(folder, max_bytes=CAP)
    calls: list[tuple[str, object]] = []
    _counting(monkeypatch, calls)
    bundle.extract(tmp_path / "out")
    monkeypatch.undo()
    opened = [arg for name, arg in calls if name == "open"]
    assert sorted(map(str, opened)) == sorted(
        [str(tmp_path / "out"), "pkg0", "pkg1", "pkg2", "deeper", "data.json"]
        + [f"mod{i}.py" for i in range(120)]
    )
    assert read_bundle_files(bundle.data, ["pkg1/deeper/data.json"]) == {
        "pkg1/deeper/data.json": (tmp_path / "out" / "pkg1" / "deeper" / "data.json").read_bytes()
    }


def _tarfile_bundle(folder: Path, names: list[str]) -> bytes:
    """The archive as tarfile itself writes it (how make_bundle wrote every bundle before)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for name in names:
            path = folder / name
            info = tarfile.TarInfo(name)
            content = path.read_bytes()
            info.size, info.mtime, info.type = len(content), 0, tarfile.REGTYPE
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_bundle_bytes_are_those_tarfile_writes(tmp_path: Path) -> None:
    # A bundle's hash is its stored identity: the archive must not change by a byte.
    files = {
        "a.py": b"",
        "b" * 100: b"x" * 511,
        "c" * 101: b"x" * 512,
        "d/" + "e" * 97: b"x" * 513,
        "d/" + "f" * 98: b"x" * 10_240,
        "données/été.py": "é".encode() * 300,
        "g" * 90 + "/" + "h" * 120 + "/" + "i" * 200 + ".py": b"long\n",
        "run.sh": b"#!/bin/sh\n",
        "sp ace/#hash;semi.txt": b"odd\n",
    }
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (tmp_path / "run.sh").chmod(0o700)
    bundle = make_bundle(tmp_path, max_bytes=CAP)
    assert bundle.data == _tarfile_bundle(tmp_path, sorted(files))
    for size in (0, 1, 9_000, 10_239, 10_240, 20_000):  # every padding of the last record
        (tmp_path / "a.py").write_bytes(b"y" * size)
        assert make_bundle(tmp_path, max_bytes=CAP).data == _tarfile_bundle(tmp_path, sorted(files))


def test_the_number_of_files_is_capped(tmp_path: Path) -> None:
    folder = many_files(tmp_path / "dags", 12)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"")  # excluded files do not count
    assert len(make_bundle(folder, max_bytes=CAP, max_files=12).files) == 12
    with pytest.raises(BundleError) as err:
        make_bundle(folder, max_bytes=CAP, max_files=10)
    message = str(err.value)
    assert "has 12 files to bundle, over the cap of 10 files (the max_bundle_files setting)" in (
        message
    )
    assert "\n" not in message


def test_max_bundle_files_is_a_setting(tmp_path: Path) -> None:
    assert Settings().max_bundle_files >= 20_000  # the benchmark's folder must be pushable
    env = {"ISOLATE_MAX_BUNDLE_FILES": "7"}
    assert load_config(tmp_path, environ=env).settings.max_bundle_files == 7
    for bad in ("lots", "0"):
        with pytest.raises(ConfigError, match="max_bundle_files"):
            load_config(tmp_path, environ={"ISOLATE_MAX_BUNDLE_FILES": bad})
    assert "# max_bundle_files = " in _TEMPLATE


def test_a_push_over_the_file_cap_stores_nothing(cli, make_folder, monkeypatch) -> None:
    folder = many_files(make_folder({"dag.py": TINY_DAG}), 20)
    monkeypatch.setenv("ISOLATE_MAX_BUNDLE_FILES", "10")
    refused = cli("push", str(folder), expect=4)
    line = refused.stderr.strip()
    assert "\n" not in line
    assert "has 22 files to bundle, over the cap of 10 files (the max_bundle_files setting)" in (
        line
    )
    assert json.loads(cli("dags", "list", "--json").stdout) == []
    monkeypatch.setenv("ISOLATE_MAX_BUNDLE_FILES", "22")
    assert json.loads(cli("push", str(folder), "--json").stdout)[0]["status"] == "new"


IMPORTING_DAG = """
    import importlib.resources
    import json
    import pkgutil
    import sys
    from pathlib import Path

    from isolate import DAG, CommandTask

    import ns.inner                      # a namespace package (no __init__.py)
    from pkg import helpers              # a package
    sys.path.insert(0, str(Path(__file__).parent / "lib"))
    import vendored                      # from a directory of the bundle put on sys.path

    conf = json.loads((Path(__file__).parent / "conf" / "dags.json").read_text())
    data = importlib.resources.files("pkg").joinpath("data.txt").read_text().strip()
    found = sorted(name for _, name, _ in pkgutil.iter_modules(helpers.__path__))

    with DAG(conf["dag_id"], description=f"{data} {found} {vendored.X} {ns.inner.Y}") as dag:
        CommandTask(helpers.TASK, command=["true"])
"""


def test_dag_files_import_from_the_bundle_as_from_a_folder(make_folder) -> None:
    folder = make_folder(
        {
            "dag.py": IMPORTING_DAG,
            "conf/dags.json": '{"dag_id": "from_conf"}',
            "ns/inner.py": "Y = 'ns'\n",
            "pkg/__init__.py": "",
            "pkg/helpers/__init__.py": "TASK = 'from_pkg'\n",
            "pkg/helpers/one.py": "",
            "pkg/helpers/sub/__init__.py": "",
            "pkg/data.txt": "data\n",
            "lib/vendored.py": "X = 'lib'\n",
        }
    )
    modules, path, hooks = set(sys.modules), list(sys.path), list(sys.path_hooks)
    (dag,) = load_folder(folder).dags
    assert dag.spec.dag_id == "from_conf"
    assert dag.spec.description == "data ['one', 'sub'] lib ns"
    assert [t.task_id for t in dag.spec.tasks] == ["from_pkg"]
    assert set(sys.modules) - modules == set() and sys.path == path and sys.path_hooks == hooks
    assert not any(str(p).startswith("/tmp/isolate-load-") for p in sys.path_importer_cache)


def test_a_failing_module_is_located_in_the_bundle(make_folder) -> None:
    folder = make_folder(
        {"dag.py": "from isolate import DAG\nimport pkg.bad\n", "pkg/bad.py": "\n\n1 / 0\n"}
    )
    with pytest.raises(Exception, match=r"dag.py \(pkg/bad.py:3\): ZeroDivisionError"):
        load_folder(folder)


SLOW_DAG = """
    import time

    from isolate import DAG, CommandTask

    time.sleep(1.5)
    with DAG("slow") as dag:
        CommandTask("t", command=["true"])
"""


def test_a_long_step_shows_progress_on_a_terminal_only(cli, make_folder) -> None:
    folder = make_folder({"dag.py": SLOW_DAG})
    exe = Path(sys.executable).parent / "isolate"
    primary, secondary = pty.openpty()
    try:
        subprocess.run(
            [exe, "push", str(folder)],
            stdout=subprocess.PIPE,
            stderr=secondary,
            env=dict(os.environ),
            check=True,
        )
        os.close(secondary)
        shown = os.read(primary, 65536).decode()
    finally:
        os.close(primary)
    assert "importing 1 DAG file ..." in shown and "done in" in shown
    assert "bundling" not in shown and "validating" not in shown  # quick steps print nothing
    (folder / "dag.py").write_text((folder / "dag.py").read_text() + "# changed\n")
    assert "importing" not in cli("push", str(folder)).stderr  # not a terminal: no progress
