"""Reading DAG versions back from the store: records, and validated specs (show, history, diff)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
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
    return StoredVersion(record=record, spec=spec_of(record))


def spec_of(record: VersionRecord) -> DagSpec:
    """The version's spec, validated (older formats upgraded)."""
    # The document passed the size cap when it was pushed; a lowered cap must not hide it.
    return load_document(record.spec_json, max_bytes=sys.maxsize)


def diff_versions(store: Store, dag_id: str, old: int, new: int) -> SpecDiff:
    return diff_specs(
        stored_version(store, dag_id, old).spec, stored_version(store, dag_id, new).spec
    )


def stored_records(store: Store, *, newest: int | None = None) -> Iterator[VersionRecord]:
    """Every DAG's versions, by dag_id and newest first; only the ``newest`` of each."""
    for summary in store.list_dags():
        versions = store.list_versions(summary.dag_id)
        yield from versions[::-1] if newest is None else versions[: -newest - 1 : -1]
