"""Build small, valid, byte-reproducible wheels without network or build backends."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

# A fixed timestamp keeps wheels (and so the lockfile hashes) identical from run to run.
_DATE_TIME = (2020, 1, 1, 0, 0, 0)


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_wheel(
    dest: Path,
    name: str,
    version: str,
    *,
    files: dict[str, str] | None = None,
    requires: tuple[str, ...] = (),
    dirs: tuple[str, ...] = (),
) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``dest`` and return its path.

    Without ``files``, the wheel holds one module, ``<name>/__init__.py``, defining
    ``VERSION = "<version>"``. ``dirs`` are directory entries (``name/``), e.g. the empty
    ``*.libs`` of auditwheel-repaired wheels.
    """
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {req}\n" for req in requires)
    contents = dict(files or {f"{module}/__init__.py": f'VERSION = "{version}"\n'})
    contents[f"{dist_info}/METADATA"] = metadata
    contents[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: isolate-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [
        f"{path},{_record_hash(text.encode())},{len(text.encode())}"
        for path, text in contents.items()
    ]
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"

    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for directory in dirs:
            entry = zipfile.ZipInfo(directory.rstrip("/") + "/", _DATE_TIME)
            entry.external_attr = (0o40755 << 16) | 0x10
            archive.writestr(entry, b"")
        for arcname, text in contents.items():
            info = zipfile.ZipInfo(arcname, _DATE_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text)
    return path


def sha256_of(path: Path) -> str:
    """The ``sha256:<hex>`` form a lockfile's ``--hash`` option takes."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
