#!/usr/bin/env python3
"""Per-invoke and cold-start overhead of lambdarun, as ratios to baselines measured in the same run.

    python3 bench/invoke_overhead.py [--invokes N] [--cold N] [--cpu K]

Figures (microseconds for invokes, milliseconds for cold starts):

- floor: two loopback TCP round trips between two processes (small HTTP-sized messages, TCP_NODELAY), the
  least a warm invoke can cost: `/next` answered, `/response` posted and acknowledged, the next `/next`.
- warm invoke through the Python API (`fn.invoke({})`) with a no-op awslambdaric handler, and with a minimal
  raw-socket `provided.al2023` bootstrap; each as a ratio to the floor's p50.
- cold start (`Function.start()` + first `invoke`) against a bare `python3.11 -c 'import awslambdaric'`.

Floor and invokes are measured in interleaved blocks so that load on the machine hits them alike; so are the
cold starts and their baseline. `--cpu K` pins the benchmark and every process it starts to CPU K, which takes
the scheduler's placement (same CPU or not, the cost of waking an idle CPU) out of the ratios.

Benchmarks never fail a build on timing: the script exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lambdarun
from lambdarun.runtimes.registry import RuntimeUnavailable, get_runtime
from lambdarun.sandbox.view import bwrap_usable

BLOCK = 100  # samples per interleaved block

# Sizes close to the Runtime API traffic of a `{}` invoke: a `/next` response with its headers, a POST.
REQUEST_SIZE = 160
RESPONSE_SIZE = 320

NOOP_HANDLER = "def handler(event, context):\n    return {}\n"

# Inside the sandbox PATH is /var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin, so no `env python3`.
RAW_BOOTSTRAP = '''\
#!/usr/bin/python3
"""A minimal Lambda runtime: one keep-alive connection, hand-written HTTP/1.1, no handler."""
import os
import socket

host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
sock = socket.create_connection((host, int(port)))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buffer = b""


def read_response():
    global buffer
    while b"\\r\\n\\r\\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit(1)
        buffer += chunk
    head, _, rest = buffer.partition(b"\\r\\n\\r\\n")
    headers = {}
    for line in head.split(b"\\r\\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit(1)
        rest += chunk
    buffer = rest[length:]
    return headers, rest[:length]


NEXT = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\nHost: runtime\\r\\n\\r\\n"
while True:
    sock.sendall(NEXT)
    headers, _event = read_response()
    request_id = headers[b"lambda-runtime-aws-request-id"]
    body = b"{}"
    sock.sendall(b"POST /2018-06-01/runtime/invocation/" + request_id + b"/response HTTP/1.1\\r\\n"
                 b"Host: runtime\\r\\nContent-Type: application/json\\r\\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body)
    read_response()  # 202 Accepted
'''

# The floor's other process: answers each REQUEST_SIZE message with a RESPONSE_SIZE one.
ECHO_CHILD = f"""
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reply = b"r" * {RESPONSE_SIZE}
while True:
    got = 0
    while got < {REQUEST_SIZE}:
        chunk = conn.recv(65536)
        if not chunk:
            sys.exit(0)
        got += len(chunk)
    conn.sendall(reply)
