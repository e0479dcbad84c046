"""Shared by the extension tests: layers built from the fixture extensions, a function that records its whole
event stream, and the check that no process of the environment outlives `close()`."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lambdarun
from lambdarun.telemetry import records as r
from lambdarun.telemetry.records import Event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "extensions"
FUNCTION = FIXTURES / "function"
MARKER_VAR = "LAMBDARUN_TEST_MARKER"

PYTHON_EXT = "python_ext.py"
BASH_EXT = "bash_ext.sh"
NODE_EXT = "node_ext.js"
ABANDONING_EXT = "abandoning_ext.py"
API_PROBE = "api_probe.py"


def build_layer(root: Path, extensions: Mapping[str, str], extra: Mapping[str, str] = ()) -> Path:
    """A layer dir with `extensions/<name>` copied from a fixture file and made executable; `extra` maps a
    path inside the layer to a fixture file copied there as it is (with its mode)."""
    root.mkdir(parents=True, exist_ok=True)
    if extensions:
        (root / "extensions").mkdir(exist_ok=True)
    for name, fixture in extensions.items():
        target = root / "extensions" / name
        shutil.copyfile(FIXTURES / fixture, target)
        target.chmod(0o755)
    for inside, fixture in dict(extra).items():
        target = root / inside
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(FIXTURES / fixture, target)
    return root


@dataclass
class Recorded:
    """A running function plus every event of its stream (including those emitted by `close()`)."""

    fn: lambdarun.Function
    marker: str
    events: list[Event] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]

    def one(self, type_: str, **match: Any) -> Event:
        found = [
            e
            for e in self.of_type(type_)
            if isinstance(e.record, dict) and all(e.record.get(k) == v for k, v in match.items())
        ]
        assert len(found) == 1, f"expected one {type_} {match}, got {found}"
        return found[0]

    def shutdown(self) -> dict[str, Any]:
        (event,) = self.of_type(r.SHUTDOWN)
        assert isinstance(event.record, dict)
        return event.record

    def lines(self, name: str, kind: str | None = None, type_: str = r.EXTENSION_LOG) -> list[str]:
        """What follows `[<name>] <kind>` in the lines an extension printed (type_=function: runtime's)."""
        head = f"[{name}]" + (f" {kind}" if kind else "")
        found = []
        for event in self.of_type(type_):
            line = str(event.record)
            if line == head or line.startswith(head + " "):
                found.append(line[len(head) + 1 :])
        return found

    def received(self, name: str, event_type: str | None = None) -> list[dict[str, Any]]:
        """The events an extension printed as `[<name>] EVENT <json>`."""
        events = [json.loads(line) for line in self.lines(name, "EVENT")]
        return [e for e in events if event_type is None or e.get("eventType") == event_type]

    def index(self, event: Event) -> int:
        return next(i for i, e in enumerate(self.events) if e is event)


def leftover_processes(marker: str) -> list[str]:
    """Processes on this machine whose environment carries the test's marker: `pid cmdline` each."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in environ:
            found.append(f"{entry} {cmdline}")
    return found


def assert_no_process_left(marker: str) -> None:
    # A SIGKILLed process can stay visible for a moment while the kernel tears it down; give it that moment.
    # This wait is no timing assertion: the check is only that nothing survives.
    for _ in range(20):
        left = leftover_processes(marker)
        if not left:
            return
        time.sleep(0.05)
    assert not left, f"processes left after close: {left}"


@contextmanager
def recorded_function(
    layers: Sequence[Path],
    env: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    code: Path = FUNCTION,
    tracing: str = "PassThrough",
) -> Iterator[Recorded]:
    """A python3.11 function with the given layers; closed on exit, then checked for leftover processes."""
    marker = uuid.uuid4().hex
    fn = lambdarun.Function(
        code=code,
        runtime="python3.11",
        handler="app.handler",
        layers=list(layers),
        env={MARKER_VAR: marker, **(env or {})},
        timeout=timeout,
        tracing=tracing,
    )
    rec = Recorded(fn, marker)
    fn.subscribe(rec.events.append)
    try:
        yield rec
    finally:
        fn.close()
    assert_no_process_left(marker)


def options(name: str, **values: Any) -> dict[str, str]:
    """The env var configuring python_ext.py under the extension name `name`."""
    return {"EXT_" + name.upper().replace("-", "_"): json.dumps(values)}
