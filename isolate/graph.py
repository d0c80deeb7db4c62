"""Pictures of DAGs: a version's task graph as Graphviz DOT, and a grid of runs by task.

Pure: specs, run records and states in, text or plain records out. Rendering DOT to SVG
(running Graphviz) and printing belong to the CLI.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from isolate.model import DagSpec
from isolate.states import TaskState
from isolate.store.records import RunRecord


def topological_order(spec: DagSpec) -> list[str]:
    """The version's task ids, every task after its upstream tasks; ties by task id, so the
    order is the same on every call (validation has already refused cycles)."""
    upstream = {t.task_id: set(t.upstream) & set(spec.task_ids) for t in spec.tasks}
    downstream: dict[str, list[str]] = {task_id: [] for task_id in upstream}
    for task_id, ups in upstream.items():
        for up in ups:
            downstream[up].append(task_id)
    waiting = {task_id: len(ups) for task_id, ups in upstream.items()}
    ready = [task_id for task_id, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        task_id = heapq.heappop(ready)
        order.append(task_id)
        for down in downstream[task_id]:
            waiting[down] -= 1
            if waiting[down] == 0:
                heapq.heappush(ready, down)
    # A cycle cannot pass validation; should one get here, its tasks still appear, at the end.
    order.extend(sorted(set(upstream) - set(order)))
    return order


def dot_string(text: str) -> str:
    """``text`` as a quoted DOT string that Graphviz shows literally.

    Inside quotes DOT escapes ``"`` as ``\\"`` and keeps ``\\\\`` as a pair (so a string may
    end in a backslash); labels then read ``\\\\`` as one backslash, and would read ``\\N``,
    ``\\l`` and HTML entities such as ``&amp;`` (so ``&`` is written ``&amp;``). Control
    characters are shown as "?", as on a terminal. Task ids cannot hold any of these
    (validation restricts them to ``A-Za-z0-9_.-``): this is defence in depth.
    """
    safe = "".join(ch if ch.isprintable() else "?" for ch in text)
    safe = safe.replace("&", "&amp;").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{safe}"'


def _label(lines: Iterable[str]) -> str:
    # Lines escaped one by one, joined by "\n": Graphviz's centred line break.
    return '"' + "\\n".join(dot_string(line)[1:-1] for line in lines) + '"'


def to_dot(spec: DagSpec, version: int | None = None) -> str:
    """The version's task graph in Graphviz DOT: one node per task (id, kind, and its
    retries and trigger rule when they are not the defaults), one edge per upstream
    dependency, drawn left to right."""
    title = spec.dag_id if version is None else f"{spec.dag_id} v{version}"
    lines = [
        f"digraph {dot_string(title)} {{",
        f"  graph [rankdir=LR, labelloc=t, label={dot_string(title)}];",
        "  node [shape=box, style=rounded, fontname=Helvetica];",
        "  edge [fontname=Helvetica];",
    ]
    for task_id in topological_order(spec):
        task = spec.task(task_id)
        detail = [task.kind]
        retries = task.effective_retry(spec.defaults).retries
        if retries:
            detail.append(f"retries={retries}")
        if task.trigger_rule != "all_success":
            detail.append(task.trigger_rule)
        label = _label([task_id, f"({', '.join(detail)})"])
        lines.append(f"  {dot_string(task_id)} [label={label}];")
    for up, down in sorted(spec.edges()):
        lines.append(f"  {dot_string(up)} -> {dot_string(down)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class GridRow:
    """One task across the grid's runs: its state in each run, ``None`` where the run's
    version has no such task."""

    task_id: str
    in_latest: bool
    cells: tuple[TaskState | None, ...]


@dataclass(frozen=True)
class RunGrid:
    """Runs (columns, oldest first) by tasks (rows)."""

    dag_id: str
    runs: tuple[RunRecord, ...]
    rows: tuple[GridRow, ...]


def run_grid(
    latest: DagSpec,
    runs: Sequence[RunRecord],
    specs: Mapping[int, DagSpec],
    states: Mapping[str, Mapping[str, TaskState]],
) -> RunGrid:
    """The grid of ``runs`` (in column order) by task.

    ``specs`` holds the spec of every version the runs are pinned to, ``states`` each run's
    task states by run id. Rows: the latest version's tasks in topological order, then tasks
    only older versions have (newest version first), so a task removed since still shows
    for the runs that had it. A task of a run's version with no task instance is ``none``.
    """
    order = topological_order(latest)
    seen = set(order)
    for version in sorted({run.version for run in runs}, reverse=True):
        if version in specs:
            for task_id in topological_order(specs[version]):
                if task_id not in seen:
                    seen.add(task_id)
                    order.append(task_id)
    # Task instances the run's version does not list (should not exist): shown, not dropped.
    strays = {task_id for run in runs for task_id in states.get(run.run_id, {})} - seen
    order.extend(sorted(strays))
    latest_ids = set(latest.task_ids)
    rows = []
    for task_id in order:
        cells: list[TaskState | None] = []
        for run in runs:
            found = states.get(run.run_id, {}).get(task_id)
            spec = specs.get(run.version)
            if found is None and spec is not None and task_id in spec.task_ids:
                found = TaskState.NONE
            cells.append(found)
        rows.append(GridRow(task_id, task_id in latest_ids, tuple(cells)))
    return RunGrid(latest.dag_id, tuple(runs), tuple(rows))
