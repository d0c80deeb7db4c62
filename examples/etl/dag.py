"""A small TaskFlow ETL: extract -> transform -> load, then a templated report command."""

from __future__ import annotations

from datetime import datetime, timedelta

from etl_jobs import summarize

from isolate import DAG, CommandTask, task

with DAG(
    "example.etl",
    description="Extract orders, total them per customer, load the totals.",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    params={"region": "eu"},
    tags=["example", "etl"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:

    @task
    def extract(region: str) -> list[dict[str, object]]:
        return [{"customer": "a", "amount": 3}, {"customer": "b", "amount": 4}]

    @task(retries=3, retry_exponential_backoff=True)
    def load(totals: dict[str, int]) -> int:
        return len(totals)

    report = CommandTask("report", command=["echo", "loaded for {{ ds }}"])

    load(summarize(extract("{{ params.region }}"))) >> report
