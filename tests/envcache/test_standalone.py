"""envcache is usable on its own: importing all of it loads none of the other packages."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "backends",
    "bytecode",
    "cache",
    "envkey",
    "errors",
    "interpreter",
    "lockfile",
    "manifest",
    "process",
    "trees",
    "uselock",
    "uv",
]


def test_importing_envcache_loads_no_other_package_of_the_project() -> None:
    code = (
        f"import sys\nimport {', '.join(f'envcache.{m}' for m in MODULES)}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'isolate', 'localexec', 'cli'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
