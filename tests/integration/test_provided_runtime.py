"""OS-only runtimes (`provided.al2023`): real bash bootstraps that drive the Runtime API with curl."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdarun import Function, InvokeResult

pytestmark = pytest.mark.usefixtures("curl")


def report_line(result: InvokeResult) -> str:
    [line] = [line for line in result.logs if line.startswith("REPORT ")]
    return line


@pytest.fixture(scope="module")
def bash_invokes(functions: Path) -> Iterator[list[InvokeResult]]:
    """Two invokes of the bash bootstrap in the code directory, in one environment."""
    with Function(code=functions / "provided_bash", runtime="provided.al2023", handler="function.handler") as fn:
        yield [fn.invoke({"n": 1}), fn.invoke({"n": 2})]


def test_bash_bootstrap_answers_with_its_response(bash_invokes: list[InvokeResult]) -> None:
    first, _ = bash_invokes

    assert first.function_error is None
    assert first.json() == {"echo": {"n": 1}, "handler": "function.handler"}


def test_bash_bootstrap_reads_the_request_id_header(bash_invokes: list[InvokeResult]) -> None:
    for result in bash_invokes:
        assert f"bash got {result.request_id}" in result.function_logs


def test_bash_bootstrap_keeps_looping_in_a_warm_environment(bash_invokes: list[InvokeResult]) -> None:
    first, second = bash_invokes

    assert second.json() == {"echo": {"n": 2}, "handler": "function.handler"}
    assert first.init_duration_ms is not None
    assert second.init_duration_ms is None
    assert not any(line.startswith("INIT_START") for line in second.logs)


def test_bash_bootstrap_init_start_names_the_runtime(bash_invokes: list[InvokeResult]) -> None:
    first, _ = bash_invokes

    assert re.match(r"INIT_START Runtime Version: provided:al2023", first.logs[0])


def test_bootstrap_from_a_layer_runs_at_opt_bootstrap(functions: Path, layers: Path) -> None:
    with Function(
        code=functions / "provided_handler_only",
        runtime="provided.al2023",
        handler="function.handler",
        layers=[layers / "provided_bootstrap"],
    ) as fn:
        result = fn.invoke({"n": 1})

    assert result.function_error is None, result.payload
    assert result.json() == {"from": "layer bootstrap", "event": {"n": 1}}


@pytest.fixture(scope="module")
def error_invoke(functions: Path) -> InvokeResult:
    with Function(code=functions / "provided_error", runtime="provided.al2023", handler="function.handler") as fn:
        return fn.invoke({})


def test_bootstrap_posting_to_error_gives_the_error_body(error_invoke: InvokeResult) -> None:
    assert error_invoke.function_error == "Unhandled"
    assert error_invoke.json() == {"errorMessage": "bash says no", "errorType": "BashFailure"}


def test_bootstrap_posting_to_error_report_has_no_status(error_invoke: InvokeResult) -> None:
    assert "Status:" not in report_line(error_invoke)


@pytest.fixture(scope="module")
def no_bootstrap(functions: Path) -> InvokeResult:
    with Function(
        code=functions / "provided_handler_only", runtime="provided.al2023", handler="function.handler"
    ) as fn:
        return fn.invoke({})


def test_missing_bootstrap_is_invalid_entrypoint(no_bootstrap: InvokeResult) -> None:
    assert no_bootstrap.function_error == "Unhandled"
    assert no_bootstrap.error_type == "Runtime.InvalidEntrypoint"
    body = no_bootstrap.json()
    assert body["errorType"] == "Runtime.InvalidEntrypoint"
    assert body["errorMessage"].startswith(f"RequestId: {no_bootstrap.request_id} Error: ")


def test_missing_bootstrap_fails_init_then_the_suppressed_init(no_bootstrap: InvokeResult) -> None:
    init_reports = [line for line in no_bootstrap.logs if line.startswith("INIT_REPORT ")]

    assert re.findall(r"\tPhase: (\w+)\t", "\n".join(init_reports)) == ["init", "invoke"]
    expected_end = "\tStatus: error\tError Type: Runtime.InvalidEntrypoint"
    assert all(line.endswith(expected_end) for line in init_reports)
