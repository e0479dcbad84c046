"""`Max Memory Used`: the peak resident memory of an environment's process trees (SPEC 4.7).

Read on every invoke, so it keeps a descriptor open per /proc file and reads it with `pread`: opening /proc files
by name cost more than the rest of the platform's work on a warm invoke.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from .processes import Process


class MemoryMeter:
    """Sums VmHWM over every process of the environment (bwrap's own supervisors excepted)."""

    def __init__(self) -> None:
        self._status: dict[int, int | None] = {}  # pid -> fd of /proc/pid/status, None when not read any more
        self._children: dict[int, int] = {}  # pid -> fd of /proc/pid/task/pid/children
        self._supervisors: dict[int, list[int] | None] = {}  # bwrap pid -> its children, once read: they never change

    def max_used_mb(self, processes: Iterable[Process]) -> int:
        """Live processes are read from /proc; one that has exited counts with the peak its exit reported, so a
        crash still shows what the runtime used."""
        processes = list(processes)
        total_kb = sum(p.max_rss_kb for p in processes if not p.running)
        stack = [p.pid for p in processes if p.running]
        while stack:
            pid = stack.pop()
            total_kb += self._peak_kb(pid)
            stack.extend(self._child_pids(pid))
        return max(1, round(total_kb / 1024))

    def _peak_kb(self, pid: int) -> int:
        if pid not in self._status:
            self._status[pid] = _open(f"/proc/{pid}/status")
        data = self._read(self._status, pid)
        if data is None:
            return 0
        if data.startswith(b"Name:\tbwrap"):  # bwrap's own processes are not the function's memory
            fd = self._status[pid]
            if fd is not None:
                os.close(fd)
            self._status[pid] = None
            self._supervisors[pid] = None
            return 0
        start = data.find(b"VmHWM:")
        if start < 0:
            return 0
        with contextlib.suppress(ValueError):
            return int(data[start + 6 : data.index(b"kB", start)])
        return 0

    def _child_pids(self, pid: int) -> list[int]:
        known = self._supervisors.get(pid)
        if known is not None:
            return known
        if pid not in self._children:
            fd = _open(f"/proc/{pid}/task/{pid}/children")
            if fd is None:
                return []
            self._children[pid] = fd
        data = self._read(self._children, pid)  # type: ignore[arg-type]
        children = [int(c) for c in data.split()] if data else []
        if children and pid in self._supervisors:
            self._supervisors[pid] = children
        return children

    @staticmethod
    def _read(fds: dict[int, int | None], pid: int) -> bytes | None:
        fd = fds.get(pid)
        if fd is None:
            return None
        try:
            return os.pread(fd, 8192, 0)
        except OSError:  # the process is gone
            os.close(fd)
            del fds[pid]
            return None

    def close(self) -> None:
        for fd in [*self._status.values(), *self._children.values()]:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._status.clear()
        self._children.clear()
        self._supervisors.clear()


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
