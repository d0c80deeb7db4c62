"""Loading a DAG folder in the author's own process: bundle it, import its DAG files, serialize.

The folder is first snapshotted into its bundle, and the DAG files are imported from an
extracted copy of that bundle: what is serialized is exactly what tasks will later run
against, and no path of the author's machine can leak into a spec. DAG code runs here,
in the pushing author's process, and never on the server.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from isolate import sdk
from isolate.bundles import Bundle, extract_bundle, make_bundle, read_bundle_file
from isolate.config import Settings
from isolate.errors import BundleError, DagDefinitionError, UsageError, ValidationError
from isolate.format import FORMAT_VERSION, canonical_json, load_object, spec_hash
from isolate.model import DagSpec
from isolate.validate import check_push, lock_digest


@dataclass(frozen=True)
class LoadedDag:
    """One DAG of a folder, serialized and validated, with its lockfile's bytes."""

    spec: DagSpec
    canonical: str
    spec_hash: str
    lock: bytes


@dataclass(frozen=True)
class FolderSnapshot:
    """Everything a push needs: the bundle and every DAG defined in it."""

    bundle: Bundle
    dags: tuple[LoadedDag, ...]


def is_dag_file(relpath: str, text: str) -> bool:
    """A ``.py`` file that mentions both ``isolate`` and ``DAG`` (Airflow's safe-mode rule)."""
    return relpath.endswith(".py") and "isolate" in text and "DAG" in text


def load_folder(path: Path, *, settings: Settings | None = None) -> FolderSnapshot:
    """Snapshot ``path`` (a DAG folder, or one DAG file in its folder) and serialize its DAGs."""
    settings = settings or Settings()
    bundle, found = _load_dags(Path(path), settings)
    loaded = tuple(_serialize(dag, rel, bundle, settings) for dag, rel in found)
    return FolderSnapshot(bundle=bundle, dags=tuple(sorted(loaded, key=lambda d: d.spec.dag_id)))


def declared_requirements(path: Path, *, settings: Settings | None = None) -> list[str]:
    """The union of the ``requirements`` the DAGs at ``path`` declare (for ``isolate lock``)."""
    _, found = _load_dags(Path(path), settings or Settings())
    return sorted({req for dag, _ in found for req in dag.requirements})


def _load_dags(path: Path, settings: Settings) -> tuple[Bundle, list[tuple[sdk.DAG, str]]]:
    """Bundle the folder and import its DAG files from an extracted copy of the bundle."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    only: str | None = None
    folder = path
    if path.is_file():
        if path.suffix != ".py":
            raise UsageError(f"{path}: a DAG file must be a .py file")
        folder, only = path.parent, path.name
    bundle = make_bundle(folder, max_bytes=settings.max_bundle_bytes)
    candidates = [only] if only else bundle.files
    dag_files = [
        rel for rel in candidates if is_dag_file(rel, _text(read_bundle_file(bundle.data, rel)))
    ]
    if not dag_files:
        raise UsageError(
            f"{path}: no DAG files found "
            "(a DAG file is a .py file that mentions 'isolate' and 'DAG')"
        )
    with tempfile.TemporaryDirectory(prefix="isolate-load-") as tmp:
        root = Path(tmp) / "bundle"
        extract_bundle(bundle.data, root)
        found = _import_dags(root, dag_files)
    if not found:
        raise UsageError(f"{path}: the DAG files define no DAG")
    return bundle, found


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def module_name(relpath: str) -> str:
    """``etl/dags/daily.py`` -> ``etl.dags.daily``; refuses names Python cannot import."""
    parts = list(PurePosixPath(relpath).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(p.isidentifier() for p in parts):
        raise DagDefinitionError(
            f"{relpath}: not an importable module name (use letters, digits, _)"
        )
    return ".".join(parts)


def _import_dags(root: Path, dag_files: list[str]) -> list[tuple[sdk.DAG, str]]:
    found: list[tuple[sdk.DAG, str]] = []
    seen: dict[str, str] = {}
    with _isolated_imports(root) as taken:
        for rel in dag_files:
            name = module_name(rel)
            if name.split(".")[0] in taken:
                raise DagDefinitionError(
                    f"{rel}: its module name {name!r} shadows an installed module: rename the file"
                )
            created: list[sdk.DAG] = []
            sdk.collect_into(created)
            try:
                _exec_module(root, rel, name)
            finally:
                sdk.collect_into(None)
            for dag in created:
                if dag.dag_id in seen:
                    raise DagDefinitionError(
                        f"DAG id {dag.dag_id!r} is defined twice: in {seen[dag.dag_id]} and {rel}"
                    )
                seen[dag.dag_id] = rel
                found.append((dag, rel))
    return found


@contextmanager
def _isolated_imports(root: Path) -> Iterator[set[str]]:
    """Put ``root`` first on sys.path; afterwards forget every module the DAG code imported.

    Yields the top-level module names already taken (imported or standard library): a DAG
    file with such a name would shadow them, here and in the task's interpreter.
    """
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    taken = {name.split(".")[0] for name in saved_modules} | set(sys.stdlib_module_names)
    taken.discard("__main__")
    sys.path.insert(0, str(root))
    try:
        yield taken
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            del sys.modules[name]
        sdk._active.clear()


def _exec_module(root: Path, rel: str, name: str) -> None:
    spec = importlib.util.spec_from_file_location(name, root / rel)
    if spec is None or spec.loader is None:
        raise DagDefinitionError(f"{rel}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (DagDefinitionError, ValidationError) as exc:
        raise DagDefinitionError(f"{rel}{_line_in(exc, root)}: {exc}") from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise DagDefinitionError(
            f"{rel}{_line_in(exc, root)}: {type(exc).__name__}: {exc}"
        ) from None


def _line_in(exc: BaseException, root: Path) -> str:
    """``:LINE`` of the innermost frame inside the folder, for a located message."""
    line = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(str(root)):
            rel = Path(frame.filename).relative_to(root).as_posix()
            line = f" ({rel}:{frame.lineno})"
    return line


def _serialize(dag: sdk.DAG, rel: str, bundle: Bundle, settings: Settings) -> LoadedDag:
    lockfile = dag.lockfile
    try:
        lock = read_bundle_file(bundle.data, lockfile)
    except BundleError:
        raise DagDefinitionError(
            f"DAG {dag.dag_id}: lockfile {lockfile!r} is not in the folder: "
            "run `isolate lock` or set DAG(lockfile=...)"
        ) from None
    try:
        lock_text = lock.decode("utf-8")
    except UnicodeDecodeError:
        raise DagDefinitionError(f"DAG {dag.dag_id}: lockfile {lockfile!r} is not UTF-8") from None
    draft = {
        **dag.to_draft(),
        "format_version": FORMAT_VERSION,
        "fileloc": rel,
        "environment": {
            "lockfile": lockfile,
            "lock": lock_text,
            "lock_hash": lock_digest(lock_text),
        },
        "bundle": {"hash": bundle.hash},
    }
    # A JSON round trip turns tuples and other Python spellings into plain JSON values.
    spec = load_object(json.loads(json.dumps(draft)))
    check_push(spec)
    text = canonical_json(spec)
    size = len(text.encode("utf-8"))
    if size > settings.max_spec_bytes:
        raise ValidationError(
            f"dag {dag.dag_id}: serialized DAG is {size} bytes, over the cap of "
            f"{settings.max_spec_bytes} (setting max_spec_bytes)"
        )
    return LoadedDag(spec=spec, canonical=text, spec_hash=spec_hash(spec), lock=lock)
