"""No sandbox: processes run on the host, as the user running lambdarun, where namespaces cannot be had.

The same interface as the real sandbox, with what it cannot do said once per lambdarun process: the APIs listen
on the host's 127.0.0.1 at a port of the kernel's choosing (AWS_LAMBDA_RUNTIME_API names it), paths are the real
directories, freezing reaches process groups only, and nothing is hidden or limited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence

from . import freeze
from .logpipe import LineSink
from .processes import HostProcess, Process, kill_all, spawn
from .sandbox import Sandbox
from .spec import SandboxSpec
from .view import Paths

_announced = False


def announce_once(reason: str) -> None:
    global _announced
    if not _announced:
        _announced = True
        print(f"lambdarun: running without a sandbox ({reason}). Functions run as you, on the host: they see its "
              "files, users and network, /var/task, /opt and /tmp are real directories named by LAMBDA_TASK_ROOT "
              "and friends, the APIs listen on a port of the host's 127.0.0.1 that any local process can reach, "
              "a process that starts its own session is not frozen between invokes, and joining a cgroup happens "
              "just after start.", file=sys.stderr)  # fmt: skip


class PlainSandbox(Sandbox):
    sandboxed = False
    network = "default"

    def __init__(self, spec: SandboxSpec, listener: socket.socket, cgroup_procs: Sequence[int]) -> None:
        super().__init__()
        self.spec = spec
        self.listener = listener
        self.runtime_api = "{}:{}".format(*listener.getsockname())
        self.paths = Paths(task=str(spec.task), opt=str(spec.opt), runtime=str(spec.runtime), lang=str(spec.lang),
                           tmp=str(spec.tmp))  # fmt: skip
        self._cgroup_procs = cgroup_procs
        self._closed = False

    @classmethod
    async def start(cls, spec: SandboxSpec, cgroup_procs: Sequence[int], reason: str) -> PlainSandbox:
        announce_once(reason)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.setblocking(False)
        return cls(spec, listener, cgroup_procs)

    async def spawn(self, name: str, argv: list[str], env: Mapping[str, str], on_line: LineSink,
                    on_frame: LineSink | None = None) -> Process:  # fmt: skip
        process = await spawn(name, argv, env, str(self.spec.task), on_line, on_frame=on_frame)
        for fd in self._cgroup_procs:
            # Popen cannot join a cgroup before exec; what the process forks before this line stays outside.
            with contextlib.suppress(OSError):
                os.pwrite(fd, str(process.pid).encode(), 0)
        self._processes.append(process)
        return process

    def freeze(self) -> None:
        freeze.freeze(self._host_processes())

    def thaw(self) -> None:
        freeze.thaw(self._host_processes())

    def _host_processes(self) -> list[HostProcess]:
        return [p for p in self._processes if isinstance(p, HostProcess)]

    async def kill_all(self) -> None:
        processes, self._processes = self._processes, []
        await kill_all(processes)
        self._memory.close()

    def _terminate_all(self) -> None:
        for process in self._processes:
            process.signal_group(signal.SIGTERM)

    async def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        sock = socket.socket(family, type)
        sock.setblocking(False)
        return sock

    async def close(self, grace: float = 0.0) -> None:
        if self._closed:
            return
        self._closed = True
        await self._end_processes(grace)
        self.listener.close()
