"""The sample telemetry extension's own tests, written with lambdarun's pytest plugin only (no conftest needed)."""

import socket
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent
LAYER = HERE / "layer"
CODE = {"python": HERE / "function-python", "nodejs": HERE / "function-node"}
HANDLER = {"python": "app.handler", "nodejs": "index.handler"}
EXTENSION = "telemetry-sample"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def sample(lambda_function):
    """The function with the extension's layer, for the runtime the marker gives."""
    return lambda_function(CODE, handler=HANDLER, layers=[LAYER], env={"TELEMETRY_SAMPLE_PORT": str(free_port())})


@pytest.mark.lambda_runtimes("python3.11", "nodejs20.x")
def test_each_invoke_is_summed_up_before_the_freeze(sample):
    cold = sample.invoke({"lines": 3})
    warm = sample.invoke({"lines": 5})
    for result, lines in ((cold, 3), (warm, 5)):
        assert result.status == "success"
        summary = [e.record for e in result.events if e.type == "extension" and result.request_id in str(e.record)]
        # The summary line is part of its own invoke: printed before the extension asked for the next event.
        assert summary == [f"[{EXTENSION}] invoke {result.request_id}: {lines} function lines, runtime success"]


@pytest.mark.lambda_runtimes("python3.11", "nodejs20.x")
def test_the_subscriber_is_sent_the_platform_events_and_the_function_lines(sample):
    result = sample.invoke({"lines": 2})
    received = sample.telemetry_received(EXTENSION)
    types = [e["type"] for e in received]
    assert "platform.initStart" in types and "platform.runtimeDone" in types
    assert {e["type"] for e in received} <= {"function"} | {t for t in types if t.startswith("platform.")}
    starts = [e["record"]["requestId"] for e in received if e["type"] == "platform.start"]
    assert starts == [result.request_id]
    assert sum(1 for e in received if e["type"] == "function" and "line " in str(e["record"])) == 2


def test_waiting_for_telemetry_costs_the_invoke_little(sample_python):
    result = sample_python.invoke({})
    # The extension waits for the runtimeDone batch (timeoutMs 25) before it is back in /event/next.
    assert result.report.post_runtime_extensions_ms is not None
    assert result.report.post_runtime_extensions_ms < 1000


def test_a_failing_function_is_reported_as_an_error(sample_python):
    result = sample_python.invoke({"fail": True})
    assert result.function_error == "Unhandled"
    # Two function records: the line it printed, and the runtime's record of the error.
    assert f"[{EXTENSION}] invoke {result.request_id}: 2 function lines, runtime error" in sample_python.log


def test_it_exits_on_shutdown(sample_python):
    sample_python.invoke({})
    outcome = sample_python.shutdown()
    assert outcome[EXTENSION].state == "Exited"
    assert outcome[EXTENSION].exit_status == 0
    assert outcome[EXTENSION].span.duration_ms < 2000


@pytest.fixture
def sample_python(lambda_function):
    return lambda_function(CODE["python"], runtime="python3.11", handler="app.handler", layers=[LAYER],
                           env={"TELEMETRY_SAMPLE_PORT": str(free_port())})
