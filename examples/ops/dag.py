"""Nightly housekeeping: shell steps with templated fields, a flaky step retried, callbacks.

Every try runs in a fresh work directory of its own, so each step keeps its files there.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ops_callbacks import alert, note_retry, note_success

from isolate import DAG, CommandTask, task

with DAG(
    "example.ops",
    description="Stage, fetch (retried while the upstream is busy), count, clean up.",
    schedule="0 3 * * *",
    start_date=datetime(2024, 1, 1),
    params={"keep_days": 7},
    tags=["example", "ops"],
    default_args={
        "retries": 1,
        "retry_delay": timedelta(seconds=0),
        "on_failure_callback": alert,
    },
) as dag:
    stage = CommandTask(
        "stage",
        command="mkdir -p staging && echo {{ ds }} > staging/{{ ds_nodash }}.stamp && ls staging",
    )
    # The upstream answers only from the second try on: the retry policy carries it.
    fetch = CommandTask(
        "fetch",
        command=(
            'if [ "$ISOLATE_CTX_TRY_NUMBER" -lt 2 ]; then '
            'echo "upstream busy (try $ISOLATE_CTX_TRY_NUMBER)" >&2; exit 75; fi; '
            "echo fetched 42 rows"
        ),
        retries=2,
        on_retry_callback=note_retry,
    )

    @task(on_success_callback=note_success)
    def count(keep_days: str, run_id: str) -> dict[str, object]:
        return {"keep_days": int(keep_days), "run": run_id}

    cleanup = CommandTask(
        "cleanup",
        command=["echo", "removing staged files older than {{ params.keep_days }} days"],
        trigger_rule="all_done",
    )

    stage >> fetch >> count("{{ params.keep_days }}") >> cleanup
