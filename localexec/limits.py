"""Resource limits of a task process (``setrlimit``), planned purely, applied in the child.

Two steps, both after the privilege drop (lowering a limit needs no privilege):

- before the templates are rendered (author input, run in the forked copy of the
  supervisor), :func:`apply_render_limits`: the CPU seconds as planned, and an address space
  of at most ``memory`` bytes more than the copy already maps (the supervisor's own mappings
  may be larger than the task's whole limit: the task's ``RLIMIT_AS`` would fail any
  allocation at all). A template that allocates more fails its attempt with ``MemoryError``,
  one that computes too long gets ``SIGXCPU``, with or without a cgroup;
- last before exec, :func:`apply_limits`: every planned limit, the address space lowered to
  ``memory`` (exec starts the task's new address space under it).
"""

from __future__ import annotations

import os
import resource

from isolate.model import Limits

# CPU: the soft limit sends SIGXCPU (a readable "CPU time limit reached"); the hard limit,
# this much later, SIGKILL for a process that ignores SIGXCPU.
CPU_HARD_MARGIN = 2


def rlimit_plan(limits: Limits) -> list[tuple[int, int, int]]:
    """``(resource, soft, hard)`` for each limit that is set."""
    plan: list[tuple[int, int, int]] = []
    if limits.memory is not None:
        plan.append((resource.RLIMIT_AS, limits.memory, limits.memory))
    if limits.processes is not None:
        # Counted per real uid by the kernel, and root is exempt: meaningful once tasks run as
        # their own mapped user (issue 5), a per-user ceiling until then.
        plan.append((resource.RLIMIT_NPROC, limits.processes, limits.processes))
    if limits.cpu_time is not None:
        plan.append((resource.RLIMIT_CPU, limits.cpu_time, limits.cpu_time + CPU_HARD_MARGIN))
    if limits.open_files is not None:
        plan.append((resource.RLIMIT_NOFILE, limits.open_files, limits.open_files))
    return plan


def apply_limits(limits: Limits) -> None:
    """Set the planned limits, never above the current hard limit (that would need privilege)."""
    _apply(rlimit_plan(limits))


def _apply(plan: list[tuple[int, int, int]]) -> None:
    for which, soft, hard in plan:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))


def apply_render_limits(limits: Limits) -> None:
    """The CPU and memory limits templates are rendered under (see the module docstring);
    :func:`apply_limits` lowers them to the task's own before exec."""
    plan = [item for item in rlimit_plan(limits) if item[0] == resource.RLIMIT_CPU]
    mapped = _mapped_bytes()
    if limits.memory is not None and mapped is not None:
        budget = mapped + limits.memory
        plan.append((resource.RLIMIT_AS, budget, budget))
    _apply(plan)


def _mapped_bytes() -> int | None:
    """This process's address space in bytes (``VmSize``), None where ``/proc`` is missing."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
