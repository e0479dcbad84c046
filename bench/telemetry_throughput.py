#!/usr/bin/env python3
"""Telemetry API throughput: function log lines per second delivered to an HTTP subscriber extension.

A python3.11 function prints N lines in one invoke; a real subscriber extension (Python HTTP listener on
sandbox.localdomain, maxItems 10000, maxBytes 1 MiB, timeoutMs 25) counts the `function` records of each batch and
tells this script when it received them. The delivered rate is the number of lines received over the time from the
first line printed to the last one received (end to end); the rate from the first batch to the last is printed
too. Lines the platform dropped (platform.logsDropped) are not delivered. The reference is the rate at which the
same handler, in the same run, writes the same lines to /dev/null (one write and flush per line, as the runtime's
unbuffered stdout does).

Target: delivered >= 0.5 x min(reference, 100,000 lines/s). Always exits 0; prints the figures.

    python bench/telemetry_throughput.py [--lines 200000] [--width 80] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import lambdarun

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "telemetry"
CAP = 100_000
NAME = "throughput"


class Counter:
    """Receives the subscriber's per-batch summaries on 127.0.0.1 (the sandbox shares this machine's network)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.batches: list[dict[str, Any]] = []
        self.since = 0
        self.cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buffered = b""
        with conn:
            while data := conn.recv(1 << 20):
                buffered += data
                *lines, buffered = buffered.split(b"\n")
                for line in lines:
                    message = json.loads(line)
                    if message.get("kind") == "wait":  # the handler holds its invoke until the lines are in
                        ok = self.wait_for(message["count"], message.get("timeout", 120))
                        conn.sendall((json.dumps({"ok": ok}) + "\n").encode())
                    elif message.get("kind") == "summary":
                        with self.cond:
                            self.batches.append(message)
                            self.cond.notify_all()

    def mark(self) -> None:
        with self.cond:
            self.since = len(self.batches)

    def since_mark(self) -> list[dict[str, Any]]:
        with self.cond:
            return list(self.batches[self.since :])

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until `count` lines arrived since the mark, or were reported dropped."""

        def accounted() -> bool:
            return sum(b["functions"] + b["dropped"] for b in self.batches[self.since :]) >= count

        with self.cond:
            return self.cond.wait_for(accounted, timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def layer(root: Path) -> Path:
    port = free_port()
    config = {
        "port": port,
        "summary": True,
        "request": {
            "schemaVersion": "2022-12-13",
            "types": ["platform", "function"],
            "buffering": {"maxItems": 10000, "maxBytes": 1048576, "timeoutMs": 25},
            "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/telemetry"},
        },
    }
    (root / "extensions").mkdir(parents=True)
    (root / "telemetry-config").mkdir()
    shutil.copyfile(FIXTURES / "subscriber.py", root / "extensions" / NAME)
    (root / "extensions" / NAME).chmod(0o755)
    (root / "telemetry-config" / f"{NAME}.json").write_text(json.dumps(config))
    return root


def one_round(fn: lambdarun.Function, counter: Counter, lines: int, width: int, index: int) -> dict[str, float]:
    prefix = f"R{index}-"
    reference = fn.invoke({"op": "devnull", "count": lines, "prefix": prefix, "width": width}).json()
    counter.mark()
    # The handler waits for the subscriber: after the invoke the environment is frozen, the listener with it.
    answer = fn.invoke({"op": "print", "count": lines, "prefix": prefix, "width": width,
                        "wait": {"ext": NAME, "count": lines, "timeout": 120}}).json()  # fmt: skip
    if not answer["wait"]["ok"]:
        print(f"round {index + 1}: the subscriber did not get (or hear of) all {lines} lines within 120 s")
    summaries = counter.since_mark()
    batches = [b for b in summaries if b["functions"]]
    received = sum(b["functions"] for b in batches)
    dropped = sum(b["dropped"] for b in summaries)
    nan = float("nan")
    last = batches[-1]["at"] if batches else nan
    window = (received - batches[0]["functions"]) / (last - batches[0]["at"]) if len(batches) > 1 else nan
    return {
        "reference": reference["count"] / reference["seconds"],
        "printed": lines / (answer["finished"] - answer["started"]),
        "delivered": received / (last - answer["started"]),
        "window": window,
        # > 0: nothing reached the subscriber while the handler was still printing
        "first_after_print_ms": (batches[0]["at"] - answer["finished"]) * 1000 if batches else nan,
        "received": received,
        "dropped": dropped,
        "batches": len(batches),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--width", type=int, default=80, help="characters per line")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    counter = Counter()
    started = time.monotonic()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="lambdarun-bench-") as tmp:
        fn = lambdarun.Function(
            code=FIXTURES / "function",
            runtime="python3.11",
            handler="app.handler",
            layers=[layer(Path(tmp) / "layer")],
            env={"TELEMETRY_COLLECTOR_PORT": str(counter.port)},
            timeout=300,
        )
        with fn:
            fn.invoke({"op": "hello"})  # the cold start, outside the measurement
            for index in range(args.rounds):
                figures = one_round(fn, counter, args.lines, args.width, index)
                rounds.append(figures)
                print(
                    f"round {index + 1}: /dev/null {figures['reference']:,.0f} lines/s; printed to the platform "
                    f"{figures['printed']:,.0f} lines/s; delivered {figures['delivered']:,.0f} lines/s end to end "
                    f"({figures['window']:,.0f} lines/s from the first to the last batch); {figures['received']:,} "
                    f"received in {figures['batches']} batches, {figures['dropped']:,} dropped; the first batch of "
                    f"lines arrived {figures['first_after_print_ms']:+,.0f} ms after the last line printed"
                )
    reference = statistics.median(r["reference"] for r in rounds)
    printed = statistics.median(r["printed"] for r in rounds)
    delivered = statistics.median(r["delivered"] for r in rounds)
    window = statistics.median(r["window"] for r in rounds)
    received = sum(r["received"] for r in rounds)
    dropped = sum(r["dropped"] for r in rounds)
    capped = min(reference, CAP)
    ratio = delivered / capped
    print(f"lines per invoke: {args.lines:,} of {args.width} characters, {args.rounds} rounds, "
          f"{time.monotonic() - started:.1f} s in all (medians below)")  # fmt: skip
    print(f"the handler writing to /dev/null:      {reference:,.0f} lines/s (capped at {CAP:,}: {capped:,.0f})")
    print(f"the handler printing (platform reads): {printed:,.0f} lines/s")
    print(f"delivered to the subscriber:           {delivered:,.0f} lines/s, from the first line printed to the last "
          f"received ({window:,.0f} lines/s from its first batch to its last)")  # fmt: skip
    print(f"lines dropped (platform.logsDropped):  {dropped:,} of {received + dropped:,} "
          f"({dropped / max(1, received + dropped):.0%}); dropped lines are not delivered")  # fmt: skip
    print(f"ratio: {ratio:.2f}  target: >= 0.50  {'MET' if ratio >= 0.5 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
