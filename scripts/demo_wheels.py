"""Write the demo's wheelhouse (cli/demo_files/wheelhouse): two versions of one small library
whose APIs differ, built byte-reproducibly without network or build backend.

    python scripts/demo_wheels.py

tests/test_demo.py checks that the committed wheels are exactly what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.envcache.wheels import make_wheel  # noqa: E402

WHEELHOUSE = ROOT / "cli" / "demo_files" / "wheelhouse"
SOURCES = {
    "1.0": '''"""demolib 1: a summary is a sentence."""

VERSION = "1.0"


def summarize(rows):
    return f"{len(rows)} rows, total {sum(rows)}"
''',
    "2.0": '''"""demolib 2: a summary is a mapping (an incompatible change)."""

VERSION = "2.0"


def summarize(rows):
    return {"rows": len(rows), "total": sum(rows), "max": max(rows)}
''',
}


def build(dest: Path = WHEELHOUSE) -> list[Path]:
    return [
        make_wheel(dest, "demolib", version, files={"demolib/__init__.py": source})
        for version, source in SOURCES.items()
    ]


if __name__ == "__main__":
    for wheel in build():
        print(wheel.relative_to(ROOT))
