"""An invoke's X-Ray trace header reaches the runtime and the platform's records carry its tracing context."""

from __future__ import annotations

from pathlib import Path

from lambdarun import Function

TRACE = "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1"
HANDLER = "import os\n\ndef handler(event, context):\n    return os.environ.get('_X_AMZN_TRACE_ID')\n"


def test_trace_header_reaches_the_runtime_and_the_platform_records(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(HANDLER)
    with Function(tmp_path, "python3.11", "app.handler") as fn:
        traced = fn.invoke({}, trace_id=TRACE)
        untraced = fn.invoke({})

    assert traced.json() == TRACE
    contexts = [e.record["tracing"] for e in traced.events if e.type in ("platform.start", "platform.runtimeDone",
                                                                           "platform.report")]  # fmt: skip
    assert len(contexts) == 3
    assert {c["type"] for c in contexts} == {"X-Amzn-Trace-Id"} and {c["value"] for c in contexts} == {TRACE}
    assert len({c["spanId"] for c in contexts}) == 1 and len(contexts[0]["spanId"]) == 16

    assert untraced.json() is None  # awslambdaric removes the variable when an invoke has no trace id
    assert not any("tracing" in e.record for e in untraced.events if isinstance(e.record, dict))
