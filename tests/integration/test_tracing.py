"""Every invoke carries an X-Ray trace header, as on Lambda (SPEC 1.2): the caller's, or a fresh one with
`Sampled=0` (`Sampled=1` with active tracing). It reaches the runtime (`Lambda-Runtime-Trace-Id`, and from there
`_X_AMZN_TRACE_ID`) and the INVOKE event of extensions; a traced invoke (the caller's header, or active
tracing) also puts it on the platform's records as their tracing context."""

from __future__ import annotations

import re
from pathlib import Path

from _extension_support import PYTHON_EXT, build_layer, recorded_function

from lambdarun import Function

TRACE = "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1"
FRESH = r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=%d"
HANDLER = "import os\n\ndef handler(event, context):\n    return os.environ.get('_X_AMZN_TRACE_ID')\n"


def _contexts(events: list) -> list[dict]:  # type: ignore[type-arg]
    kinds = ("platform.start", "platform.runtimeDone", "platform.report")
    return [e.record["tracing"] for e in events if e.type in kinds and "tracing" in e.record]


def test_trace_header_reaches_the_runtime_and_the_platform_records(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(HANDLER)
    with Function(tmp_path, "python3.11", "app.handler") as fn:
        traced = fn.invoke({}, trace_id=TRACE)
    assert traced.json() == TRACE
    contexts = _contexts(traced.events)
    assert len(contexts) == 3
    assert {c["type"] for c in contexts} == {"X-Amzn-Trace-Id"} and {c["value"] for c in contexts} == {TRACE}
    assert len({c["spanId"] for c in contexts}) == 1 and len(contexts[0]["spanId"]) == 16


def test_every_invoke_without_a_trace_header_gets_a_fresh_one(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(HANDLER)
    with Function(tmp_path, "python3.11", "app.handler") as fn:
        results = [fn.invoke({}) for _ in range(3)]
    seen = [r.json() for r in results]
    assert all(re.fullmatch(FRESH % 0, value) for value in seen), seen
    assert len(set(seen)) == 3  # new for each invoke
    assert not any(_contexts(r.events) for r in results)  # unsampled: no tracing context on platform records


def test_active_tracing_samples_and_extensions_see_the_same_header(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"ext": PYTHON_EXT})
    with recorded_function([layer], tracing="Active") as rec:
        ids = [rec.fn.invoke({}).request_id for _ in range(2)]
        invokes = rec.received("ext", "INVOKE")
    values = [e["tracing"]["value"] for e in invokes]
    assert [e["requestId"] for e in invokes] == ids
    assert all(re.fullmatch(FRESH % 1, v) for v in values) and len(set(values)) == 2
    for request_id, value in zip(ids, values, strict=True):  # the platform's records carry the same header
        assert rec.one("platform.start", requestId=request_id).record["tracing"]["value"] == value
