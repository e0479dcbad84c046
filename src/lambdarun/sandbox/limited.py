"""An environment's sandbox with Lambda's limits (SPEC 5.2): the namespaces (sandbox.py), its cgroup for memory and
processes (cgroups/), and its /tmp sized to the ephemeral storage (storage.py), opened and closed together.

Where a machine cannot do something, it is said once per lambdarun process (each module's announcement) and the
rest still works: without a cgroup, memory is not limited and processes are capped with RLIMIT_NPROC; without
root, /tmp is a tmpfs; without user namespaces, processes run plainly on the host.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import cgroups, storage
from .cgroups import Cgroup, CgroupUnavailable
from .limits import Limits, announce_unenforced
from .logpipe import LineSink
from .processes import Process
from .sandbox import Sandbox, plain_reason
from .spec import Bind, Network, SandboxSpec
from .storage import EphemeralStorage, StorageError
from .view import HostDirs, Paths


def sweep() -> None:
    """What lambdarun processes killed without a chance to clean up left: /tmp images, then cgroups."""
    storage.sweep()
    cgroups.sweep()


class LimitedSandbox:
    def __init__(self, sandbox: Sandbox, cgroup: Cgroup | None, tmp: EphemeralStorage | None) -> None:
        self.sandbox = sandbox
        self._cgroup = cgroup
        self._tmp = tmp

    @classmethod
    async def open(
        cls, dirs: HostDirs, binds: Sequence[Bind], limits: Limits, network: Network, scratch: Path
    ) -> LimitedSandbox:
        """Open the sandbox of one environment; raises SandboxError (or StorageError) when it cannot be built."""
        cgroup = _cgroup(limits) if plain_reason() is None else None
        tmp: EphemeralStorage | None = None
        try:
            if plain_reason() is None:
                try:
                    tmp = EphemeralStorage.create(scratch, limits.ephemeral_mb, memory_cgroup=cgroup is not None)
                except StorageError:
                    tmp = EphemeralStorage.tmpfs(limits.ephemeral_mb)  # root without loop devices
            spec = SandboxSpec(
                task=dirs.task, opt=dirs.opt, runtime=dirs.runtime, lang=dirs.lang,
                tmp=tmp.host_path if tmp is not None and tmp.host_path is not None else dirs.tmp,
                tmp_bytes=tmp.tmpfs_bytes if tmp is not None else None,
                binds=tuple(binds), network=network, nofile=limits.nofile,
                nproc=None if cgroup is not None else limits.pids,
            )  # fmt: skip
            sandbox = await Sandbox.open(spec, cgroup.join_fds() if cgroup is not None else ())
        except BaseException:
            if tmp is not None:
                tmp.close()
            if cgroup is not None:
                cgroup.close()
            raise
        return cls(sandbox, cgroup, tmp)

    # -- what the environment reads of it
    @property
    def listener(self) -> socket.socket:
        return self.sandbox.listener

    @property
    def runtime_api(self) -> str:
        return self.sandbox.runtime_api

    @property
    def paths(self) -> Paths:
        return self.sandbox.paths

    @property
    def sandboxed(self) -> bool:
        return self.sandbox.sandboxed

    # -- what a generation does with it
    async def spawn(self, name: str, argv: list[str], env: Mapping[str, str], on_line: LineSink,
                    on_frame: LineSink | None = None) -> Process:  # fmt: skip
        return await self.sandbox.spawn(name, argv, env, on_line, on_frame)

    def freeze(self) -> None:
        self.sandbox.freeze()

    def thaw(self) -> None:
        self.sandbox.thaw()

    def max_memory_used_mb(self) -> int:
        """The cgroup's peak (less page cache), else the processes' peak resident size."""
        if self._cgroup is not None:
            return max(1, self._cgroup.peak_mb())
        return self.sandbox.max_memory_used_mb()

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the sandbox for memory since the last call."""
        return self._cgroup is not None and self._cgroup.oom_killed()

    async def socket(self) -> socket.socket:
        return await self.sandbox.socket()

    async def kill_all(self) -> None:
        """A reset: every process gone; the next generation starts in the same sandbox, with a fresh peak."""
        await self.sandbox.kill_all()
        if self._cgroup is not None:
            with contextlib.suppress(OSError):
                self._cgroup.reset_peak()

    def discard(self) -> None:
        """The synchronous last resort when `close()` could not run to its end: /tmp unmounted, cgroup removed
        (the namespaces die with lambdarun; what cannot be undone now, the next sweep does)."""
        with contextlib.suppress(OSError):
            if self._tmp is not None:
                self._tmp.close()
        with contextlib.suppress(OSError):
            if self._cgroup is not None:
                self._cgroup.close()

    async def close(self) -> None:
        """Nothing of the sandbox is left: processes, namespaces, network, /tmp, cgroup."""
        try:
            await self.sandbox.close()
        finally:
            if self._tmp is not None:
                self._tmp.close()
            if self._cgroup is not None:
                self._cgroup.close()


def _cgroup(limits: Limits) -> Cgroup | None:
    try:
        return cgroups.create(limits)
    except CgroupUnavailable as exc:
        # Run by root, the sandbox's user is `nobody` on the host, so RLIMIT_NPROC still counts its tasks.
        announce_unenforced(str(exc), uid_is_root_outside=False)
        return None
