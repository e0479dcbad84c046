"""lambdarun's side of the control socket to a sandbox's init (init.c): requests out, replies and exits in.

One SOCK_SEQPACKET socketpair; every message starts with the same header (type, handle, a, b, c) and may carry
descriptors. Requests that need an answer get a future keyed by a handle; process exits arrive unasked. Whatever
init sends is checked before use: a message that makes no sense is dropped and its descriptors closed.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import os
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct("=IIiiq")
MAX_MESSAGE = 128 * 1024  # one process's argv and environment; below a socket's default send buffer
MAX_FDS = 8

REQ_SPAWN, REQ_SIGNAL, REQ_SIGNAL_ALL, REQ_KILL_ALL, REQ_SOCKET, REQ_PING = 1, 2, 3, 4, 5, 6
EV_READY, EV_SPAWNED, EV_EXITED, EV_EMPTY, EV_SOCKET, EV_PONG = 101, 102, 103, 104, 105, 106


@dataclass(frozen=True)
class Event:
    type: int
    handle: int
    a: int
    b: int
    c: int
    fd: int | None  # a descriptor it carried, now ours to close


class InitChannel:
    """Talks to init. `on_exit(handle, wait_status, max_rss_kb)` is called for every process it started that
    ended; `closed` resolves when init is gone."""

    def __init__(self, sock: socket.socket, on_exit: Callable[[int, int, int], None]) -> None:
        self._sock = sock
        sock.setblocking(False)
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._handles = itertools.count(1)
        self._waiting: dict[tuple[int, int], asyncio.Future[Event]] = {}
        self.ready: asyncio.Future[Event] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(sock.fileno(), self._readable)

    def new_handle(self) -> int:
        return next(self._handles)

    def send(self, type_: int, handle: int = 0, a: int = 0, b: int = 0, body: bytes = b"",
             fds: Sequence[int] = ()) -> None:  # fmt: skip
        """Send one request; ConnectionError when init is gone."""
        if self.closed.done():
            raise ConnectionError("the sandbox's init is gone")
        message = HEADER.pack(type_, handle, a, b, 0) + body
        if len(message) > MAX_MESSAGE:
            raise OSError(7, "Argument list too long")  # E2BIG, as execve would say
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        try:
            self._sock.sendmsg([message], ancillary)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self._close()
            raise ConnectionError("the sandbox's init is gone") from exc

    def expect(self, reply: int, handle: int) -> asyncio.Future[Event]:
        """A future for init's `reply` to the request with `handle`: call before sending it."""
        future: asyncio.Future[Event] = self._loop.create_future()
        self._waiting[(reply, handle)] = future
        future.add_done_callback(lambda _: self._waiting.pop((reply, handle), None))
        return future

    async def wait(self, future: asyncio.Future[Event]) -> Event:
        waits: list[asyncio.Future[Any]] = [future, self.closed]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not future.done():
            future.cancel()
            raise ConnectionError("the sandbox's init is gone")
        return future.result()

    async def request(self, type_: int, a: int = 0, b: int = 0, reply: int = 0) -> Event:
        handle = self.new_handle()
        future = self.expect(reply, handle)
        try:
            self.send(type_, handle, a, b)
        except ConnectionError:
            future.cancel()
            raise
        return await self.wait(future)

    def _readable(self) -> None:
        for _ in range(64):  # bounded per wake-up; the reader is called again while more is queued
            try:
                data, ancdata, _, _ = self._sock.recvmsg(
                    HEADER.size, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, ancdata = b"", []
            fds = _descriptors(ancdata)
            if not data:
                for fd in fds:
                    os.close(fd)
                self._close()
                return
            if len(data) != HEADER.size or len(fds) > 1:
                for fd in fds:
                    os.close(fd)
                continue
            type_, handle, a, b, c = HEADER.unpack(data)
            self._dispatch(Event(type_, handle, a, b, c, fds[0] if fds else None))

    def _dispatch(self, event: Event) -> None:
        if event.type == EV_EXITED:
            self._on_exit(event.handle, event.a, event.c)
            return
        if event.type == EV_READY and not self.ready.done():
            self.ready.set_result(event)
            return
        future = self._waiting.get((event.type, event.handle))
        if future is not None and not future.done():
            future.set_result(event)
        elif event.fd is not None:
            os.close(event.fd)

    def _close(self) -> None:
        if self.closed.done() or self._loop.is_closed():  # after its loop stopped, the sandbox is gone anyway
            return
        self._loop.remove_reader(self._sock.fileno())
        self.closed.set_result(None)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the sandbox's init exited before it was ready"))
            self.ready.exception()  # retrieved: whoever waits on it sees it too

    def close(self) -> None:
        """Close our end: init sees EOF and exits, and with it every process of the sandbox."""
        self._close()
        self._sock.close()


def _descriptors(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
            fds.extend(received)
    return fds


def pack_spawn(cwd: str, argv: Sequence[str], env: dict[str, str]) -> bytes:
    strings = [cwd, *argv, *(f"{k}={v}" for k, v in env.items())]
    if any("\0" in s for s in strings) or any("=" in k or not k for k in env):
        raise ValueError("an argument or environment variable holds a NUL byte, or a variable name is not valid")
    return b"".join(s.encode("utf-8", "surrogateescape") + b"\0" for s in strings)


async def read_pipe(fd: int, complete: Callable[[bytes], bool]) -> bytes:
    """Read a pipe without blocking the loop until EOF or until what was read is `complete`."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    chunks: list[bytes] = []
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        chunks.append(chunk)
        if (not chunk or complete(b"".join(chunks))) and not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)
