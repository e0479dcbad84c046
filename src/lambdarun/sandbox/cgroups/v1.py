"""cgroup v1: the memory, pids and freezer hierarchies, one directory in each."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

from ..limits import Limits
from .base import MB, Cgroup, _Node, _read_int, _read_keys, _signal, _write


class CgroupV1(Cgroup):
    """The memory, pids and freezer hierarchies of cgroup v1: one directory in each, of the same name."""

    def __init__(self, nodes: dict[str, _Node], limits: Limits) -> None:
        """`nodes`: controller -> its directory (co-mounted controllers share one)."""
        memory = nodes["memory"]
        super().__init__(memory.path.name)
        self._unique = unique = list({id(node): node for node in nodes.values()}.values())
        try:
            limit = str(limits.memory_mb * MB)
            _write(memory, "memory.limit_in_bytes", limit)
            with contextlib.suppress(OSError):  # no swap accounting: nothing to cap
                _write(memory, "memory.memsw.limit_in_bytes", limit)
            if "pids" in nodes:
                _write(nodes["pids"], "pids.max", str(limits.pids))
            self.unenforced = tuple(
                what
                for controller, what in (("pids", "processes and threads (no pids controller)"),)
                if controller not in nodes
            )
            self._join = tuple(self._keep(node.open("cgroup.procs", write=True)) for node in unique)
            self._procs = self._keep(memory.open("cgroup.procs"))
            self._max_usage = self._keep(memory.open("memory.max_usage_in_bytes", write=True))
            self._stat = self._keep(memory.open("memory.stat"))
            self._oom_control = self._keep(memory.open("memory.oom_control"))
            freezer = nodes.get("freezer")
            self._state = self._keep(freezer.open("freezer.state", write=True)) if freezer else None
        except BaseException:
            self._discard(unique)
            raise

    def _discard(self, unique: list[_Node]) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        for node in unique:
            with contextlib.suppress(OSError):
                node.remove()

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(node.path for node in self._unique)

    def join_fds(self) -> tuple[int, ...]:
        return self._join

    def _procs_fd(self) -> int:
        return self._procs

    def _memory(self) -> tuple[int, int]:
        cache = _read_keys(self._stat, b"total_active_file", b"total_inactive_file")
        return _read_int(self._max_usage), cache

    def reset_peak(self) -> None:
        os.pwrite(self._max_usage, b"0", 0)  # the kernel restarts it from the current usage
        super().reset_peak()

    def _oom_kills(self) -> int:
        return _read_keys(self._oom_control, b"oom_kill")

    def freezer_freeze(self, timeout: float = 2.0) -> bool:
        if self._state is None:
            raise OSError(errno.ENOTSUP, "no freezer hierarchy")
        os.pwrite(self._state, b"FROZEN", 0)
        deadline = time.monotonic() + timeout
        while not os.pread(self._state, 16, 0).startswith(b"FROZEN"):  # FREEZING until every task is in
            if time.monotonic() > deadline:
                return False
            time.sleep(0)
        return True

    def freezer_thaw(self) -> None:
        if self._state is None:
            raise OSError(errno.ENOTSUP, "no freezer hierarchy")
        os.pwrite(self._state, b"THAWED", 0)

    def _kill(self) -> None:
        if self._state is not None:
            # Frozen, nothing forks between reading the list and the signal; the killed die once thawed.
            self.freezer_freeze()
            try:
                _signal(self.pids(), signal.SIGKILL)
            finally:
                self.freezer_thaw()
            return
        for _ in range(100):  # without a freezer, whatever forked meanwhile is killed on the next round
            pids = self.pids()
            if not pids:
                return
            _signal(pids, signal.SIGKILL)
            _signal(pids, signal.SIGCONT)
            time.sleep(0.001)

    def _remove(self) -> None:
        errors = []
        for node in self._unique:
            try:
                node.remove()
            except OSError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
