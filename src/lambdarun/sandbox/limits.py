"""What a sandbox may use (SPEC 5.2), and the rlimits that stand in where no cgroup can be made.

A cgroup (cgroups.py) enforces memory and processes for the whole sandbox. Without one, only per-process rlimits
remain, and they are poor stand-ins, measured on this kind of machine:
- memory: none. RLIMIT_AS at 128 MB hangs `node -e 0` and crashes `java -version`, and RLIMIT_DATA at 128 MB stops
  the JVM from starting with Lambda's own heap flags; both count per process (a function that forks gets the limit
  again per child) and fail an allocation with ENOMEM where Lambda kills the sandbox. So memory is not limited.
- processes: RLIMIT_NPROC counts the tasks of a uid. Since Linux 5.14 the count is kept per user namespace, so set
  inside the sandbox's own user namespace (after it is created: set before, it caps the user's processes on the
  whole host) it counts exactly the sandbox's tasks. It does not apply when the sandbox's uid maps to host root.
- open files: RLIMIT_NOFILE is Lambda's own mechanism and is always set.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

MEMORY_RANGE_MB = (128, 10240)
EPHEMERAL_RANGE_MB = (512, 10240)


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    ephemeral_mb: int = 512
    pids: int = 1024  # processes and threads
    nofile: int = 1024

    def __post_init__(self) -> None:
        low, high = MEMORY_RANGE_MB
        if not low <= self.memory_mb <= high:
            raise ValueError(f"memory {self.memory_mb} MB is outside Lambda's range {low}-{high} MB")
        low, high = EPHEMERAL_RANGE_MB
        if not low <= self.ephemeral_mb <= high:
            raise ValueError(f"ephemeral storage {self.ephemeral_mb} MB is outside Lambda's range {low}-{high} MB")
        if self.pids < 1 or self.nofile < 1:
            raise ValueError("the process and open-file limits must be positive")


def apply_rlimits(limits: Limits, nproc: bool) -> None:
    """Set a sandboxed process's rlimits; call it in the child just before exec (inherited by everything it
    starts). `nproc`: also cap processes with RLIMIT_NPROC, for a sandbox without a pids cgroup; only call it so
    inside the sandbox's own user namespace (see the module's note). Raises OSError when a limit cannot be set."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.pids, limits.pids))


_announced = False


def announce_unenforced(reason: str, uid_is_root_outside: bool) -> str:
    """The one stderr line, per lambdarun process, that says what a sandbox without a cgroup does not enforce.
    Returns the text (the same every time) so that it can also go into an environment's own record."""
    global _announced
    lost = "memory is not limited and Max Memory Used is read from each process's peak resident size"
    if uid_is_root_outside:
        lost += "; processes and threads are not limited (RLIMIT_NPROC does not apply to root)"
    else:
        lost += "; processes and threads are capped with RLIMIT_NPROC inside the sandbox's user namespace"
    text = f"lambdarun: no cgroup for the sandbox ({reason}): {lost}. Run as root, or in a delegated cgroup v2 subtree."
    if not _announced:
        _announced = True
        print(text, file=sys.stderr)
    return text
