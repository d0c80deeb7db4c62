"""Loading a DAG folder in the author's own process: bundle it, import its DAG files, serialize.

The folder is first snapshotted into its bundle, and the DAG files are imported from that
bundle: what is serialized is exactly what tasks will later run against, and no path of the
author's machine can leak into a spec. Python modules are imported from the bundle's bytes
(as ``zipimport`` does from a zip file), and the bundle's other files are extracted next to
where the modules seem to be, for code that reads them: a folder of 20,000 modules costs no
20,000 files written and removed again. DAG code runs here, in the pushing author's
process, and never on the server.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from importlib.resources.abc import TraversableResources
from pathlib import Path, PurePosixPath

from isolate import sdk
from isolate.bundles import Bundle, make_bundle
from isolate.config import Settings
from isolate.errors import DagDefinitionError, UsageError, ValidationError
from isolate.format import FORMAT_VERSION, canonical_json, load_object, spec_hash
from isolate.model import DagSpec
from isolate.validate import is_valid_id, lock_digest, push_problems, readable_meaning_problems


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


#: A step of loading a folder, such as ``step("bundling dags/etl")``: a context manager
#: around it (e.g. to show progress).
Step = Callable[[str], AbstractContextManager[object]]

#: The lockfile a DAG names by default, and the inputs ``isolate lock`` makes it from (as
#: in :mod:`isolate.services.locking`, which imports this module). A folder with none of
#: them, whose DAGs declare no requirements, has nothing to lock: its DAGs get the empty lock.
DEFAULT_LOCKFILE = "requirements.txt"
LOCK_INPUTS = ("requirements.in", "pylock.toml")


def is_dag_file(relpath: str, text: str) -> bool:
    """A ``.py`` file that mentions both ``isolate`` and ``DAG`` (Airflow's safe-mode rule)."""
    return relpath.endswith(".py") and "isolate" in text and "DAG" in text


def _is_dag_source(relpath: str, source: bytes) -> bool:
    """:func:`is_dag_file` of the source's bytes, not decoded: the UTF-8 decoder, even
    replacing invalid bytes, neither drops nor makes an ASCII character, so the words are
    in the text exactly when their bytes are in the source."""
    return relpath.endswith(".py") and b"isolate" in source and b"DAG" in source


def load_folder(
    path: Path, *, settings: Settings | None = None, step: Step | None = None
) -> FolderSnapshot:
    """Snapshot ``path`` (a DAG folder, or one DAG file in its folder) and serialize its DAGs.

    Every DAG file is imported and every DAG validated before anything is refused: one error
    lists the problems of them all. ``step`` wraps each long step (bundling, importing,
    validating).
    """
    settings = settings or Settings()
    step = step or _quiet
    problems = _Problems()
    bundle, found = _load_dags(Path(path), settings, step, problems)
    loaded = []
    with step(f"validating {_count(len(found), 'DAG')}"):
        wanted = {dag.lockfile for dag, _ in found if isinstance(dag.lockfile, str)}
        locks = bundle.read_files(wanted)
        for dag, rel in found:
            try:
                loaded.append(_serialize(dag, rel, bundle, locks, settings))
            except (DagDefinitionError, ValidationError) as exc:
                problems.add(exc)
    problems.raise_any()
    return FolderSnapshot(bundle=bundle, dags=tuple(sorted(loaded, key=lambda d: d.spec.dag_id)))


def declared_requirements(path: Path, *, settings: Settings | None = None) -> list[str]:
    """The union of the ``requirements`` the DAGs at ``path`` declare (for ``isolate lock``)."""
    problems = _Problems()
    _, found = _load_dags(Path(path), settings or Settings(), _quiet, problems)
    problems.raise_any()
    return sorted({req for dag, _ in found for req in dag.requirements})


@contextmanager
def _quiet(_label: str) -> Iterator[None]:
    yield


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class _Problems:
    """The errors of one folder's DAG files and DAGs, raised together once all are checked."""

    def __init__(self) -> None:
        self.errors: list[DagDefinitionError | ValidationError] = []

    def add(self, error: DagDefinitionError | ValidationError) -> None:
        self.errors.append(error)

    def raise_any(self) -> None:
        """One error alone is raised as it is; several become one listing every problem."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            lines: list[str] = []
            for error in self.errors:
                if isinstance(error, ValidationError):
                    prefix = f"{error.subject}: " if error.subject else ""
                    lines += [prefix + problem for problem in error.problems]
                else:
                    lines.append(str(error))
            raise ValidationError(lines)


def _load_dags(
    path: Path, settings: Settings, step: Step, problems: _Problems
) -> tuple[Bundle, list[tuple[sdk.DAG, str]]]:
    """Bundle the folder and import its DAG files from the bundle.

    A DAG file that fails to import is a problem of ``problems``; the other files are still
    imported. Raises when there is no DAG to go on with.
    """
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    only: str | None = None
    folder = path
    if path.is_file():
        if path.suffix != ".py":
            raise UsageError(f"{path}: a DAG file must be a .py file")
        folder, only = path.parent, path.name
    with step(f"bundling {folder}"):
        bundle = make_bundle(
            folder, max_bytes=settings.max_bundle_bytes, max_files=settings.max_bundle_files
        )
        # Every module's source at once: a read of the archive per file would make loading
        # quadratic in the number of files.
        sources = bundle.read_files(rel for rel in bundle.files if rel.endswith(".py"))
        candidates = [only] if only else list(sources)
        dag_files = [rel for rel in candidates if _is_dag_source(rel, sources.get(rel, b""))]
    if not dag_files:
        raise UsageError(
            f"{path}: no DAG files found "
            "(a DAG file is a .py file that mentions 'isolate' and 'DAG')"
        )
    label = f"importing {_count(len(dag_files), 'DAG file')}"
    with step(label), tempfile.TemporaryDirectory(prefix="isolate-load-") as tmp:
        root = Path(tmp) / "bundle"
        bundle.extract(root, select=lambda rel: rel not in sources)
        found = _import_dags(_BundleImporter(root, bundle.files, sources), dag_files, problems)
    if not found:
        problems.raise_any()
        raise UsageError(f"{path}: the DAG files define no DAG")
    return bundle, found


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


def _import_dags(
    importer: _BundleImporter, dag_files: list[str], problems: _Problems
) -> list[tuple[sdk.DAG, str]]:
    """Import each DAG file; one that fails adds its error to ``problems`` and no DAG."""
    found: list[tuple[sdk.DAG, str]] = []
    seen: dict[str, str] = {}
    with _isolated_imports(importer) as taken:
        for rel in dag_files:
            try:
                created = _import_dag_file(importer, rel, taken)
            except DagDefinitionError as exc:
                problems.add(exc)
                continue
            for dag in created:
                if dag.dag_id in seen:
                    problems.add(
                        DagDefinitionError(
                            f"DAG id {dag.dag_id!r} is defined twice: "
                            f"in {seen[dag.dag_id]} and {rel}"
                        )
                    )
                    continue
                seen[dag.dag_id] = rel
                found.append((dag, rel))
    return found


def _import_dag_file(importer: _BundleImporter, rel: str, taken: set[str]) -> list[sdk.DAG]:
    """The DAGs that importing the DAG file ``rel`` creates."""
    name = module_name(rel)
    if name.split(".")[0] in taken:
        raise DagDefinitionError(
            f"{rel}: its module name {name!r} shadows an installed module: rename the file"
        )
    created: list[sdk.DAG] = []
    sdk.collect_into(created)
    try:
        _exec_module(importer, rel, name)
    finally:
        sdk.collect_into(None)
    return created


@contextmanager
def _isolated_imports(importer: _BundleImporter) -> Iterator[set[str]]:
    """Put the bundle first on sys.path; afterwards forget every module the DAG code imported.

    Yields the top-level module names already taken (imported or standard library): a DAG
    file with such a name would shadow them, here and in the task's interpreter.
    """
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    taken = {name.split(".")[0] for name in saved_modules} | set(sys.stdlib_module_names)
    taken.discard("__main__")
    sys.path_hooks.insert(0, importer.hook)
    sys.path.insert(0, importer.root_path)
    try:
        yield taken
    finally:
        sys.path[:] = saved_path
        sys.path_hooks.remove(importer.hook)
        for entry in [p for p in sys.path_importer_cache if importer.owns(p)]:
            del sys.path_importer_cache[entry]
        for name in set(sys.modules) - saved_modules:
            del sys.modules[name]
        sdk._active.clear()


class _BundleImporter:
    """Finds the bundle's Python modules in its bytes, for the bundle's root directory and
    every directory below it on ``sys.path`` or in a package's ``__path__`` (a path hook, as
    ``zipimport`` is). Modules, packages and namespace packages are found as the standard
    file finder would find them on disk; extension modules (which were extracted) by it."""

    def __init__(self, root: Path, files: tuple[str, ...], sources: Mapping[str, bytes]) -> None:
        self.root = root
        self.root_path = str(root)
        self.sources = sources
        self.dirs = {""} | {rel.rpartition("/")[0] for rel in files}
        for rel in list(self.dirs):
            while rel := rel.rpartition("/")[0]:
                self.dirs.add(rel)

    def owns(self, path: object) -> bool:
        return isinstance(path, str) and self._rel(path) is not None

    def _rel(self, path: str) -> str | None:
        """The bundle directory at ``path`` ("" for the root), or None."""
        if path == self.root_path:
            return ""
        prefix = self.root_path + os.sep
        if path.startswith(prefix) and (rel := path[len(prefix) :]) in self.dirs:
            return rel
        return None

    def hook(self, path: str) -> _DirectoryFinder:
        rel = self._rel(path)
        if rel is None:
            raise ImportError("not a directory of the bundle", path=path)
        return _DirectoryFinder(self, rel, path)

    def loader(self, rel: str) -> _SourceLoader:
        return _SourceLoader(os.path.join(self.root_path, rel), self.sources[rel])


class _DirectoryFinder:
    """The path-entry finder of one directory of the bundle."""

    def __init__(self, importer: _BundleImporter, rel: str, path: str) -> None:
        self.importer, self.rel, self.path = importer, rel, path
        self.extensions = importlib.machinery.FileFinder(
            path,
            (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        )

    def find_spec(
        self, fullname: str, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        last = fullname.rpartition(".")[2]
        base = f"{self.rel}/{last}" if self.rel else last
        importer = self.importer
        if f"{base}/__init__.py" in importer.sources:
            return importlib.util.spec_from_loader(
                fullname, importer.loader(f"{base}/__init__.py"), is_package=True
            )
        extension = self.extensions.find_spec(fullname)
        if extension is not None and extension.loader is not None:
            return extension
        if f"{base}.py" in importer.sources:
            return importlib.util.spec_from_loader(fullname, importer.loader(f"{base}.py"))
        if base in importer.dirs:  # a directory without __init__.py: a namespace portion
            spec = importlib.machinery.ModuleSpec(fullname, None)
            spec.submodule_search_locations = [os.path.join(self.path, last)]
            return spec
        return None

    def invalidate_caches(self) -> None:
        self.extensions.invalidate_caches()

    def iter_modules(self, prefix: str = "") -> Iterator[tuple[str, bool]]:
        """For :mod:`pkgutil`: the modules and packages of the directory."""
        start = f"{self.rel}/" if self.rel else ""
        found: dict[str, bool] = {}
        for rel in self.importer.sources:
            if rel.startswith(start):
                name, _, rest = rel[len(start) :].partition("/")
                if rest == "__init__.py" or (not rest and name != "__init__.py"):
                    found[name.removesuffix(".py")] = bool(rest)
        for name in sorted(found):
            if name.isidentifier():
                yield prefix + name, found[name]


class _SourceLoader(importlib.abc.SourceLoader):
    """Loads one module from source held in memory; its ``__file__`` is where the file would
    be in the extracted bundle, whose other files (data) are there."""

    def __init__(self, path: str, source: bytes) -> None:
        self.path, self.source = path, source

    def get_filename(self, fullname: str | None = None) -> str:
        return self.path

    def get_data(self, path: str) -> bytes:
        if path != self.path:
            raise OSError(f"{path}: not a module of the bundle")
        return self.source

    def get_resource_reader(self, fullname: str) -> TraversableResources:
        return _Resources(os.path.dirname(self.path))


class _Resources(TraversableResources):
    """``importlib.resources.files(package)``: the package's directory, with its data files."""

    def __init__(self, path: str) -> None:
        self.path = path

    def files(self) -> Path:
        return Path(self.path)


