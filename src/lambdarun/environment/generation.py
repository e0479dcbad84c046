"""A generation: the processes and API state of one Init, until the next reset (SPEC 4).

It owns the runtime channel, the extension registry and the telemetry subscriptions the APIs reach, the processes
it spawned through the sandbox, and the one future that says "something broke". Every wait of the flows goes
through `wait`, which says how it ended as a `Wait`, never a bool to be re-interpreted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from ..core import errors as e
from ..core.extensions import Extension, ExtensionRegistry, ExtensionState
from ..core.runtime import RuntimeChannel
from ..telemetry import lifecycle as lc
from ..telemetry import records as r
from ..telemetry.delivery import HOST, Streams, TelemetryHub
from ..telemetry.stream import EventStream
from .layout import Layout

LineSink = Callable[[str, float], None]


class Process(Protocol):
    """What a generation needs of a process the sandbox started."""

    exited: asyncio.Future[int]

    @property
    def running(self) -> bool: ...

    def exit_description(self) -> str: ...

    def drain_logs(self) -> None: ...

    def signal_group(self, signum: int) -> None: ...

    async def kill(self) -> None:
        """SIGKILL it and everything it started, and reap it."""


class Sandbox(Protocol):
    """Where the environment's processes run: started, frozen between invokes, measured, killed (sandbox/ has it).
    One per environment: each generation's processes run in it, and a reset kills them all."""

    async def spawn(self, name: str, argv: list[str], env: Mapping[str, str], on_line: LineSink,
                    on_frame: LineSink | None = None) -> Process: ...  # fmt: skip

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def max_memory_used_mb(self) -> int: ...

    def oom_killed(self) -> bool:
        """Whether the kernel killed one of its processes for memory since the last call."""

    async def socket(self) -> socket.socket:
        """A socket in the sandbox's network, for lambdarun to reach a listener inside (a Telemetry subscriber)."""

    async def kill_all(self) -> None: ...


class Wait(Enum):
    DONE = "done"  # what was awaited happened (if together with a failure, it still counts)
    FAILED = "failed"  # a process exited or an extension reported a fatal error first
    TIMED_OUT = "timed out"  # the deadline came first


@dataclass(frozen=True)
class Failure:
    error_type: str
    text: str  # for the default error JSON: `Runtime exited with error: exit status 1`


