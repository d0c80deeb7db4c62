"""The package layering of docs/architecture.md, and no import cycles between modules."""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

from isolate.validate import find_cycle

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("isolate", "envcache", "localexec", "cli")
SERVICES = "isolate.services"
# What each layer may import, per docs/architecture.md's arrows. The model is isolate
# without its services.
ALLOWED = {
    "envcache": {"envcache"},
    "isolate": {"isolate"},
    SERVICES: {SERVICES, "isolate", "envcache"},
    "localexec": {"localexec", SERVICES, "isolate", "envcache"},
    "cli": {"cli", "localexec", SERVICES, "isolate", "envcache"},
}


def _layer(module: str) -> str:
    if module == SERVICES or module.startswith(SERVICES + "."):
        return SERVICES
    return module.split(".")[0]


SDK_MODULES = {"isolate", "isolate.sdk", "isolate.errors"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules imported by a file; with top_level_only, skip function bodies and TYPE_CHECKING."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = (
        _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    )

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level_only and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if (
                top_level_only
                and isinstance(child, ast.If)
                and "TYPE_CHECKING" in ast.unparse(child.test)
            ):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, base]).strip(".")
                # "from pkg import submodule" imports the submodule (the package is its parent).
                subs = {f"{base}.{alias.name}" for alias in child.names}
                known = subs & set(_sources())
                found.update(known or {base})
            visit(child)

    visit(tree)
    return found


@functools.cache
def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }


@pytest.mark.parametrize("layer", ALLOWED)
def test_layers_import_only_what_the_design_allows(layer: str) -> None:
    bad = []
    for name, path in _sources().items():
        if _layer(name) != layer:
            continue
        for imported in _imports(path, top_level_only=False):
            if imported.split(".")[0] in PACKAGES and _layer(imported) not in ALLOWED[layer]:
                bad.append(f"{name} imports {imported}")
    assert bad == []


def test_services_are_a_layer_of_their_own() -> None:
    assert _layer("isolate.services.push") == SERVICES
    assert _layer(SERVICES) == SERVICES
    assert _layer("isolate.model") == _layer("isolate.servicesx") == "isolate"
    assert SERVICES not in ALLOWED["isolate"] and "envcache" not in ALLOWED["isolate"]


def test_no_import_cycles_between_modules() -> None:
    sources = _sources()
    graph = {
        name: sorted(
            m
            for m in _imports(path, top_level_only=True)
            if m in sources and m != name and not name.startswith(m + ".")
        )
        for name, path in sources.items()
    }
    assert find_cycle(graph) is None


def test_the_sdk_modules_import_only_the_standard_library() -> None:
    sources = _sources()
    for name in SDK_MODULES:
        for imported in _imports(sources[name], top_level_only=False):
            top = imported.split(".")[0]
            assert (
                imported in SDK_MODULES
                or imported.startswith(("isolate.sdk.", "isolate.errors."))
                or (top != "isolate" and top in sys.stdlib_module_names)
                or top == "__future__"
            ), f"{name} imports {imported}"


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) is not None
    assert find_cycle({"a": ["b"], "b": []}) is None
