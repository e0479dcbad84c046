"""Capture a process's stdout and stderr through one pipe, split into timestamped lines.

The pipe is ours (not asyncio's) so that `drain()` can read whatever the process already wrote at the moment the
platform needs it: a line printed before the runtime posted its response is in the pipe when the response
arrives, and must be logged before `END`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

MAX_LINE = 256 * 1024  # longer lines are split into records of this size, as CloudWatch does

LineSink = Callable[[str, float], None]


class LogPipe:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_line: LineSink) -> None:
        self._loop = loop
        self._on_line = on_line
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read_fd, False)
        self._partial = b""
        self._open = True
        self.closed = loop.create_future()
        loop.add_reader(self.read_fd, self._readable)

    def release_write_end(self) -> None:
        """Close our copy of the write end once the child holds it, so EOF means every writer is gone."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def _readable(self) -> None:
        # A bounded read per wake-up: a function printing without pause must not starve the loop (telemetry
        # delivery runs on it). `drain()` still reads everything when the platform needs the log complete.
        self.drain(max_reads=4)

    def drain(self, max_reads: int | None = None) -> None:
        reads = 0
        while self._open and (max_reads is None or reads < max_reads):
            reads += 1
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._finish()
                return
            self._split(self._partial + chunk)

    def _split(self, data: bytes) -> None:
        now = time.time()
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._emit(line, now)
        while len(self._partial) > MAX_LINE:
            self._emit(self._partial[:MAX_LINE], now)
            self._partial = self._partial[MAX_LINE:]

    def _emit(self, line: bytes, at: float) -> None:
        self._on_line(line.decode("utf-8", "replace"), at)

    def _finish(self) -> None:
        if self._partial:
            self._emit(self._partial, time.time())
            self._partial = b""
        self.close()

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._loop.remove_reader(self.read_fd)
        os.close(self.read_fd)
        self.release_write_end()
        if not self.closed.done():
            self.closed.set_result(None)


FRAME_HEADER = 16
_FRAME_MAGIC = 0xA55A


class FramePipe(LogPipe):
    """The runtime's `_LAMBDA_TELEMETRY_LOG_FD`: records framed as type (4 bytes, 0xA55A…), length (4), timestamp in
    microseconds (8), message (SPEC 3.5), so a multi-line record or stack trace stays one record."""

    _skip = 0  # bytes still to drop of a record longer than MAX_LINE

    def _split(self, data: bytes) -> None:
        offset = 0
        while True:
            if self._skip:
                dropped = min(self._skip, len(data) - offset)
                self._skip -= dropped
                offset += dropped
                if self._skip:
                    break
            if len(data) - offset < FRAME_HEADER:
                break
            frame_type = int.from_bytes(data[offset : offset + 4], "big")
            length = int.from_bytes(data[offset + 4 : offset + 8], "big")
            if frame_type >> 16 != _FRAME_MAGIC:
                # Not a frame: keep what follows readable as text rather than lose it.
                self._on_line(data[offset:].decode("utf-8", "replace"), time.time())
                offset = len(data)
                break
            # A record longer than MAX_LINE is cut there and the rest dropped, so that what lambdarun holds of a
            # frame stays bounded whatever length the process claims.
            kept = min(length, MAX_LINE)
            end = offset + FRAME_HEADER + kept
            if end > len(data):
                break
            micros = int.from_bytes(data[offset + 8 : offset + 16], "big")
            self._on_line(data[offset + FRAME_HEADER : end].decode("utf-8", "replace"), micros / 1_000_000)
            self._skip = length - kept
            offset = end
        self._partial = data[offset:]

    def _finish(self) -> None:
        self._partial = b""  # an incomplete frame at exit is lost, as on Lambda
        self.close()
