"""The README's demo command does what the README says it shows."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_shows_both_extensions_their_events_telemetry_and_the_post_runtime_time() -> None:
    run = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LAMBDARUN_SKIP_SETUP": "1"})  # fmt: skip
    assert run.returncode == 0, run.stderr
    responses = run.stdout.splitlines()
    assert len(responses) == 2 and '"warm_invocations": 2' in responses[1]
    log = run.stderr
    assert "EXTENSION\tName: demo-observer\tState: Ready\tEvents: [INVOKE, SHUTDOWN]" in log
    assert "EXTENSION\tName: demo-internal\tState: Ready\tEvents: [INVOKE]" in log
    assert "TELEMETRY\tName: demo-observer\tState: Subscribed\tTypes: [Platform, Function]" in log
    assert log.count("[demo-observer] INVOKE ") == 2 and log.count("[demo-internal] INVOKE ") == 2
    assert "[demo-observer] telemetry batch of" in log and "platform.report" in log
    reports = [line for line in log.splitlines() if line.startswith("REPORT ")]
    assert len(reports) == 2 and all("\tPost Runtime Extensions Duration: " in line for line in reports)
    assert "[demo-observer] SHUTDOWN (spindown), bye" in log
