"""The init, invoke, reset and shutdown flows against fakes: no processes, no sockets.

A fake sandbox "spawns" coroutines that play the runtime and extensions by calling the core state machines the way
the API handlers do, so each ordering is reached on purpose rather than by luck of timing.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from lambdarun.config import FunctionConfig
from lambdarun.core.outcomes import ResetReason
from lambdarun.core.runtime import Invocation, RuntimeChannel, RuntimeReply
from lambdarun.environment.environment import Environment
from lambdarun.environment.invoke import InvokeOutcome, InvokeRequest, InvokeResponse
from lambdarun.environment.layout import Layout
from lambdarun.sandbox.view import HostDirs, Paths
from lambdarun.telemetry import records as r
from lambdarun.telemetry.records import Event


class FakeProcess:
    def __init__(self, name: str) -> None:
        self.name = name
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.signals: list[int] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def exit(self, status: int) -> None:
        if not self.exited.done():
            self.exited.set_result(status)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def exit_description(self) -> str:
        return f"exit status {self.exited.result()}"

    def drain_logs(self) -> None:
        pass

    def signal_group(self, signum: int) -> None:
        self.signals.append(signum)
        if signum == signal.SIGTERM:
            self.exit(0)

    async def kill(self) -> None:
        self.exit(-9)


Script = Callable[[FakeProcess], Awaitable[None]]


class FakeSandbox:
    def __init__(self, scripts: Mapping[str, Script]) -> None:
        self.scripts = scripts
        self.processes: list[FakeProcess] = []
        self.frozen = False
        self.resets = 0

    async def spawn(self, name: str, argv: list[str], env: Mapping[str, str], on_line: Any, on_frame: Any = None):  # type: ignore[no-untyped-def]
        process = FakeProcess(name)
        self.processes.append(process)
        process.task = asyncio.get_running_loop().create_task(self.scripts[name](process))
        return process

    def freeze(self) -> None:
        self.frozen = True

    def thaw(self) -> None:
        self.frozen = False

    def max_memory_used_mb(self) -> int:
        return 42

    def oom_killed(self) -> bool:
        return False

    async def socket(self):  # type: ignore[no-untyped-def]
        raise OSError("no network in these tests")

    async def kill_all(self) -> None:
        self.resets += 1
        for process in self.processes:
            process.exit(-9)


class World:
    """An Environment wired to fakes, and the helpers its scripts use to act as runtime and extensions."""

    def __init__(self, tmp: Path, extensions: tuple[str, ...] = (), **config: Any) -> None:
        self.config = FunctionConfig(code=tmp, runtime="provided.al2023", **config)
        paths = Paths.of(HostDirs(task=tmp, opt=tmp, runtime=tmp, lang=tmp, tmp=tmp))
        self.layout = Layout(self.config, "instance", paths, "provided:al2023", ["bootstrap"], {}, {}, extensions,
                             None, None, False)  # fmt: skip
        self.scripts: dict[str, Script] = {}
        self.sandbox = FakeSandbox(self.scripts)
        self.events: list[Event] = []
        self.env = Environment(self.config)
        self.env.use(self.layout, self.sandbox)  # what start() assembles from files; nothing here touches the disk
        self.env.stream.subscribe(self.events.append)

    @property
    def channel(self) -> RuntimeChannel:
        return self.env._current().channel

    async def next_invoke(self) -> Invocation:
        channel = self.channel
        invocation = channel.next_requested()
        if invocation is None:
            invocation = await channel.park()
        channel.delivered(invocation)
        return invocation

    def respond(self, invocation: Invocation, body: bytes = b'"ok"') -> None:
        self.channel.reply_received(
            invocation.request_id, RuntimeReply(body, "application/json", False, None, time.time())
        )

    async def next_event(self, name: str) -> dict[str, Any]:
        registry = self.env._current().extensions
        ext = next(x for x in registry.all if x.name == name)
        event = registry.next_requested(ext)
        if event is None:
            event = await registry.park(ext)
        return event

    def register(self, name: str, events: list[str]) -> None:
        self.env._current().extensions.register(name, {"events": events}, None)

    def of(self, type_: type[Any]) -> list[Any]:
        return [e.data for e in self.events if isinstance(e.data, type_)]

    async def invoke(self, on_response: Callable[[InvokeResponse], None] | None = None) -> InvokeOutcome:
        return await self.env.invoke(InvokeRequest(b"{}"), on_response=on_response)


def echo_runtime(world: World) -> Script:
    async def runtime(process: FakeProcess) -> None:
        while True:
            world.respond(await world.next_invoke())

    return runtime


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_the_invoker_is_answered_before_extensions_finish(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(tmp_path, extensions=("slow",))
        release = asyncio.Event()
        world.scripts["runtime"] = echo_runtime(world)

        async def slow(process: FakeProcess) -> None:
            world.register("slow", ["INVOKE", "SHUTDOWN"])
            while True:
                event = await world.next_event("slow")  # its first poll ends its Init
                if event["eventType"] == "SHUTDOWN":
                    return process.exit(0)
                await release.wait()  # post-invoke work

        world.scripts["extension-slow"] = slow
        answered = asyncio.Event()
        task = asyncio.create_task(world.invoke(lambda response: answered.set()))
        await answered.wait()
        assert not task.done()  # the response is out, the invoke is not over
        await asyncio.sleep(0.02)
        release.set()
        outcome = await task
        assert outcome.response.payload == b'"ok"'
        assert outcome.report.status == "success"
        assert outcome.report.post_runtime_extensions_ms is not None
        assert outcome.report.post_runtime_extensions_ms >= 15
        assert world.sandbox.frozen  # frozen after the invoke
        await world.env.shutdown()
        (done,) = world.of(r.ShutdownDone)
        assert done.reason == "spindown" and dict(done.extensions) == {"slow": "Exited"}

    run(scenario)


def test_an_extension_crash_after_the_response_fails_the_invoke_and_resets(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(tmp_path, extensions=("fragile",))
        world.scripts["runtime"] = echo_runtime(world)

        async def fragile(process: FakeProcess) -> None:
            world.register("fragile", ["INVOKE"])
            await world.next_event("fragile")  # ends its Init; the INVOKE arrives
            await asyncio.sleep(0.01)  # the runtime answers meanwhile
            process.exit(1)

        world.scripts["extension-fragile"] = fragile
        responses: list[InvokeResponse] = []
        outcome = await world.invoke(responses.append)
        assert responses[0].payload == b'"ok"' and responses[0].function_error is None  # the invoker kept its answer
        assert outcome.report.status == "error"
        assert outcome.report.error_type == "Extension.Crash"
        assert world.env._gen is None  # reset: the next invoke starts a fresh generation
        (done,) = world.of(r.ShutdownDone)
        assert done.reason == "failure"
        assert [x.phase for x in world.of(r.InitStart)] == ["init"]
        await world.invoke()
        # A fresh Init in the same sandbox, with new processes (the old ones killed by the reset).
        assert [x.phase for x in world.of(r.InitStart)] == ["init", "init"]
        assert world.sandbox.resets >= 1 and len(world.sandbox.processes) == 4

    run(scenario)


def test_an_init_timeout_resets_and_the_next_invoke_inits_again_inside_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(tmp_path, init_timeout_s=0.05)
        starts = 0

        async def runtime(process: FakeProcess) -> None:
            nonlocal starts
            starts += 1
            if starts == 1:
                await asyncio.Event().wait()  # never asks for an invoke: Init times out
            await echo_runtime(world)(process)

        world.scripts["runtime"] = runtime
        outcome = await world.invoke()
        reports = world.of(r.InitReport)
        assert [(x.phase, x.status) for x in reports] == [("init", "timeout"), ("invoke", "success")]
        assert [x.reason for x in world.of(r.ShutdownDone)] == ["timeout"]
        assert outcome.report.status == "success"
        assert outcome.report.init_duration_ms is None  # the suppressed init is part of the invoke's Duration
        assert outcome.response.payload == b'"ok"'

    run(scenario)


def test_a_runtime_that_exits_after_its_response_fails_the_invoke(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(tmp_path)

        async def runtime(process: FakeProcess) -> None:
            world.respond(await world.next_invoke())
            process.exit(1)

        world.scripts["runtime"] = runtime
        outcome = await world.invoke()
        assert outcome.response.payload == b'"ok"'
        assert outcome.report.status == "error"
        assert outcome.report.error_type == "Runtime.ExitError"
        (done,) = world.of(r.RuntimeDone)
        assert done.status == "error"
        assert [x.reason for x in world.of(r.ShutdownDone)] == ["failure"]
        faults = world.of(r.Fault)
        assert "Runtime exited with error: exit status 1" in faults[0].text

    run(scenario)


def test_a_function_timeout_answers_sandbox_timedout_and_resets(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(tmp_path, timeout_s=1)

        async def runtime(process: FakeProcess) -> None:
            await world.next_invoke()
            await asyncio.Event().wait()  # never answers

        world.scripts["runtime"] = runtime
        world.env.config.timeout_s = 0.05  # below Lambda's minimum, for speed: the flow reads the config
        outcome = await world.invoke()
        assert outcome.response.error_type == "Sandbox.Timedout"
        assert outcome.report.status == "timeout" and outcome.report.error_type is None
        assert [x.reason for x in world.of(r.ShutdownDone)] == ["timeout"]

    run(scenario)


def test_shutdown_kills_a_runtime_without_extensions_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        world = World(tmp_path)
        world.scripts["runtime"] = echo_runtime(world)

        await world.invoke()
        runtime = world.sandbox.processes[0]
        await world.env.shutdown()
        assert runtime.signals == []  # no extension: the runtime is killed at once, no SIGTERM
        assert not runtime.running

    run(scenario)


@pytest.mark.parametrize("reason", ["spindown", "timeout", "failure"])
def test_shutdown_events_carry_the_reason(tmp_path: Path, reason: str) -> None:
    async def scenario() -> None:
        world = World(tmp_path, extensions=("watcher",))
        world.scripts["runtime"] = echo_runtime(world)
        seen: list[dict[str, Any]] = []

        async def watcher(process: FakeProcess) -> None:
            world.register("watcher", ["SHUTDOWN"])
            event = await world.next_event("watcher")
            seen.append(event)
            process.exit(0)

        world.scripts["extension-watcher"] = watcher
        await world.invoke()
        runtime = world.sandbox.processes[-1]
        await world.env.shutdown(ResetReason(reason))
        assert seen[0]["eventType"] == "SHUTDOWN" and seen[0]["shutdownReason"] == reason
        assert runtime.signals[0] == signal.SIGTERM  # with an extension, the runtime gets SIGTERM first
        (done,) = world.of(r.ShutdownDone)
        assert dict(done.extensions) == {"watcher": "Exited"}

    run(scenario)
