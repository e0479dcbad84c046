"""Framed log records (`_LAMBDA_TELEMETRY_LOG_FD`, SPEC 3.5): what a process claims never makes lambdarun hold more
than one record's worth of bytes."""

from __future__ import annotations

import asyncio
import os
import time

from lambdarun.sandbox.logpipe import MAX_LINE, FramePipe


def _frame(message: bytes, declared: int | None = None) -> bytes:
    length = len(message) if declared is None else declared
    return (
        (0xA55A0003).to_bytes(4, "big")
        + length.to_bytes(4, "big")
        + int(time.time() * 1e6).to_bytes(8, "big")
        + message
    )


def _records(data: bytes) -> list[str]:
    async def run() -> list[str]:
        got: list[str] = []
        pipe = FramePipe(asyncio.get_running_loop(), lambda line, at: got.append(line))
        writer = os.fdopen(pipe.write_fd, "wb", buffering=0)
        pipe.write_fd = -1
        for start in range(0, len(data), 4096):
            writer.write(data[start : start + 4096])
            pipe.drain()
        writer.close()
        pipe.drain()
        return got

    return asyncio.run(run())


def test_a_record_longer_than_the_limit_is_cut_and_the_next_ones_still_arrive() -> None:
    records = _records(_frame(b"one") + _frame(b"a" * (MAX_LINE + 100_000)) + _frame(b"two"))
    assert [len(r) for r in records] == [3, MAX_LINE, 3]
    assert records[0] == "one" and records[-1] == "two"


def test_multi_line_records_stay_whole() -> None:
    assert _records(_frame(b"Traceback:\n  line 1\n  line 2")) == ["Traceback:\n  line 1\n  line 2"]
