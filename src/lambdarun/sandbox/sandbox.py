"""An environment's sandbox: where its runtime and extensions run, from Init to Shutdown (DESIGN "Sandbox").

    sandbox = await Sandbox.open(spec)             # one per environment; resets reuse it (kill_all)
    server = await loop.create_server(factory, sock=sandbox.listener)    # AWS_LAMBDA_RUNTIME_API=sandbox.runtime_api
    process = await sandbox.spawn("runtime", argv, env, on_line, on_frame)
    sandbox.freeze() / sandbox.thaw()              # between invokes
    await sandbox.kill_all()                       # a reset: every process gone, the sandbox kept
    await sandbox.close(grace)                     # SIGTERM to every process, `grace` s, then nothing left

Two implementations: `NamespaceSandbox` (namespace.py), the real one, and `PlainSandbox` (plain.py), processes
on the host where user namespaces or bwrap are missing or LAMBDARUN_SANDBOX=plain, announced once with what it
does not enforce.
"""

from __future__ import annotations

import asyncio
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from .logpipe import LineSink
from .memory import MemoryMeter
from .processes import Process
from .spec import Network, SandboxSpec
from .view import Paths


def plain_reason() -> str | None:
    """Why processes will run plainly on the host here (no namespaces), or None when they get a real sandbox."""
    from . import bwrap

    if os.environ.get("LAMBDARUN_SANDBOX", "") == "plain":
        return "LAMBDARUN_SANDBOX=plain"
    return bwrap.unavailable()


class Sandbox(ABC):
    sandboxed: bool  # False in plain mode
    paths: Paths  # /var/task and friends as the sandbox's processes see them
    runtime_api: str  # AWS_LAMBDA_RUNTIME_API: 127.0.0.1:9001, or the host port in plain mode
    listener: socket.socket  # listening at runtime_api: serve it with loop.create_server(sock=...)
    network: Network  # what processes actually have: "none" when outbound network was asked for but impossible

    def __init__(self) -> None:
        self._processes: list[Process] = []
        self._memory = MemoryMeter()

    @staticmethod
    async def open(spec: SandboxSpec, cgroup_procs: Sequence[int] = ()) -> Sandbox:
        """A new sandbox. `cgroup_procs`: writable descriptors of a cgroup's `cgroup.procs`, one per hierarchy, which
        every process joins before it execs (the caller keeps them and closes them after `close`)."""
        from . import namespace, plain

        reason = plain_reason()
        if reason is None:
            return await namespace.NamespaceSandbox.start(spec, cgroup_procs)
        return await plain.PlainSandbox.start(spec, cgroup_procs, reason)

    @abstractmethod
    async def spawn(self, name: str, argv: list[str], env: Mapping[str, str], on_line: LineSink,
                    on_frame: LineSink | None = None) -> Process:  # fmt: skip
        """Start a process in /var/task with stdout and stderr to `on_line`; with `on_frame`, also a
        `_LAMBDA_TELEMETRY_LOG_FD` for framed records. Raises OSError when it cannot be executed."""

    @abstractmethod
    def freeze(self) -> None:
        """Stop every process of the sandbox."""

    @abstractmethod
    def thaw(self) -> None: ...

    @abstractmethod
    async def kill_all(self) -> None:
        """SIGKILL every process and reap it; the sandbox stays open for the next ones."""

    @abstractmethod
    async def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket in the sandbox's network namespace, for lambdarun to connect to a listener inside (a
        Telemetry API subscriber at sandbox.localdomain:4243, for example). Non-blocking."""

    @abstractmethod
    async def close(self, grace: float = 0.0) -> None:
        """SIGTERM every process, wait up to `grace` seconds for them to exit, SIGKILL what is left; then nothing
        of the sandbox remains. Idempotent."""

    async def _end_processes(self, grace: float) -> None:
        """The first part of `close`: thawed, SIGTERM and up to `grace` seconds to exit, then every process killed."""
        self.thaw()
        running = [p.exited for p in self._processes if p.running]
        if grace > 0 and running:
            self._terminate_all()
            await asyncio.wait(running, timeout=grace)
        await self.kill_all()

    @abstractmethod
    def _terminate_all(self) -> None:
        """SIGTERM to every process of the sandbox."""

    def max_memory_used_mb(self) -> int:
        """The peak resident memory of the processes started since the last kill_all."""
        return self._memory.max_used_mb(self._processes)
