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

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..limits import Limits
from .base import (
    MB,
    PREFIX,
    Cgroup,
    CgroupUnavailable,
    SignalFreezer,
    _lock,
    _make,
    _make_v1,
    _Node,
    _signal,
    _write,
    _zombie,
)
from .v1 import CgroupV1
from .v2 import CgroupV2

_V1_CONTROLLERS = ("memory", "pids", "freezer")


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


__all__ = [
    "MB",
    "PREFIX",
    "Cgroup",
    "CgroupUnavailable",
    "CgroupV1",
    "CgroupV2",
    "SignalFreezer",
    "create",
    "join",
    "sweep",
]
