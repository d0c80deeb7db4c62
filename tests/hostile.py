"""What a hostile tenant A pushes to attack the scheduler, and tenant B's victim DAG.

Shared by tests/test_hostile_tenant.py and bench/bench_hostile.py. A's DAGs, each a way
one tenant could freeze or starve a node before: a catchup backlog of years of daily runs
(up to 1,000 active at once), a callback that sleeps, a 2,500-task chain whose root fails,
an active run holding megabytes of XComs, a result nested 990 deep, a log flood, a template
that asks for 3 GB, and a module that is slow to compile.
"""

from __future__ import annotations

# The DAGs A triggers by hand (its backlog is scheduled).
A_TRIGGERED = ("a.callback", "a.chain", "a.xcoms", "a.forged", "a.flood", "a.template")


def mapping(a_user: str, b_user: str) -> str:
    """The tenant mapping: A capped at 512M per task and 64 processes, B not."""
    return f"""
[[tenant]]
name = "a"
dags = ["a.*"]
pushers = ["root"]
run_as = "{a_user}"
limits = {{ memory = "512M", processes = 64 }}

[[tenant]]
name = "b"
dags = ["b.*"]
pushers = ["root"]
run_as = "{b_user}"
"""


def attacks(nap: float = 20) -> str:
    """A's DAG file; its callback sleeps ``nap`` seconds."""
    return ATTACKS.replace("NAP", repr(nap))


ATTACKS = """
import time
from datetime import datetime
from isolate import DAG, CommandTask, PythonTask

def nap(context):
    time.sleep(NAP)

def boom():
    raise RuntimeError("the root of the chain fails")

def deep():
    value = []
    for _ in range(990):
        value = [value]
    return value

def big():
    return "x" * 900_000

def hold():
    time.sleep(6)

def echo(value):
    return len(value)

with DAG("a.backlog", schedule="@daily", start_date=datetime(2015, 1, 1), catchup=True,
         max_active_runs=1000):
    CommandTask("work", command="sleep 2")

with DAG("a.callback"):
    CommandTask("done", command=["true"], on_success_callback=nap)

with DAG("a.chain"):
    previous = PythonTask("t0000", callable=boom)
    for i in range(1, 2500):
        step = CommandTask(f"t{i:04d}", command=["true"])
        previous >> step
        previous = step

with DAG("a.xcoms"):
    bigs = [PythonTask(f"big{i}", callable=big) for i in range(8)]
    bigs >> PythonTask("hold", callable=hold)

with DAG("a.forged"):
    PythonTask("deep", callable=deep)

with DAG("a.flood"):
    CommandTask("flood", command="head -c 20000000 /dev/zero | tr '\\\\0' x")

with DAG("a.template"):
    PythonTask("bomb", callable=echo, kwargs={"value": "{{ 'x' * 3000000000 }}"})
"""

# A module that is slow to compile (a long literal): its bytecode must be compiled off the
# loop, as A's user, within a time limit.
SLOW_MODULE = "TABLE = [\n" + "(1, 2.5, 'x', None),\n" * 150_000 + "]\n"

VICTIM = """
from isolate import DAG, CommandTask, PythonTask

def middle():
    return "undisturbed"

with DAG("b.victim"):
    CommandTask("one", command="sleep 0.5") >> PythonTask("two", callable=middle) >> (
        CommandTask("three", command="sleep 0.5")
    )
"""
