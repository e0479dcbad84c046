"""`Max Memory Used`: the peak resident memory of an environment's process trees (SPEC 4.7)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from .processes import Process


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _peak_kb(pid: int) -> int:
    """VmHWM of one process, skipping bwrap's own supervisor processes."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        if status.startswith("Name:\tbwrap"):
            return 0
        start = status.find("VmHWM:")
        if start >= 0:
            return int(status[start + 6 : status.index("kB", start)].strip())
    return 0


def max_used_mb(processes: Iterable[Process]) -> int:
    """Live processes are read from /proc (VmHWM of each in the tree); one that has exited counts with the peak
    its exit reported, so a crash still shows what the runtime used."""
    processes = list(processes)
    total_kb = sum(p.max_rss_kb for p in processes if not p.running)
    stack = [p.pid for p in processes if p.running]
    while stack:
        pid = stack.pop()
        total_kb += _peak_kb(pid)
        stack.extend(_children(pid))
    return max(1, round(total_kb / 1024))
