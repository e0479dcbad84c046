#!/usr/bin/env python3
"""Thawing an environment on the warm path: the namespace sandbox (one request to its init, which signals every
process of the PID namespace) against today's way (SIGCONT to each process group from lambdarun), measured in the
same run, with 1 and 5 processes.

    python3 bench/sandbox_freeze.py [--rounds N]

Each process waits on a unix socket for a byte and echoes it. A round freezes them, queues a byte for each, then
thaws and waits for every echo. Figures, as medians:

- call: the CPU time of `thaw()` itself, in lambdarun;
- resumed: from `thaw()` to the last echo, what the next invoke waits for;
- floor: the same echo with no freeze at all, so `resumed - floor` is what thawing adds.

Also (info): a request round trip from a process inside the sandbox to lambdarun's server on the listener the
sandbox handed out (127.0.0.1:9001 inside, no proxy), against the same client and server on the host's loopback;
and opening a sandbox and running `true` in it, against a bare bwrap running `true`.
Benchmarks never fail a build on timing: the script exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from lambdarun.sandbox import freeze as process_groups
from lambdarun.sandbox.processes import Process, kill_all, spawn
from lambdarun.sandbox.sandbox import Sandbox
from lambdarun.sandbox.spec import SandboxSpec

BLOCK = 50
ECHO = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
while True:
    b = s.recv(1)
    if not b:
        break
    s.sendall(b)
"""
PYTHON = "/usr/bin/python3"


def _ignore(line: str, at: float) -> None:
    pass


class Echoes:
    """The bench's end of every process's unix socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.streams.append((reader, writer))

        self._server = await asyncio.start_unix_server(accepted, path=str(self.path))
        self.path.chmod(0o777)  # the sandbox's user is not us

    async def wait_for(self, count: int) -> None:
        while len(self.streams) < count:
            await asyncio.sleep(0.01)

    def send(self) -> None:
        for _, writer in self.streams:
            writer.write(b"x")

    async def receive(self) -> None:
        for reader, _ in self.streams:
            await reader.readexactly(1)

    async def close(self) -> None:
        for _, writer in self.streams:
            writer.close()
        self.streams.clear()
        if self._server is not None:
            self._server.close()
        self.path.unlink(missing_ok=True)


async def _round(echoes: Echoes, freeze: Callable[[], None], thaw: Callable[[], None]) -> tuple[float, float]:
    freeze()
    await asyncio.sleep(0.002)  # let every stop land
    echoes.send()
    started = time.perf_counter()
    thaw()
    called = time.perf_counter()
    await echoes.receive()
    return called - started, time.perf_counter() - started


async def _floor(echoes: Echoes) -> float:
    started = time.perf_counter()
    echoes.send()
    await echoes.receive()
    return time.perf_counter() - started


class Way:
    """One way of running and freezing the processes: `today` or `sandbox`."""

    def __init__(self, name: str, start: Callable[[int], Awaitable[Echoes]], freeze: Callable[[], None],
                 thaw: Callable[[], None], stop: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
        self.name, self.start, self.freeze, self.thaw, self.stop = name, start, freeze, thaw, stop
        self.calls: list[float] = []
        self.resumed: list[float] = []
        self.floors: list[float] = []


async def _today(work: Path) -> Way:
    processes: list[Process] = []
    echoes = Echoes(work / "today.sock")

    async def start(count: int) -> Echoes:
        await echoes.start()
        for _ in range(count):
            processes.append(await spawn("echo", [PYTHON, "-I", "-c", ECHO, str(echoes.path)], {}, str(work), _ignore))
        await echoes.wait_for(count)
        return echoes

    async def stop() -> None:
        await echoes.close()
        await kill_all(processes)
        processes.clear()

    return Way("today", start, lambda: process_groups.freeze(processes), lambda: process_groups.thaw(processes), stop)


async def _sandbox(work: Path) -> tuple[Way, Sandbox]:
    dirs = {}
    for name in ("task", "opt", "runtime", "lang", "tmp"):
        (work / name).mkdir(exist_ok=True)
        (work / name).chmod(0o755)
        dirs[name] = work / name
    sb = await Sandbox.open(SandboxSpec(**dirs, network="none"))  # type: ignore[arg-type]
    echoes = Echoes(work / "tmp" / "sandbox.sock")

    async def start(count: int) -> Echoes:
        await echoes.start()
        for _ in range(count):
            await sb.spawn("echo", [PYTHON, "-I", "-c", ECHO, "/tmp/sandbox.sock"], {}, _ignore)
        await echoes.wait_for(count)
        return echoes

    async def stop() -> None:
        await echoes.close()
        await sb.kill_all()

    return Way("sandbox", start, sb.freeze, sb.thaw, stop), sb


def _us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def thaw_figures(rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="lambdarun-bench-"))
    work.chmod(0o755)
    sb: Sandbox | None = None
    try:
        today = await _today(work)
        sandbox, sb = await _sandbox(work)
        for count in (1, 5):
            ways = [today, sandbox]
            echoes = {way.name: await way.start(count) for way in ways}
            for way in ways:
                way.calls, way.resumed, way.floors = [], [], []
            for _ in range(max(1, rounds // BLOCK)):
                for way in ways:  # interleaved blocks: load on the machine hits both alike
                    for _ in range(BLOCK):
                        call, resumed = await _round(echoes[way.name], way.freeze, way.thaw)
                        way.calls.append(call)
                        way.resumed.append(resumed)
                        way.floors.append(await _floor(echoes[way.name]))
            for way in ways:
                print(f"thaw, {count} process{'es' if count > 1 else ''}, {way.name:8}: call {_us(way.calls):6.1f} us, "
                      f"resumed {_us(way.resumed):6.1f} us, floor {_us(way.floors):6.1f} us, "
                      f"added {_us(way.resumed) - _us(way.floors):6.1f} us")  # fmt: skip
            label = f"{count} process{'es' if count > 1 else ''}"
            call, resumed = _us(sandbox.calls) / _us(today.calls), _us(sandbox.resumed) / _us(today.resumed)
            print(f"thaw, {label}, sandbox / today: call {call:.2f}x, resumed {resumed:.2f}x")
            for way in ways:
                await way.stop()
    finally:
        if sb is not None:
            await sb.close()
        shutil.rmtree(work, ignore_errors=True)


PINGER = """
import socket, statistics, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    s.sendall(b"x" * 160)
    got = 0
    while got < 320:
        got += len(s.recv(4096))
    times.append(time.perf_counter() - started)
