"""What every cgroup of ours has in common, whichever version: the locked directory, the limits' readings,
freezing by signals, killing."""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import os
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PREFIX = "lambdarun-"
MB = 1024 * 1024


class CgroupUnavailable(Exception):
    """No cgroup can be made here; the message says why (for the fallback's one line)."""


@dataclass
class _Node:
    """One cgroup directory, locked by us while its fd is open."""

    path: Path
    fd: int

    def open(self, name: str, write: bool = False) -> int:
        return os.open(self.path / name, (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC)

    def remove(self, timeout: float = 2.0) -> None:
        """Remove the directory (it must be empty of processes; a dying one takes a moment) and drop the lock."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    os.rmdir(self.path)
                    return
                except FileNotFoundError:
                    return
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)
        finally:
            os.close(self.fd)


def _lock(path: Path) -> _Node | None:
    """Lock an existing cgroup directory; None when someone holds it or it went away meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not removed and made again under the same name
            return _Node(path, fd)
    except OSError:
        pass
    os.close(fd)
    return None


def _make(parent: Path, name: str | None) -> _Node:
    for _ in range(20):
        path = parent / (name or f"{PREFIX}{uuid.uuid4().hex[:12]}")
        if not path.name.startswith(PREFIX):
            raise ValueError(f"a cgroup name must start with {PREFIX!r}: {path.name}")
        try:
            path.mkdir()
        except FileExistsError:
            if name is not None:
                raise
            continue
        except OSError as exc:
            raise CgroupUnavailable(f"cannot create a cgroup under {parent}: {exc.strerror}") from None
        node = _lock(path)  # a sweep may have taken it between mkdir and here: then make another
        if node is not None:
            return node
        name = None
    raise CgroupUnavailable(f"cannot create a cgroup under {parent}")


def _make_v1(dirs: dict[str, Path], name: str | None) -> dict[str, _Node]:
    """One directory per hierarchy, all of the same name; controller -> its node."""
    made: dict[Path, _Node] = {}
    try:
        for parent in dirs.values():
            if parent not in made:
                made[parent] = node = _make(parent, name)
                name = node.path.name
    except BaseException:
        for node in made.values():
            with contextlib.suppress(OSError):
                node.remove()
        raise
    return {controller: made[parent] for controller, parent in dirs.items()}


class Cgroup(abc.ABC):
    """What both versions offer; see the module's note."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.unenforced: tuple[str, ...] = ()  # what this machine's cgroups cannot do (e.g. no pids controller)
        self._fds: list[int] = []
        self._high = 0  # bytes: Max Memory Used is a high-water mark over the environment's life (see peak_mb)
        self._ooms = 0
        self._signals = SignalFreezer(self)

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    @property
    @abc.abstractmethod
    def paths(self) -> tuple[Path, ...]:
        """The cgroup's directories, one per hierarchy."""

    @abc.abstractmethod
    def join_fds(self) -> tuple[int, ...]:
        """Writable fds of `cgroup.procs`, one per hierarchy; a process joins by writing "0" to each (join())."""

    def pids(self) -> list[int]:
        """The processes in the cgroup, numbered as in lambdarun's PID namespace."""
        return [int(p) for p in os.pread(self._procs_fd(), 1 << 20, 0).split()]

    def peak_mb(self) -> int:
        """Max Memory Used, in MB: the cgroup's peak less the file page cache charged to it now.

        The kernel's peak counts page cache, which is reclaimable: a function that wrote 400 MB to /tmp at 128 MB
        peaks at 127 MB, nearly all of it cache. Cache is not the function's memory (and /tmp does not count
        against memory on Lambda), so what is cached now (active and inactive file pages; not shmem, which cannot
        be reclaimed without swap) is taken off. That is exact when the cache at the peak equals the cache now;
        it reads high when cache was dropped since the peak (a big file written, then deleted), low when cache grew
        since it (a big allocation freed, then a big write). As on Lambda, the value never goes down over an
        environment's life (a high-water mark, per AWS support), which also keeps each invoke's own peak once
        read: read it after Init and at each report.
        """
        peak, cache = self._memory()
        self._high = max(self._high, peak - cache)
        return max(1, round(self._high / MB))

    def reset_peak(self) -> None:
        """Start a fresh high-water mark, for a fresh environment in the same cgroup (after a reset)."""
        self._high = 0

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of the cgroup since the last call."""
        count = self._oom_kills()
        killed, self._ooms = count > self._ooms, count
        return killed

    def freeze(self) -> None:
        """Stop every process of the cgroup, children in new sessions too (signals: see SignalFreezer)."""
        self._signals.freeze()

    def thaw(self) -> None:
        self._signals.thaw()

    @abc.abstractmethod
    def freezer_freeze(self, timeout: float = 2.0) -> bool:
        """Freeze with the cgroup freezer and wait until every task is frozen; False when that took too long."""

    @abc.abstractmethod
    def freezer_thaw(self) -> None: ...

    def kill_all(self, timeout: float = 2.0) -> None:
        """SIGKILL every process of the cgroup and wait until they are gone (reaping is their parents' job)."""
        self._kill()
        deadline = time.monotonic() + timeout
        # Zombies stay listed until their parent reaps them, which may be the caller itself.
        while not all(_zombie(pid) for pid in self.pids()) and time.monotonic() < deadline:
            time.sleep(0.001)

    def close(self) -> None:
        """Kill what is left, remove the cgroup and release it. Raises OSError when a process would not die."""
        if not self._fds:
            return
        try:
            self.kill_all()
        finally:
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
            self._remove()

    @abc.abstractmethod
    def _procs_fd(self) -> int: ...

    @abc.abstractmethod
    def _memory(self) -> tuple[int, int]:
        """(peak bytes since the last reset, file-backed page cache bytes charged now)"""

    @abc.abstractmethod
    def _oom_kills(self) -> int: ...

    @abc.abstractmethod
    def _kill(self) -> None: ...

    @abc.abstractmethod
    def _remove(self) -> None: ...


class SignalFreezer:
    """SIGSTOP/SIGCONT to each process listed in the cgroup: cheaper than the cgroup freezer on the warm path.

    bench/limits_cost.py, cgroup v1 on this machine (2 cores, Linux 6.18), a thaw and a freeze: 14-20 us by
    signals against 140-160 us by `freezer.state` for one process (8x), 55-90 us against 150-160 us for five
    (2-3x); the freezer's thaw alone costs ~75 us whatever the count. Signals cost a read of `cgroup.procs`
    (kept fd) and a kill(2) per process; a process forked meanwhile is caught by reading the list again. What
    they give up: a process can see SIGCONT (a handler, a parent's waitpid(WCONTINUED)), which the freezer hides.
    """

    def __init__(self, cgroup: Cgroup) -> None:
        self._cgroup = cgroup

    def freeze(self) -> None:
        stopped: set[int] = set()
        while True:  # a process forked by one not yet stopped shows up on the next read
            pids = set(self._cgroup.pids()) - stopped
            if not pids:
                return
            _signal(pids, signal.SIGSTOP)
            stopped |= pids

    def thaw(self) -> None:
        _signal(self._cgroup.pids(), signal.SIGCONT)


def _signal(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def _read_keys(fd: int, *keys: bytes) -> int:
    """The sum of the values of `keys` in a flat-keyed cgroup file (`memory.stat`, `memory.events`, ...)."""
    total = 0
    for line in os.pread(fd, 1 << 16, 0).splitlines():
        key, _, value = line.partition(b" ")
        if key in keys:
            total += int(value)
    return total


def _read_int(fd: int) -> int:
    return int(os.pread(fd, 64, 0))


def _write(node: _Node, name: str, value: str) -> None:
    fd = node.open(name, write=True)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
