"""cgroup v2: one directory in the unified hierarchy, under a subtree delegated to us."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from ..limits import Limits
from .base import MB, Cgroup, _Node, _read_int, _read_keys, _signal, _write


class CgroupV2(Cgroup):
    """A cgroup v2 directory: memory.max, pids.max, cgroup.freeze, cgroup.kill."""

    def __init__(self, node: _Node, limits: Limits) -> None:
        super().__init__(node.path.name)
        self._node = node
        try:
            _write(node, "memory.max", str(limits.memory_mb * MB))
            with contextlib.suppress(OSError):
                _write(node, "memory.swap.max", "0")  # Lambda has no swap
            _write(node, "pids.max", str(limits.pids))
            self._join = (self._keep(node.open("cgroup.procs", write=True)),)
            self._procs = self._keep(node.open("cgroup.procs"))
            self._stat = self._keep(node.open("memory.stat"))
            self._events = self._keep(node.open("memory.events"))
            self._freeze = self._keep(node.open("cgroup.freeze", write=True))
            self._cgroup_events = self._keep(node.open("cgroup.events"))
            # memory.peak (5.19+) is reset for the file that writes to it (6.12+); without it, usage now stands in.
            self._peak, self._resettable = self._open_peak()
        except BaseException:
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
            with contextlib.suppress(OSError):
                node.remove()
            raise

    def _open_peak(self) -> tuple[int, bool]:
        with contextlib.suppress(OSError):
            return self._keep(self._node.open("memory.peak", write=True)), True
        with contextlib.suppress(OSError):
            return self._keep(self._node.open("memory.peak")), False
        return self._keep(self._node.open("memory.current")), False

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self._node.path,)

    def join_fds(self) -> tuple[int, ...]:
        return self._join

    def _procs_fd(self) -> int:
        return self._procs

    def _memory(self) -> tuple[int, int]:
        return _read_int(self._peak), _read_keys(self._stat, b"active_file", b"inactive_file")

    def reset_peak(self) -> None:
        if self._resettable:
            with contextlib.suppress(OSError):
                os.pwrite(self._peak, b"reset", 0)
        super().reset_peak()

    def _oom_kills(self) -> int:
        return _read_keys(self._events, b"oom_kill")

    def freezer_freeze(self, timeout: float = 2.0) -> bool:
        os.pwrite(self._freeze, b"1", 0)
        deadline = time.monotonic() + timeout
        while _read_keys(self._cgroup_events, b"frozen") != 1:
            if time.monotonic() > deadline:
                return False
            time.sleep(0)
        return True

    def freezer_thaw(self) -> None:
        os.pwrite(self._freeze, b"0", 0)

    def _kill(self) -> None:
        try:
            _write(self._node, "cgroup.kill", "1")  # 5.14+
        except OSError:
            self.freezer_freeze()
            try:
                _signal(self.pids(), signal.SIGKILL)
            finally:
                self.freezer_thaw()

    def _remove(self) -> None:
        self._node.remove()


# -- leftovers of lambdarun processes killed without a chance to close
