"""Loading DAG folders in the author's process: discovery, errors, determinism, hygiene."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from isolate.config import Settings
from isolate.errors import BundleError, DagDefinitionError, UsageError, ValidationError
from isolate.services.dagfile import _is_dag_source, is_dag_file, load_folder, module_name
from isolate.validate import ID_RULE
from tests.conftest import ETL_DAG

HELPER_DAG = """
    from isolate import DAG, PythonTask
    from helpers.jobs import transform

    with DAG("with_helpers") as dag:
        PythonTask("t", callable=transform)
        PythonTask("u", callable="helpers.jobs:transform")
"""
HELPER = """
    def transform():
        return "done"
"""


def test_loads_every_dag_with_its_bundle_and_lock(make_folder) -> None:
    folder = make_folder(
        {
            "etl.py": ETL_DAG,
            "more.py": HELPER_DAG,
            "helpers/__init__.py": "",
            "helpers/jobs.py": HELPER,
        },
        lock="six==1.16.0 --hash=sha256:" + "a" * 64 + "\n",
    )
    snap = load_folder(folder)
    assert [d.spec.dag_id for d in snap.dags] == ["etl", "with_helpers"]
    etl, helpers = snap.dags
    assert etl.spec.fileloc == "etl.py" and helpers.spec.fileloc == "more.py"
    assert etl.spec.bundle_hash == snap.bundle.hash
    assert etl.lock.startswith(b"six==1.16.0")
    assert etl.spec.lockfile.path == "requirements.txt"
    assert [t.callable for t in helpers.spec.tasks] == ["helpers.jobs:transform"] * 2
    assert json.loads(etl.canonical)["tasks"][1]["args"] == [{"$xcom": "extract"}]
    assert "helpers/jobs.py" in snap.bundle.files


def test_a_single_file_loads_only_its_dags_but_bundles_the_folder(make_folder) -> None:
    folder = make_folder({"etl.py": ETL_DAG, "other.py": ETL_DAG.replace('"etl"', '"other"')})
    snap = load_folder(folder / "etl.py")
    assert [d.spec.dag_id for d in snap.dags] == ["etl"]
    assert "other.py" in snap.bundle.files


def _hash_in_subprocess(folder: Path, seed: str) -> str:
    code = (
        "import sys, json\n"
        "from isolate.services.dagfile import load_folder\n"
        "s = load_folder(sys.argv[1])\n"
        "print(json.dumps([[d.spec_hash, d.canonical] for d in s.dags] + [s.bundle.hash]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        check=True,
    )
    return out.stdout


def test_same_dag_gives_identical_bytes_across_processes_and_paths(make_folder, tmp_path) -> None:
    first = make_folder({"etl.py": ETL_DAG, "more.py": HELPER_DAG, "helpers/jobs.py": HELPER})
    second = tmp_path / "elsewhere" / "deeper" / "copy"
    shutil.copytree(first, second)
    os.utime(second / "etl.py", (1, 1))
    os.chmod(second / "more.py", 0o600)
    a = _hash_in_subprocess(first, "1")
    b = _hash_in_subprocess(second, "2")
    assert a == b
    assert str(tmp_path) not in a  # no author-machine path leaks into a spec


def test_a_changed_helper_changes_the_bundle_and_every_spec(make_folder) -> None:
    folder = make_folder({"etl.py": ETL_DAG, "helpers/jobs.py": HELPER})
    before = load_folder(folder).dags[0].spec_hash
    (folder / "helpers" / "jobs.py").write_text("X = 1\n")
    assert load_folder(folder).dags[0].spec_hash != before


@pytest.mark.parametrize(
    ("files", "error", "message"),
    [
        ({"notes.py": "x = 1\n"}, UsageError, "no DAG files found"),
        ({"empty.py": "# isolate DAG file with no DAG\n"}, UsageError, "define no DAG"),
        (
            {"bad.py": "from isolate import DAG\n\nimport not_a_module_anywhere\n"},
            DagDefinitionError,
            "bad.py (bad.py:3): ModuleNotFoundError",
        ),
        (
            {"quits.py": "from isolate import DAG\nimport sys\nsys.exit(3)\n"},
            DagDefinitionError,
            "SystemExit: 3",
        ),
        (
            {
                "a.py": "from isolate import DAG\nDAG('same')\n",
                "b.py": "from isolate import DAG\nDAG('same')\n",
            },
            DagDefinitionError,
            "DAG id 'same' is defined twice: in a.py and b.py",
        ),
        (
            {"json.py": "from isolate import DAG\nDAG('x')\n"},
            DagDefinitionError,
            "shadows an installed module",
        ),
        (
            {"my-dag.py": "from isolate import DAG\nDAG('x')\n"},
            DagDefinitionError,
            "not an importable module",
        ),
        (
            {
                "dup.py": "from isolate import DAG, PythonTask\nwith DAG('d'):\n"
                "    PythonTask('a', callable='m:f')\n    PythonTask('a', callable='m:f')\n"
            },
            DagDefinitionError,
            "dup.py (dup.py:4): DAG d: task id 'a' is used twice",
        ),
        (
            {
                "cyc.py": "from isolate import DAG, PythonTask\nwith DAG('cyc'):\n"
                "    a = PythonTask('a', callable='m:f')\n    b = PythonTask('b', callable='m:f')\n"
                "    a >> b >> a\n"
            },
            ValidationError,
            "dag cyc: tasks: dependency cycle",
        ),
        (
            {"timing.py": "from isolate import DAG\nDAG('s', schedule='every day')\n"},
            ValidationError,
            "schedule: invalid cron expression 'every day'",
        ),
    ],
)
def test_bad_folders_fail_with_a_located_message(make_folder, files, error, message) -> None:
    folder = make_folder(files)
    modules, path = set(sys.modules), list(sys.path)
    with pytest.raises(error) as info:
        load_folder(folder)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert set(sys.modules) - modules == set()  # the author's modules are forgotten
    assert sys.path == path


def test_lockfile_problems(make_folder) -> None:
    # A lockfile is required only when there is something to lock.
    for files, why in [
        ({"requirements.in": "six\n"}, "but the folder has requirements.in"),
        ({"pylock.toml": ""}, "but the folder has pylock.toml"),
        ({}, "but the DAG declares requirements"),
    ]:
        dag = (
            ETL_DAG if files else ETL_DAG.replace('DAG("etl",', 'DAG("etl", requirements=["six"],')
        )
        with pytest.raises(
            DagDefinitionError,
            match=f"DAG etl: lockfile 'requirements.txt' is not in the folder {why}: run "
            "`isolate lock`",
        ):
            load_folder(make_folder({"etl.py": dag, **files}, lock=None))
    folder = make_folder({"etl.py": ETL_DAG}, lock=None)
    (folder / "requirements.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(DagDefinitionError, match="is not UTF-8"):
        load_folder(folder)
    custom = make_folder(
        {
            "etl.py": ETL_DAG.replace('DAG("etl",', 'DAG("etl", lockfile="locks/etl.txt",'),
            "locks/etl.txt": "x",
        },
        lock=None,
    )
    assert load_folder(custom).dags[0].spec.lockfile.text == "x"
    (custom / "locks" / "etl.txt").unlink()  # a lockfile the DAG names must be there
    with pytest.raises(DagDefinitionError, match="lockfile 'locks/etl.txt' is not in the folder"):
        load_folder(custom)


def test_a_folder_with_nothing_to_lock_needs_no_lockfile(make_folder) -> None:
    (dag,) = load_folder(make_folder({"etl.py": ETL_DAG}, lock=None)).dags
    lockfile = dag.spec.lockfile
    assert (lockfile.path, lockfile.text, dag.lock) == ("requirements.txt", "", b"")
    empty_file = load_folder(make_folder({"etl.py": ETL_DAG}, lock="")).dags[0]
    assert empty_file.spec.lockfile.lock_hash == lockfile.lock_hash  # the same (empty) env


BROKEN_DAG = """
    from isolate import DAG, PythonTask

    with DAG("bad id!", schedule="every day", start_date="2024-01-01T00:00:00+00:00",
             requirements=["six"]):
        a = PythonTask("a", callable="m:f")
        b = PythonTask("b", callable="m:f")
        a >> b >> a
