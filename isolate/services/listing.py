"""Listings that read-only commands print: quick on SQLite, the store's answer elsewhere."""

from __future__ import annotations

from isolate.config import Config
from isolate.services.home import open_store, require_home
from isolate.store import lite
from isolate.store.records import DagSummary


def dag_summaries(config: Config) -> list[DagSummary]:
    """Every DAG with its latest version (``isolate dags list``), ordered by dag_id.

    A SQLite store at head is read without loading SQLAlchemy (:mod:`isolate.store.lite`);
    anything else opens the store, which also says what is wrong with one that cannot be read.
    """
    require_home(config)
    found = lite.list_dags(config.database_url)
    if found is not None:
        return found
    with open_store(config) as store:
        return store.list_dags()