"""


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile of `samples` (q in 0..100)."""
    ordered = sorted(samples)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def timed_us(action: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        action()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


# -- baselines
@contextlib.contextmanager
def echo_peer() -> Iterator[tuple[Callable[[], None], int]]:
    """A child process answering small messages; yields (two round trips, the child's pid)."""
    child = subprocess.Popen([sys.executable, "-c", ECHO_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = b"q" * REQUEST_SIZE

            def two_round_trips() -> None:
                for _ in range(2):
                    sock.sendall(request)
                    got = 0
                    while got < RESPONSE_SIZE:
                        got += len(sock.recv(65536))

            yield two_round_trips, child.pid
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(5)
        if child.poll() is None:
            child.kill()
            child.wait()


def run_ms(command: list[str]) -> float:
    started = time.perf_counter_ns()
    subprocess.run(command, check=True)
    return (time.perf_counter_ns() - started) / 1e6


def minimal_bwrap(command: list[str]) -> list[str] | None:
    bwrap = bwrap_usable()
    if bwrap is None:
        return None
    return [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/var",
            "--unshare-pid", "--unshare-ipc", "--die-with-parent", "--", *command]  # fmt: skip


def can_pin(pid: int, cpus: list[int]) -> bool:
    """Whether this machine lets us set CPU affinity (some containers refuse)."""
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        return False
    return True


# -- lambdarun
def write_fixtures(root: Path) -> tuple[Path, Path]:
    python_code = root / "python"
    python_code.mkdir()
    (python_code / "app.py").write_text(NOOP_HANDLER)
    raw_code = root / "raw"
    raw_code.mkdir()
    bootstrap = raw_code / "bootstrap"
    bootstrap.write_text(RAW_BOOTSTRAP)
    bootstrap.chmod(0o755)
    return python_code, raw_code


def warmed(fn: lambdarun.Function, count: int) -> Callable[[], object]:
    for _ in range(count):
        result = fn.invoke({})
    if result.status != "success":
        raise SystemExit(f"{fn.config.runtime} fixture failed: {result.payload!r} {result.logs}")
    return lambda: fn.invoke({})


def cold_start(code: Path) -> tuple[float, float]:
    """Milliseconds of `start()` and of the first invoke, on a new Function."""
    fn = lambdarun.Function(code=code, runtime="python3.11", handler="app.handler")
    try:
        t0 = time.perf_counter_ns()
        fn.start()
        t1 = time.perf_counter_ns()
        result = fn.invoke({})
        t2 = time.perf_counter_ns()
    finally:
        fn.close()
    if result.status != "success":
        raise SystemExit(f"cold start failed: {result.payload!r} {result.logs}")
    return (t1 - t0) / 1e6, (t2 - t1) / 1e6


# -- measurement
def measure_warm(python_code: Path, raw_code: Path, invokes: int, pinned: bool) -> dict[str, list[float]]:
    """Floor and both runtimes in rotating blocks; unpinned, also the floor with both ends placed."""
    cpus = sorted(os.sched_getaffinity(0))
    warmup = max(50, invokes // 10)
    with contextlib.ExitStack() as stack:
        two_round_trips, peer_pid = stack.enter_context(echo_peer())
        ric = stack.enter_context(lambdarun.Function(code=python_code, runtime="python3.11", handler="app.handler"))
        raw = stack.enter_context(lambdarun.Function(code=raw_code, runtime="provided.al2023"))
        actions: dict[str, Callable[[], object]] = {
            "floor": two_round_trips,
            "ric": warmed(ric, warmup),
            "raw": warmed(raw, warmup),
        }
        timed_us(two_round_trips, warmup)
        placed: dict[str, tuple[int, int]] = {}
        if not pinned and len(cpus) > 1 and can_pin(peer_pid, cpus):
            placed = {"same": (cpus[0], cpus[0]), "cross": (cpus[0], cpus[1])}
        names = list(actions) + [f"floor-{p}" for p in placed]
        samples: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(math.ceil(invokes / BLOCK)):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                if name.startswith("floor-"):
                    mine, peer = placed[name.removeprefix("floor-")]
                    os.sched_setaffinity(0, {mine})
                    os.sched_setaffinity(peer_pid, {peer})
                    try:
                        two_round_trips()
                        samples[name] += timed_us(two_round_trips, BLOCK)
                    finally:
                        os.sched_setaffinity(0, cpus)
                        os.sched_setaffinity(peer_pid, cpus)
                else:
                    actions[name]()
                    samples[name] += timed_us(actions[name], BLOCK)
    return samples


def measure_cold(python_code: Path, interpreter: str, runs: int) -> dict[str, list[float]]:
    """Cold starts and their baselines, interleaved; milliseconds."""
    baselines = {
        "import": [interpreter, "-c", "import awslambdaric"],
        "ric-import": [interpreter, "-c", "import awslambdaric.__main__, awslambdaric.bootstrap"],
    }
    sandboxed = minimal_bwrap(baselines["import"])
    if sandboxed is not None:
        baselines["bwrap-import"] = sandboxed
    for command in baselines.values():
        subprocess.run(command, check=True)  # page cache and .pyc files warm
    samples: dict[str, list[float]] = {name: [] for name in [*baselines, "start", "first", "total"]}
    for _ in range(runs):
        for name, command in baselines.items():
            samples[name].append(run_ms(command))
        start_ms, first_ms = cold_start(python_code)
        samples["start"].append(start_ms)
        samples["first"].append(first_ms)
        samples["total"].append(start_ms + first_ms)
    return samples


# -- report
def row(
    name: str, p50: float, p99: float | None, unit: str, ratio: float | None = None, target: float | None = None
) -> str:
    p99_text = f"{p99:8.1f}" if p99 is not None else " " * 8
    ratio_text = f"{ratio:6.2f}x" if ratio is not None else " " * 7
    verdict = ""
    if target is not None:
        verdict = f"<= {target:.1f}x  {'ok' if ratio is not None and ratio <= target else 'MISSED'}"
    return f"{name:<52} {p50:8.1f} {p99_text} {unit:<2} {ratio_text}  {verdict}".rstrip()


def report(
    warm: dict[str, list[float]], cold: dict[str, list[float]], invokes: int, elapsed: float, pinned: int | None
) -> None:
    floor50 = percentile(warm["floor"], 50)
    placement = f"pinned to CPU {pinned}" if pinned is not None else "unpinned"
    print(
        f"lambdarun invoke overhead: {invokes} samples per figure in blocks of {BLOCK}, "
        f"{len(cold['total'])} cold starts, {len(os.sched_getaffinity(0))} CPU(s) {placement}, "
        f"python {sys.version.split()[0]}"
    )
    print(f"{'figure':<52} {'p50':>8} {'p99':>8} {'':<2} {'ratio':>7}  target")
    print(row("floor: 2 loopback TCP round trips, 2 processes", floor50, percentile(warm["floor"], 99), "us"))
    for name, label in (
        ("floor-same", "  floor, both ends on one CPU (info)"),
        ("floor-cross", "  floor, ends on two CPUs (info)"),
    ):
        if name in warm:
            p50 = percentile(warm[name], 50)
            print(row(label, p50, percentile(warm[name], 99), "us", p50 / floor50))
    for name, label, target in (
        ("ric", "warm invoke, awslambdaric python3.11 no-op", 2.5),
        ("raw", "warm invoke, raw-socket provided.al2023", 1.8),
    ):
        p50 = percentile(warm[name], 50)
        print(row(label, p50, percentile(warm[name], 99), "us", p50 / floor50, target))
    import50 = statistics.median(cold["import"])
    print(row("baseline: python3.11 -c 'import awslambdaric'", import50, max(cold["import"]), "ms"))
    for name, label in (
        ("ric-import", "  import awslambdaric.__main__ + .bootstrap (info)"),
        ("bwrap-import", "  import awslambdaric in a minimal bwrap (info)"),
    ):
        if name in cold:
            p50 = statistics.median(cold[name])
            print(row(label, p50, max(cold[name]), "ms", p50 / import50))
    print(row("cold: Function.start() (info)", statistics.median(cold["start"]), max(cold["start"]), "ms"))
    print(row("cold: first invoke, Init included (info)", statistics.median(cold["first"]), max(cold["first"]), "ms"))
    total50 = statistics.median(cold["total"])
    print(row("cold: start() + first invoke", total50, max(cold["total"]), "ms", total50 / import50, 1.3))
    print(f"(invokes: nearest-rank p50/p99; cold starts and baselines: median and max; {elapsed:.1f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--invokes", type=int, default=3000, help="timed warm invokes per runtime, and floor samples (default 3000)"
    )
    parser.add_argument("--cold", type=int, default=9, help="cold starts, each on a new Function (default 9)")
    parser.add_argument(
        "--cpu", type=int, default=None, help="pin the benchmark and every process it starts to this CPU"
    )
    args = parser.parse_args()
    invokes = max(BLOCK, args.invokes)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # threads and children made from here on inherit it

    began = time.monotonic()
    try:
        interpreter = get_runtime("python3.11").locate()  # untimed: discovery is cached per lambdarun process
    except RuntimeUnavailable as exc:
        print(f"lambdarun invoke overhead: skipped, {exc}")
        return 0
    assert interpreter is not None
    scratch = Path(tempfile.mkdtemp(prefix="lambdarun-bench-"))
    try:
        python_code, raw_code = write_fixtures(scratch)
        cold_start(python_code)  # untimed: imports, the bwrap probe, .pyc files, page cache
        warm = measure_warm(python_code, raw_code, invokes, pinned=args.cpu is not None)
        cold = measure_cold(python_code, interpreter, max(1, args.cold))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(warm, cold, invokes, time.monotonic() - began, args.cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
