"""check-extension's rules on made-up event streams: each finding appears when its fault is there, and only then."""

from __future__ import annotations

import json
from pathlib import Path

from lambdarun.check.battery import Evidence, Step
from lambdarun.check.finding import Finding, Level
from lambdarun.check.rules import judge
from lambdarun.check.sink import SinkRequest
from lambdarun.core.outcomes import ResetReason, Status
from lambdarun.telemetry import lifecycle as lc
from lambdarun.telemetry import records as r
from lambdarun.telemetry.records import Event, Span

T0 = 1_800_000_000.0
EXT = "ext"


class Stream:
    """A battery's evidence, built invoke by invoke."""

    def __init__(self) -> None:
        self.evidence = Evidence(Path("layer"), "python3.11", [EXT], "http://127.0.0.1:1")
        self.now = T0

    def emit(self, record: r.Record, at: float | None = None) -> None:
        self.evidence.events.append(Event(record, self.now if at is None else at))

    def init(self, state: str = "Ready", status: Status = Status.SUCCESS) -> None:
        self.emit(r.InitStart(r.Phase.INIT, "python:3.11", "f", "$LATEST", "i", 128))
        registered = None if state == "Started" else self.now + 0.01
        self.emit(lc.InitTimings(r.Phase.INIT, self.now, self.now + 0.05,
                                 (lc.ExtensionInitTimes(EXT, True, registered, registered),)))  # fmt: skip
        self.emit(r.ExtensionInfo(EXT, state, ("INVOKE", "SHUTDOWN")))
        self.emit(r.InitReport(r.Phase.INIT, status, 100.0))
        self.now += 0.1

    def invoke(self, scenario: str = "warm", post_ms: float = 1.0, memory: int = 40, read: bool = True,
               status: Status = Status.SUCCESS, error_type: str | None = None) -> str:  # fmt: skip
        rid = f"req-{len(self.evidence.steps)}"
        start = self.now
        self.emit(lc.Thaw())
        self.emit(r.Start(rid, "$LATEST"), start)
        runtime_done = start + 0.002
        settled = runtime_done + post_ms / 1000
        post = Span.between("postRuntime", runtime_done, settled) if read else None
        self.emit(lc.ExtensionInvoke(rid, EXT, start if read else None, settled if read else None, post), settled)
        self.emit(r.Report(rid, status, (settled - start) * 1000, 10, 128, memory, error_type=error_type), settled)
        self.emit(lc.Freeze(), settled + 0.0005)
        self.evidence.steps.append(Step(scenario, rid, None))
        self.now = settled + 0.1
        return rid

    def deliver(self, duration_ms: float, status: int | None = 200, events: list[dict] | None = None) -> None:
        batch = tuple(json.dumps(e).encode() for e in (events or [{"type": "platform.start", "record": {}}]))
        error = None if status == 200 else f"answered HTTP {status}"
        self.emit(lc.TelemetryDelivery(EXT, "telemetry", "HTTP", Span("delivery", self.now, duration_ms), batch,
                                       status, error, 0))  # fmt: skip

    def shutdown(self, state: str = "Exited", read: bool = True, exit_status: int | None = 0) -> None:
        self.emit(lc.Thaw())
        self.emit(lc.ExtensionShutdown(EXT, state, True, read, Span("shutdown", self.now, 20.0), exit_status))
        self.emit(r.ShutdownDone(ResetReason.SPINDOWN, 0, 25.0, ((EXT, state),)), self.now + 0.025)

    def findings(self) -> list[Finding]:
        return judge(self.evidence).findings


def battery() -> Stream:
    stream = Stream()
    stream.init()
    stream.invoke("cold")
    for _ in range(4):
        stream.invoke("warm")
    stream.shutdown()
    return stream


def above_info(stream: Stream) -> list[tuple[str, Level]]:
    return [(f.check, f.level) for f in stream.findings() if f.level > Level.INFO]


def test_a_clean_battery_has_only_info_findings() -> None:
    assert above_info(battery()) == []


def test_no_register_within_the_init_budget_is_an_error() -> None:
    stream = Stream()
    stream.init(state="Started", status=Status.TIMEOUT)
    assert ("init", Level.ERROR) in above_info(stream)


