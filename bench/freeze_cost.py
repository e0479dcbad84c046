#!/usr/bin/env python3
"""What freezing a sandbox between invokes costs: the cgroup freezer against signals, measured in the same run.

    python3 bench/freeze_cost.py [--cycles N]

Needs a cgroup (root, or a delegated cgroup v2 subtree). For 1 and 5 idle processes in one environment's cgroup
(a runtime and extensions wait in a read between invokes), each cycle is what the warm path does: a thaw before
the event, a freeze after the report.
- freezer: v1 `freezer.state` THAWED, then FROZEN and reading it until it says FROZEN (v2: `cgroup.freeze` and
  `cgroup.events`);
- signals: `cgroup.procs` read with pread on a kept fd, SIGCONT to each pid; then the same with SIGSTOP, and the
  list read once more to catch a process forked meanwhile (what `Cgroup.freeze()` does).
Blocks of each alternate so that load on the machine hits both alike. Benchmarks never fail a build on timing:
the script exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lambdarun.sandbox import cgroups
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
        samples: dict[str, list[float]] = {name: [] for name in names}
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
        return {name: statistics.median(values) for name, values in samples.items() if values}
    finally:
        cgroup.freezer_thaw()
        cgroup.thaw()
        cgroup.close()
        for process in processes:
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=1000)
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


if __name__ == "__main__":
    main()
