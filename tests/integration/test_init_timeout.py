"""Init is limited to 10 s on demand; the suppressed init that follows is bounded by the function timeout (SPEC 4.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdarun import Function

SLOW_IMPORT = "import time\ntime.sleep(30)\n\ndef handler(event, context):\n    return 'never'\n"


@pytest.mark.slow
def test_init_over_10_s_times_out_then_the_suppressed_init_times_out_with_the_function(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SLOW_IMPORT)
    with Function(tmp_path, "python3.11", "app.handler", timeout=2) as fn:
        result = fn.invoke({})

    reports = [e.record for e in result.events if e.type == "platform.initReport"]
    assert [(r["phase"], r["status"]) for r in reports] == [("init", "timeout"), ("invoke", "timeout")]
    # Durations the platform measured: the on-demand limit (not the 30 s the import wanted), then the function's.
    assert 10_000 <= reports[0]["metrics"]["durationMs"] < 20_000
    assert 2_000 <= reports[1]["metrics"]["durationMs"] < 10_000
    assert (
        "INIT_REPORT Init Duration: "
        in result.logs[[line.startswith("INIT_REPORT") for line in result.logs].index(True)]
    )
    assert any(line.endswith("\tPhase: init\tStatus: timeout") for line in result.logs)
    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {result.request_id} Error: Task timed out after 2.00 seconds",
    }
    assert result.status == "timeout"