def test_an_invoke_never_read_is_an_error_naming_the_invoke() -> None:
    stream = Stream()
    stream.init()
    rid = stream.invoke(read=False, status=Status.TIMEOUT)
    (unread,) = [f for f in stream.findings() if f.check == "events"]
    assert unread.level is Level.ERROR and unread.invokes == (rid,)


def test_slow_post_runtime_work_is_a_warning() -> None:
    stream = Stream()
    stream.init()
    for _ in range(3):
        stream.invoke(post_ms=200.0)
    (post,) = [f for f in stream.findings() if f.check == "post-runtime"]
    assert post.level is Level.WARNING and "median 200.0 ms" in post.summary


def test_a_request_under_way_at_the_freeze_is_an_error_naming_the_invoke() -> None:
    stream = Stream()
    stream.init()
    rid = stream.invoke()
    freeze = next(e.time for e in stream.evidence.events if isinstance(e.data, lc.Freeze))
    stream.evidence.sink = [SinkRequest("POST", "/x", 10, freeze - 0.001, freeze + 0.049)]
    (frozen,) = [f for f in stream.findings() if f.check == "frozen-work"]
    assert frozen.level is Level.ERROR and frozen.invokes == (rid,)


def test_a_request_answered_before_the_freeze_is_not_flagged() -> None:
    stream = Stream()
    stream.init()
    stream.invoke(post_ms=60.0)
    start = stream.evidence.events[-1].time - 0.06
    stream.evidence.sink = [SinkRequest("POST", "/x", 10, start, start + 0.05)]
    (frozen,) = [f for f in stream.findings() if f.check == "frozen-work"]
    assert frozen.level is Level.INFO


def test_telemetry_errors_slow_answers_and_drops_are_warnings() -> None:
    stream = Stream()
    stream.init()
    stream.deliver(5.0, status=500)
    stream.deliver(400.0)
    stream.deliver(2.0, events=[{"type": "platform.logsDropped", "record": {"droppedRecords": 7}}])
    telemetry = [f for f in stream.findings() if f.check == "telemetry" and f.level is Level.WARNING]
    assert len(telemetry) == 3
    assert any("7 log records dropped" in f.summary for f in telemetry)


def test_telemetry_time_frozen_is_not_counted_as_slow() -> None:
    stream = Stream()
    stream.init()
    stream.invoke()
    freeze = stream.evidence.events[-1].time
    stream.now = freeze - 0.001
    stream.deliver(400.0)  # sent just before the freeze, answered after the thaw 100 ms later
    stream.emit(lc.Thaw(), freeze + 0.399)
    assert not [f for f in stream.findings() if f.check == "telemetry" and f.level is Level.WARNING]


def test_shutdown_not_handled_is_an_error() -> None:
    stream = Stream()
    stream.init()
    stream.invoke()
    stream.shutdown(state="ShutdownFailed", exit_status=None)
    (shutdown,) = [f for f in stream.findings() if f.check == "shutdown"]
    assert shutdown.level is Level.ERROR and "killed after" in shutdown.evidence[0]


def test_an_extension_crash_is_an_error() -> None:
    stream = Stream()
    stream.init()
    stream.emit(r.Fault("RequestId: x Error: Extension ext exited: exit status 1\nExtension.Crash"))
    stream.invoke(status=Status.ERROR, error_type="Extension.Crash")
    assert {f.check for f in stream.findings() if f.level is Level.ERROR} == {"crash"}


def test_memory_growing_across_warm_invokes_is_a_warning() -> None:
    stream = Stream()
    stream.init()
    stream.invoke("cold", memory=40)
    for memory in (41, 46, 51, 56):
        stream.invoke("warm", memory=memory)
    (memory_finding,) = [f for f in stream.findings() if f.check == "memory"]
    assert memory_finding.level is Level.WARNING and "41 MB → 56 MB" in memory_finding.summary


def test_a_sink_the_sandbox_cannot_reach_is_said_not_guessed() -> None:
    stream = battery()
    stream.evidence.sink_unreachable = "the sandbox has no network to the host here: no tun"
    (frozen,) = [f for f in stream.findings() if f.check == "frozen-work"]
    assert frozen.level is Level.INFO and "no tun" in frozen.summary
