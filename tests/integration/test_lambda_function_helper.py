"""The pytest plugin's `LambdaFunction` keeps following its environment's stream after a shutdown and a restart."""

from __future__ import annotations

from pathlib import Path

from lambdarun.telemetry import records as r
from lambdarun.testing import LambdaFunction

FUNCTION = Path(__file__).resolve().parent.parent / "fixtures" / "functions" / "provided_bash"


def test_events_keep_coming_after_a_shutdown_and_a_new_invoke(curl: None) -> None:
    fn = LambdaFunction(FUNCTION, "provided.al2023")
    try:
        first = fn.invoke({})
        fn.shutdown()
        second = fn.invoke({})  # a fresh environment
    finally:
        fn.close()
    starts = [e for e in fn.events if isinstance(e.data, r.InitStart)]
    assert len(starts) == 2
    reports = {e.data.request_id for e in fn.events if isinstance(e.data, r.Report)}
    assert {first.request_id, second.request_id} <= reports
    assert any(second.request_id in line for line in fn.log)
