"""Helpers of the example ETL, imported by the DAG file and by its tasks."""

from __future__ import annotations

from isolate import task


@task
def summarize(rows: list[dict[str, object]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in rows:
        customer = str(row["customer"])
        totals[customer] = totals.get(customer, 0) + int(str(row["amount"]))
    return totals