"""


def test_every_problem_is_reported_at_once(make_folder) -> None:
    # A missing lockfile and a bad id used to hide the cycle and the bad cron string.
    folder = make_folder(
        {
            "broken.py": BROKEN_DAG,
            "cyc.py": "from isolate import DAG, PythonTask\nwith DAG('cyc'):\n"
            "    a = PythonTask('a', callable='m:f')\n    a >> a\n",
            "fails.py": "from isolate import DAG\n\nimport not_a_module_anywhere\n",
            "good.py": "from isolate import DAG, PythonTask\nwith DAG('good'):\n"
            "    PythonTask('a', callable='m:f')\n",
        },
        lock=None,
    )
    with pytest.raises(ValidationError) as info:
        load_folder(folder)
    problems = info.value.problems
    assert problems == [
        "fails.py (fails.py:3): ModuleNotFoundError: No module named 'not_a_module_anywhere'",
        "broken.py: lockfile 'requirements.txt' is not in the folder but the DAG declares "
        "requirements: run `isolate lock` or set DAG(lockfile=...)",
        f"broken.py: dag_id: invalid id 'bad id!': use {ID_RULE}",
        "broken.py: schedule: invalid cron expression 'every day'"
        + problems[3].split("'every day'", 1)[1],
        "broken.py: tasks: dependency cycle a -> b -> a",
        "dag cyc: tasks[a].upstream: task depends on itself",
    ]
    message = str(info.value)
    assert "\n" not in message and message.endswith("(and 1 more)")
    assert message.startswith("fails.py (fails.py:3): ModuleNotFoundError")


def test_one_problem_keeps_its_own_error(make_folder) -> None:
    folder = make_folder(
        {
            "cyc.py": "from isolate import DAG, PythonTask\nwith DAG('cyc'):\n"
            "    a = PythonTask('a', callable='m:f')\n    a >> a\n"
        }
    )
    with pytest.raises(ValidationError) as info:
        load_folder(folder)
    assert str(info.value) == "dag cyc: tasks[a].upstream: task depends on itself"


def test_the_lock_inputs_are_those_isolate_lock_reads() -> None:
    from isolate.services import dagfile, locking

    assert dagfile.LOCK_INPUTS == locking.INPUTS and dagfile.DEFAULT_LOCKFILE == locking.OUTPUT


def test_caps_are_settings(make_folder) -> None:
    folder = make_folder({"etl.py": ETL_DAG})
    with pytest.raises(ValidationError, match="over the cap of 100 .setting max_spec_bytes"):
        load_folder(folder, settings=Settings(max_spec_bytes=100))
    with pytest.raises(BundleError, match="max_bundle_bytes"):
        load_folder(folder, settings=Settings(max_bundle_bytes=600))


def test_missing_path_and_non_python_file(tmp_path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_folder(tmp_path / "absent")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(UsageError, match="must be a .py file"):
        load_folder(tmp_path / "x.txt")


def test_module_names() -> None:
    assert module_name("etl/dags/daily.py") == "etl.dags.daily"
    assert module_name("pkg/__init__.py") == "pkg"
    with pytest.raises(DagDefinitionError):
        module_name("2fast.py")


@pytest.mark.parametrize(
    "source",
    [
        b"from isolate import DAG\n",
        b"# isolate\xff DAG",
        b"\xffisolate\xc3DAG",  # a cut-off sequence before each word
        b"iso\xe2\x82late DAG",  # invalid bytes inside a word: not the word
        b"isolate D\xf0\x9fAG",
        b"\xc0\xafisolate \xed\xa0\x80DAG",  # overlong and surrogate encodings
        "# isolate: ünïcode DAG ✓".encode(),
        b"DAG only",
        b"",
    ],
)
def test_dag_files_are_found_in_the_undecoded_source(source: bytes) -> None:
    # Discovery looks for the words in every module's bytes (20,000 for a vendored library)
    # without decoding them: the answer must be the text's, whatever the bytes.
    text = source.decode("utf-8", errors="replace")
    assert _is_dag_source("m.py", source) is is_dag_file("m.py", text)
    assert _is_dag_source("m.txt", source) is False
