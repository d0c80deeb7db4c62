"""The north team's report. It needs demolib 1.0, whose summarize() returns a sentence."""

from __future__ import annotations

import os
import pwd
from datetime import timedelta

from isolate import DAG, CommandTask, task


def _user():
    return pwd.getpwuid(os.getuid()).pw_name


# A flaky first try is retried at once: the demo waits for its runs, not for the
# default five-minute retry delay.
@task(retries=1, retry_delay=timedelta(seconds=1))
def extract():
    import demolib

    return {"rows": [3, 1, 4, 1, 5], "library": demolib.VERSION, "user": _user()}


@task
def summarize(data):
    import demolib

    return {"summary": demolib.summarize(data["rows"]), "library": demolib.VERSION, "user": _user()}


with DAG("demo.north", tags=["demo"]):
    summarize(extract()) >> CommandTask("whoami", command=["id", "-un"])