print(statistics.median(times) * 1e6)
"""


class _Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pending = 0

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        while self.pending >= 160:
            self.pending -= 160
            self.transport.write(b"y" * 320)  # type: ignore[attr-defined]


async def request_figures(count: int) -> None:
    """(info) Round trips through the listener a sandbox hands out, against the host's loopback."""
    loop = asyncio.get_running_loop()
    work = Path(tempfile.mkdtemp(prefix="lambdarun-bench-"))
    work.chmod(0o755)
    sb: Sandbox | None = None
    try:
        dirs = {n: work / n for n in ("task", "opt", "runtime", "lang", "tmp")}
        for d in dirs.values():
            d.mkdir()
            d.chmod(0o755)
        sb = await Sandbox.open(SandboxSpec(**dirs, network="none"))  # type: ignore[arg-type]
        inside = await loop.create_server(_Answer, sock=sb.listener)
        host = await loop.create_server(_Answer, "127.0.0.1", 0)
        results: dict[str, list[float]] = {"inside the sandbox": [], "on the host": []}
        for _ in range(3):
            lines: list[str] = []
            process = await sb.spawn("pinger", [PYTHON, "-I", "-c", PINGER, sb.runtime_api, str(count)], {},
                                     lambda line, at, lines=lines: lines.append(line))  # type: ignore[misc]  # fmt: skip
            await process.exited
            process.drain_logs()
            results["inside the sandbox"].append(float(lines[-1]))
            port = host.sockets[0].getsockname()[1]
            done = await asyncio.create_subprocess_exec(PYTHON, "-I", "-c", PINGER, f"127.0.0.1:{port}", str(count),
                                                        stdout=subprocess.PIPE)  # fmt: skip
            out, _ = await done.communicate()
            results["on the host"].append(float(out))
        for name, values in results.items():
            print(f"(info) request round trip, {name:18}: {statistics.median(values):6.1f} us")
        inside.close()
        host.close()
    finally:
        if sb is not None:
            await sb.close()
        shutil.rmtree(work, ignore_errors=True)


async def open_figures(samples: int) -> None:
    """(info) A sandbox opened and `true` run in it, against a bare bwrap (PID namespace, host root read-only)
    running `true`: what the first landing paid per process."""
    work = Path(tempfile.mkdtemp(prefix="lambdarun-bench-"))
    work.chmod(0o755)
    try:
        dirs = {n: work / n for n in ("task", "opt", "runtime", "lang", "tmp")}
        for d in dirs.values():
            d.mkdir()
            d.chmod(0o755)
        bare = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--unshare-pid", "--die-with-parent", "--", "/bin/true"]  # fmt: skip
        figures: dict[str, list[float]] = {"sandbox, network none": [], "sandbox, network default": [],
                                           "today's bwrap per process": []}  # fmt: skip
        for _ in range(samples):
            for network in ("none", "default"):
                started = time.perf_counter()
                sb = await Sandbox.open(SandboxSpec(**dirs, network=network))  # type: ignore[arg-type]
                process = await sb.spawn("true", ["/bin/true"], {}, _ignore)
                await process.exited
                figures[f"sandbox, network {network}"].append(time.perf_counter() - started)
                await sb.close()
            started = time.perf_counter()
            subprocess.run(bare, check=False)
            figures["today's bwrap per process"].append(time.perf_counter() - started)
        for name, values in figures.items():
            print(f"(info) open + run true, {name:26}: {statistics.median(values) * 1000:6.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--open", type=int, default=9, help="samples of the open figures")
    args = parser.parse_args()
    if not os.access(PYTHON, os.X_OK):
        print(f"needs {PYTHON} (the echo processes run it inside the sandbox)")
        return
    asyncio.run(thaw_figures(args.rounds))
    asyncio.run(request_figures(2000))
    asyncio.run(open_figures(args.open))


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # a benchmark reports, it never fails a build
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
