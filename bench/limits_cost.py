#!/usr/bin/env python3
"""What a sandbox's limits cost: freezing on the warm path, and setting up the cgroup and /tmp on a cold start.

    python3 bench/limits_cost.py [--cycles N] [--setups N]

Needs a cgroup (root, or a delegated cgroup v2 subtree); the /tmp figures need root. Every figure is a median.

Freezing, the cgroup freezer against signals, measured in the same run. For 1 and 5 idle processes in one
environment's cgroup (a runtime and extensions wait in a read between invokes), each cycle is what the warm path
does: a thaw before the event, a freeze after the report.
- freezer: v1 `freezer.state` THAWED, then FROZEN and reading it until it says FROZEN (v2: `cgroup.freeze` and
  `cgroup.events`);
- signals: `cgroup.procs` read with pread on a kept fd, SIGCONT to each pid; then the same with SIGSTOP, and the
  list read once more to catch a process forked meanwhile (what `Cgroup.freeze()` does).
Blocks of each alternate so that load on the machine hits both alike. Also per warm invoke: `peak_mb()` and
`oom_killed()` (the report's reads).

Cold start: `cgroups.create()` + `close()`, and `EphemeralStorage.create()` + `close()` at 512 and 10,240 MB (a
sparse ext4 image, mkfs, loop mount), against `python3.11 -c 'import awslambdaric'` (bench/invoke_overhead.py's
cold-start baseline) measured in the same run, interleaved.

Benchmarks never fail a build on timing: the script exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lambdarun.sandbox import cgroups, storage
from lambdarun.sandbox.limits import Limits

BLOCK = 50
IDLE = [sys.executable, "-c", "import time; time.sleep(3600)"]


def timed(steps: list[tuple[str, Callable[[], object]]], samples: dict[str, list[float]]) -> None:
    for name, step in steps:
        started = time.perf_counter_ns()
        step()
        samples[name].append((time.perf_counter_ns() - started) / 1000)


def measure(count: int, cycles: int) -> dict[str, float]:
    cgroup = cgroups.create(Limits(memory_mb=512))
    fds = cgroup.join_fds()
    processes = [subprocess.Popen(IDLE, preexec_fn=lambda: cgroups.join(fds)) for _ in range(count)]
    try:
        while len(cgroup.pids()) < count:
            time.sleep(0.01)
        time.sleep(0.2)  # let them reach their sleep
        names = ("freezer thaw", "freezer freeze", "signal thaw", "signal freeze")
        samples: dict[str, list[float]] = {name: [] for name in (*names, "peak_mb + oom_killed")}
        cgroup.freezer_freeze()
        for block in range(cycles // BLOCK):
            freezer = [("freezer thaw", cgroup.freezer_thaw), ("freezer freeze", cgroup.freezer_freeze)]
            signals = [("signal thaw", cgroup.thaw), ("signal freeze", cgroup.freeze)]
            if block % 2 == 0:
                cgroup.freezer_thaw()  # hand over frozen by the other method
                cgroup.freeze()
            for _ in range(BLOCK):
                timed(signals if block % 2 == 0 else freezer, samples)
            if block % 2 == 0:
                cgroup.thaw()
                cgroup.freezer_freeze()
        for _ in range(cycles):
            timed([("peak_mb + oom_killed", lambda: (cgroup.peak_mb(), cgroup.oom_killed()))], samples)
        return {name: statistics.median(values) for name, values in samples.items() if values}
    finally:
        cgroup.freezer_thaw()
        cgroup.thaw()
        cgroup.close()
        for process in processes:
            process.wait()


def baseline() -> list[str]:
    """The cold-start baseline of bench/invoke_overhead.py, or plain interpreter start-up without awslambdaric."""
    python = shutil.which("python3.11") or sys.executable
    if subprocess.run([python, "-c", "import awslambdaric"], capture_output=True).returncode == 0:
        return [python, "-c", "import awslambdaric"]
    return [sys.executable, "-c", "pass"]


def measure_setup(runs: int) -> dict[str, float]:
    """Milliseconds: set-up and tear-down of a cgroup and of /tmp, and the baseline, interleaved."""
    command = baseline()
    samples: dict[str, list[float]] = {" ".join(command[1:]): [], "cgroup": []}
    root = os.geteuid() == 0
    sizes = (512, 10240) if root else ()
    for size in sizes:
        samples |= {f"/tmp {size} MB create": [], f"/tmp {size} MB close": []}
    with tempfile.TemporaryDirectory(prefix="lambdarun-bench-") as scratch:
        for _ in range(runs):
            started = time.perf_counter_ns()
            subprocess.run(command, check=True)
            samples[" ".join(command[1:])].append((time.perf_counter_ns() - started) / 1e6)
            started = time.perf_counter_ns()
            cgroups.create(Limits(128)).close()
            samples["cgroup"].append((time.perf_counter_ns() - started) / 1e6)
            for size in sizes:
                started = time.perf_counter_ns()
                tmp = storage.EphemeralStorage.create(Path(scratch), size)
                made = time.perf_counter_ns()
                tmp.close()
                closed = time.perf_counter_ns()
                samples[f"/tmp {size} MB create"].append((made - started) / 1e6)
                samples[f"/tmp {size} MB close"].append((closed - made) / 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--setups", type=int, default=15)
    args = parser.parse_args()
    try:
        cgroups.create(Limits(memory_mb=128)).close()
    except cgroups.CgroupUnavailable as exc:
        print(f"no cgroup here ({exc}): nothing to measure")
        return
    for count in (1, 5):
        p50 = measure(count, args.cycles)
        freezer = p50["freezer thaw"] + p50["freezer freeze"]
        signals = p50["signal thaw"] + p50["signal freeze"]
        print(
            f"{count} process(es): thaw+freeze p50 freezer {freezer:.1f} us (thaw {p50['freezer thaw']:.1f}), "
            f"signals {signals:.1f} us (thaw {p50['signal thaw']:.1f}); freezer / signals = {freezer / signals:.2f}x"
        )
    print(f"per warm invoke: peak_mb() + oom_killed() {p50['peak_mb + oom_killed']:.1f} us")
    setup = measure_setup(args.setups)
    base_name, base = next(iter(setup.items()))
    print(f"cold-start baseline: {base_name}: {base:.1f} ms")
    for name, ms in list(setup.items())[1:]:
        print(f"{name + (' create + close' if name == 'cgroup' else '')}: {ms:.1f} ms = {ms / base:.2f}x the baseline")


if __name__ == "__main__":
    main()