def _exec_module(importer: _BundleImporter, rel: str, name: str) -> None:
    root = importer.root
    loader = importer.loader(rel)
    spec = importlib.util.spec_from_loader(name, loader, is_package=rel.endswith("/__init__.py"))
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


def _serialize(
    dag: sdk.DAG, rel: str, bundle: Bundle, locks: Mapping[str, bytes], settings: Settings
) -> LoadedDag:
    """The DAG's document, validated; raises one error with every problem found in it."""
    subject = f"dag {dag.dag_id}" if is_valid_id(dag.dag_id) else rel
    problems: list[str] = []
    lockfile = dag.lockfile
    lock = locks.get(lockfile) if isinstance(lockfile, str) else None
    lock_problem: str | None = None
    if lock is None:
        lock, lock_problem = _missing_lock(dag, bundle)
    try:
        lock_text = lock.decode("utf-8")
    except UnicodeDecodeError:
        lock_text, lock_problem = "", f"lockfile {lockfile!r} is not UTF-8"
    if lock_problem is not None:
        problems.append(lock_problem)
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
    doc = json.loads(json.dumps(draft))
    try:
        spec = load_object(doc)
    except ValidationError as exc:
        # A problem of structure (a bad id, a wrong type) stops load_object before the checks
        # of meaning: run those that can run, so that a bad id does not hide a cycle.
        more = [p for p in readable_meaning_problems(doc) if p not in exc.problems]
        raise ValidationError([*problems, *exc.problems, *more], subject=subject) from None
    problems += push_problems(spec)
    text = canonical_json(spec)
    size = len(text.encode("utf-8"))
    if size > settings.max_spec_bytes:
        problems.append(
            f"serialized DAG is {size} bytes, over the cap of "
            f"{settings.max_spec_bytes} (setting max_spec_bytes)"
        )
    if lock_problem is not None and problems == [lock_problem]:
        raise DagDefinitionError(f"DAG {dag.dag_id}: {lock_problem}")  # as it always was
    if problems:
        raise ValidationError(problems, subject=subject)
    return LoadedDag(spec=spec, canonical=text, spec_hash=spec_hash(spec), lock=lock)


def _missing_lock(dag: sdk.DAG, bundle: Bundle) -> tuple[bytes, str | None]:
    """The lock of a DAG whose lockfile is not in the bundle: the empty lock if there is
    nothing to lock (the env is then the node's interpreter alone), else a problem."""
    lockfile = dag.lockfile
    inputs = [name for name in LOCK_INPUTS if name in bundle.files]
    if lockfile != DEFAULT_LOCKFILE:
        why = ""  # a lockfile the DAG names must be there
    elif inputs:
        why = f" but the folder has {inputs[0]}"
    elif dag.requirements:
        why = " but the DAG declares requirements"
    else:
        return b"", None
    return b"", (
        f"lockfile {lockfile!r} is not in the folder{why}: "
        "run `isolate lock` or set DAG(lockfile=...)"
    )
