"""One cgroup per environment: its memory size, its 1,024 processes and threads, its freezing (SPEC 5.2, 4.5).

cgroup v2 when the unified hierarchy has the memory and pids controllers, else the v1 memory, pids and freezer
hierarchies (this machine's kind). An environment's cgroup is created under lambdarun's own cgroup (v1) or under
the nearest ancestor that delegates memory and pids to us (v2), so it stays inside whatever accounts for
lambdarun itself. It is named `lambdarun-…` and owned through an `flock` on its directory, held while the
environment lives: `sweep()` removes the cgroups whose owner died without `close()` (SIGKILL), and never a live
one, whatever PID namespace its owner is in.

A sandboxed child joins before it execs: it writes "0" to each of `join_fds()` (`join()`), one fd per hierarchy.
The fds are opened by lambdarun, and the kernel checks the opener's credentials, so the child needs no privilege;
it must not keep them across exec.
"""

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

from .limits import Limits

PREFIX = "lambdarun-"
MB = 1024 * 1024
_V1_CONTROLLERS = ("memory", "pids", "freezer")


class CgroupUnavailable(Exception):
    """No cgroup can be made here; the message says why (for the fallback's one line)."""


def join(fds: Iterable[int]) -> None:
    """Move the calling process into the cgroup: call it in the child between fork and exec."""
    for fd in fds:
        os.write(fd, b"0")


# -- the machine's cgroup layout


@dataclass(frozen=True)
class _Mount:
    version: int
    path: Path
    controllers: frozenset[str]  # v1: bound to this hierarchy; v2: available in our cgroup
    parent: Path  # where our cgroups go


def _mounts() -> list[_Mount]:
    own: dict[str, str] = {}  # controllers ("" for v2) -> our path in that hierarchy
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own[controllers] = path
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3].split(",")
            root, point = fields[3], Path(fields[4].replace("\\040", " "))
            if fstype == "cgroup":
                names = [o for o in options if o in _V1_CONTROLLERS]
                key = next((k for k in own if names and set(names) <= set(k.split(","))), None)
                if key is not None:
                    found.append(_Mount(1, point, frozenset(names), _below(point, root, own[key])))
            elif fstype == "cgroup2" and "" in own:
                here = _below(point, root, own[""])
                with contextlib.suppress(OSError):
                    available = frozenset((here / "cgroup.controllers").read_text().split())
                    found.append(_Mount(2, point, available, here))
    return found


def _below(point: Path, root: str, path: str) -> Path:
    """Our cgroup directory in a hierarchy mounted at `point` whose mount shows the hierarchy from `root`."""
    relative = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return point if relative == "." else point / relative


def _v2_parent(mount: _Mount) -> Path | None:
    """The nearest cgroup, from ours up, that delegates memory and pids to its children and lets us create one
    and move processes into it (cgroup v2 lets no process sit in a cgroup whose children have controllers)."""
    here = mount.parent
    while True:
        with contextlib.suppress(OSError):
            enabled = set((here / "cgroup.subtree_control").read_text().split())
            if {"memory", "pids"} <= enabled and os.access(here, os.W_OK) and os.access(here / "cgroup.procs", os.W_OK):
                return here
        if here == mount.path:
            return None
        here = here.parent


# -- one environment's cgroup


def create(limits: Limits, name: str | None = None) -> Cgroup:
    """Create and lock the environment's cgroup with `limits` applied. Raises CgroupUnavailable."""
    mounts = _mounts()
    v2 = next((m for m in mounts if m.version == 2 and {"memory", "pids"} <= m.controllers), None)
    if v2 is not None:
        parent = _v2_parent(v2)
        if parent is None:
            raise CgroupUnavailable(f"no cgroup v2 subtree delegated to uid {os.geteuid()}")
        return CgroupV2(_make(parent, name), limits)
    v1 = {c: m.parent for m in mounts if m.version == 1 for c in m.controllers}
    if "memory" not in v1:
        raise CgroupUnavailable("no memory controller")
    if not all(os.access(d, os.W_OK) for d in v1.values()):
        raise CgroupUnavailable(f"the cgroup v1 hierarchies are not writable by uid {os.geteuid()}")
    return CgroupV1(_make_v1(v1, name), limits)


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


def sweep() -> list[str]:
    """Remove the cgroups of dead owners next to where ours go; returns the paths removed."""
    removed: list[str] = []
    try:
        mounts = _mounts()
    except OSError:
        return removed
    parents: list[Path] = []
    for mount in mounts:
        parent = _v2_parent(mount) if mount.version == 2 else mount.parent
        if parent is not None and parent not in parents:
            parents.append(parent)
    for parent in parents:
        with contextlib.suppress(OSError):
            for entry in os.scandir(parent):
                if entry.name.startswith(PREFIX) and entry.is_dir(follow_symlinks=False):
                    node = _lock(Path(entry.path))
                    if node is not None:
                        _empty(node)
                        try:
                            node.remove()
                            removed.append(entry.path)
                        except OSError:
                            pass
    return removed


def _empty(node: _Node) -> None:
    """Kill whatever still runs in an orphaned cgroup directory (any hierarchy)."""
    with contextlib.suppress(OSError):
        _write(node, "cgroup.kill", "1")
    for _ in range(200):
        try:
            pids = [int(p) for p in (node.path / "cgroup.procs").read_text().split()]
        except OSError:
            return
        pids = [pid for pid in pids if not _zombie(pid)]
        if not pids:
            return
        _signal(pids, signal.SIGKILL)
        with contextlib.suppress(OSError):
            _write(node, "freezer.state", "THAWED")
        with contextlib.suppress(OSError):
            _write(node, "cgroup.freeze", "0")
        time.sleep(0.005)
