"""Reading DAG versions back from the store as validated specs (for show, history and diff)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from isolate.diff import SpecDiff, diff_specs
from isolate.format import load_document
from isolate.model import DagSpec
from isolate.store import Store, VersionRecord


@dataclass(frozen=True)
class StoredVersion:
    record: VersionRecord
    spec: DagSpec


def stored_version(store: Store, dag_id: str, version: int | None = None) -> StoredVersion:
    """A version and its parsed spec. Older formats are upgraded on the way."""
    record = store.get_version(dag_id, version)
    # The document passed the size cap when it was pushed; a lowered cap must not hide it.
    spec = load_document(record.spec_json, max_bytes=sys.maxsize)
    return StoredVersion(record=record, spec=spec)


def diff_versions(store: Store, dag_id: str, old: int, new: int) -> SpecDiff:
    return diff_specs(
        stored_version(store, dag_id, old).spec, stored_version(store, dag_id, new).spec
    )
