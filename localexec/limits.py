"""Resource limits of a task process (``setrlimit``), planned purely, applied in the child.

Limits are applied last before exec, after the privilege drop: lowering a limit needs no
privilege, and ``RLIMIT_AS`` must not constrain the forked copy of the supervisor's address
space while the child still runs supervisor code (rendering templates).
"""

from __future__ import annotations

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
    for which, soft, hard in rlimit_plan(limits):
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))