class Generation:
    def __init__(self, layout: Layout, sandbox: Sandbox, stream: EventStream) -> None:
        config = layout.config
        self.layout = layout
        self.sandbox = sandbox
        self.stream = stream
        self.channel = RuntimeChannel()
        self.extensions = ExtensionRegistry(config.name, config.version, config.handler, config.account_id)
        self.subscriptions = TelemetryHub(stream.emit, self._connect)
        self._out_of_memory = False
        self.runtime: Process | None = None
        self.runtime_started: float | None = None  # when the runtime was spawned (epoch seconds)
        self._frozen = False
        self._extension_processes: dict[str, Process] = {}
        self._broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.extensions.fatal.add_done_callback(self._break)
        self.stop_reading = stream.subscribe(self.subscriptions.offer)  # from here: initStart reaches subscribers
        # Registration closes when the runtime first asks for an invoke (SPEC 2.4).
        self.channel.ready.add_done_callback(lambda _: self.extensions.close_registration())

    # -- processes
    @property
    def processes(self) -> list[Process]:
        runtime = [self.runtime] if self.runtime is not None else []
        return runtime + list(self._extension_processes.values())

    def process_of(self, ext: Extension) -> Process | None:
        return self._extension_processes.get(ext.name)

    async def launch_extensions(self) -> str | None:
        """Start the external extensions, in order; the text of a launch error, if one could not start."""
        layout = self.layout
        if layout.launch_error is not None:
            return layout.launch_error
        for name in layout.extensions:
            ext = self.extensions.add_external(name)
            argv = [f"{layout.paths.opt}/extensions/{name}"]
            try:
                process = await self.sandbox.spawn(
                    f"extension-{name}", argv, layout.extension_env, self._extension_line
                )
            except OSError as exc:
                self.extensions.launch_failed(ext)
                return f"{name}: {exc.strerror}"
            self._extension_processes[name] = self._watch(process)
        return None

    async def start_runtime(self) -> str | None:
        """Start the runtime; the text of the error when it cannot be started."""
        layout = self.layout
        if layout.missing_bootstrap is not None:
            return layout.missing_bootstrap
        self.runtime_started = time.time()
        try:
            process = await self.sandbox.spawn("runtime", layout.runtime_argv, layout.runtime_env,
                                               self._function_line, on_frame=self._function_line)  # fmt: skip
        except OSError as exc:
            return f"{layout.runtime_argv[0]}: {exc.strerror}"
        self.runtime = self._watch(process)
        return None

    def _watch(self, process: Process) -> Process:
        """`process` exiting ends the generation's current init or invoke."""
        process.exited.add_done_callback(self._break)
        return process

    def _break(self, _: object) -> None:
        if not self._broken.done():
            self._broken.set_result(None)

    def freeze(self) -> None:
        self.sandbox.freeze()
        if not self._frozen:
            self._frozen = True
            self.stream.emit(lc.Freeze())

    def thaw(self) -> None:
        self.sandbox.thaw()
        if self._frozen:
            self._frozen = False
            self.stream.emit(lc.Thaw())

    def max_memory_used_mb(self) -> int:
        return self.sandbox.max_memory_used_mb()

    def drain_logs(self) -> None:
        for process in self.processes:
            process.drain_logs()

    # -- what went wrong
    def failure(self) -> Failure | None:
        """The fatal error that happened, if any."""
        self._out_of_memory = self._out_of_memory or self.sandbox.oom_killed()
        if self._out_of_memory:  # whichever process the kernel chose, the sandbox ran out of memory
            return Failure(e.RUNTIME_OUT_OF_MEMORY, e.runtime_exit_text("signal: killed"))
        if self.runtime is not None and self.runtime.exited.done():
            return Failure(e.RUNTIME_EXIT, e.runtime_exit_text(self.runtime.exit_description()))
        if self.extensions.fatal.done():
            return Failure(*self.extensions.fatal.result())
        for name, process in self._extension_processes.items():
            if process.exited.done():
                return Failure(e.EXTENSION_CRASH, f"Extension {name} exited: {process.exit_description()}")
        return None

    def launch_failed(self) -> bool:
        """An extension that died before registering (bwrap could not exec it) never launched."""
        return any(self._died_unregistered(x) for x in self.extensions.all)

    def _died_unregistered(self, ext: Extension) -> bool:
        process = self._extension_processes.get(ext.name)
        return ext.state is ExtensionState.LAUNCHED and process is not None and process.exited.done()

    def extension_state(self, ext: Extension) -> str:
        """The state platform.extension shows: an extension that never registered is Started, or LaunchError."""
        if ext.state is ExtensionState.LAUNCHED:
            return "LaunchError" if self._died_unregistered(ext) else "Started"
        return str(ext.state.value)

    async def wait(
        self,
        futures: Sequence[asyncio.Future[Any]],
        deadline: float,
        extra: Sequence[asyncio.Future[Any]] = (),
        any_of: bool = False,
    ) -> Wait:
        """Wait for all `futures` (or any, with `any_of`) unless a failure (a process exit, a fatal extension error,
        `extra`) or the deadline comes first. A runtime that answered and then died did answer: DONE; the next
        wait sees the failure."""
        watch = [self._broken, *extra]
        while True:
            pending = [f for f in futures if not f.done()]
            if not pending or (any_of and len(pending) < len(futures)):
                return Wait.DONE
            if any(f.done() for f in watch):
                return Wait.FAILED
            remaining = deadline - time.time()
            if remaining <= 0:
                return Wait.TIMED_OUT
            await asyncio.wait(pending + watch, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    # -- logs
    def _function_line(self, line: str, at: float) -> None:
        record: str | dict[str, Any] = line
        if self.layout.json_logs and line.startswith("{"):
            # With the JSON log format a record that is a JSON object is passed on as one (SPEC 3.5).
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    record = parsed
        self.stream.emit(r.FunctionLog(record), at)

    def _extension_line(self, line: str, at: float) -> None:
        self.stream.emit(r.ExtensionLog(line), at)

    # -- the end
    async def kill_all(self) -> None:
        await self.sandbox.kill_all()

    async def _connect(self, port: int) -> Streams:
        """A Telemetry API subscriber's connection: to sandbox.localdomain:PORT, inside the sandbox's network."""
        sock = await self.sandbox.socket()
        try:
            await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def close(self) -> None:
        """After the shutdown sequence: nothing of this generation reads or sends any more."""
        self.stop_reading()
        await self.subscriptions.close()
