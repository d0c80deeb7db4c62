"""Compile an env's bytecode at build time, reproducibly, with the env's own interpreter.

Tasks cannot write into the env, so without ``.pyc`` files every task would recompile its
imports in memory on every start. The cache compiles rather than uv or pip: their ``.pyc``
embed the temporary build path, so identical sources would give different bytecode in every
env and neither trees.py nor objects.py could share it. Here the embedded path is relative to
the env (importlib replaces it with the real path when it loads the ``.pyc``), and
unchecked-hash ``.pyc`` don't depend on source mtimes: the env never changes, and verification
covers the sources. ``force=True`` redoes ``.pyc`` a seeder copied in.

compileall does not descend into symlinked directories, so the package trees an env shares
(already compiled when they were first stored) are skipped; only the env's own files and the
trees new to the cache get compiled.
"""

from __future__ import annotations

import os
from pathlib import Path

from envcache import process

# Started with -I -S so that no .pth file of an installed wheel runs as the cache owner. Files
# that don't compile (Python 2 leftovers in some wheels) are skipped, as pip and uv do.
_COMPILE = """
import compileall, py_compile, sys
compileall.compile_dir(
    sys.argv[1] + "/lib", quiet=2, stripdir=sys.argv[1], workers=int(sys.argv[2]), force=True,
    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
)
"""


def compile_env(env_dir: Path, *, parallel: bool) -> None:
    """Compile every ``.py`` under ``env_dir/lib`` not behind a symlink, with the env's python.

    ``parallel`` uses a process per CPU: worth it for many files, slower for a handful.
    """
    process.run(
        [
            os.fspath(env_dir / "bin" / "python"),
            "-I",
            "-S",
            "-c",
            _COMPILE,
            os.fspath(env_dir),
            "0" if parallel else "1",
        ],
        env={"PATH": os.defpath},
        what="compiling bytecode",
        hint="check that the interpreter runs",
    )
