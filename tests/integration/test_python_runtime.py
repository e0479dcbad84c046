"""The Python runtime end to end: lambdarun starts the real awslambdaric in the sandbox and invokes it.

Most tests use the `python_probe` fixture function, which does what the event's "op" asks. Tests that do not
depend on the environment's state share one warm environment (`probe`); the others start their own.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _log_support import assert_failed_init_then_suppressed_init, index_of

import lambdarun
from lambdarun import Function, InvokeResult, RuntimeUnavailable

MAX_PAYLOAD = 6 * 1024 * 1024 + 100  # 6,291,556 bytes (SPEC 1.3)
ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
Pair = tuple[InvokeResult, InvokeResult]  # two invokes of one function, in order


@pytest.fixture(scope="module")
def probe(functions: Path) -> Iterator[Function]:
    """One warm environment shared by the tests whose outcome does not depend on its state."""
    with Function(code=functions / "python_probe", runtime="python3.11", handler="app.handler", name="probe") as fn:
        yield fn


def probe_function(functions: Path, **options: Any) -> Function:
    options.setdefault("runtime", "python3.11")
    return Function(code=functions / "python_probe", handler="app.handler", **options)


def report_line(result: InvokeResult) -> str:
    [line] = [line for line in result.logs if line.startswith("REPORT ")]
    return line


# -- success and errors


def test_handler_return_value_is_the_payload(probe: Function) -> None:
    result = probe.invoke({"op": "echo", "value": [1, "two"]})

    assert result.function_error is None
    assert result.json()["event"] == {"op": "echo", "value": [1, "two"]}
    assert "Status:" not in report_line(result)


def test_payload_is_the_handler_result_as_json(probe: Function) -> None:
    result = probe.invoke({"op": "version"})

    assert result.content_type.startswith("application/json")
    assert json.loads(result.payload) == [3, 11]


def test_handler_exception_gives_error_payload(probe: Function) -> None:
    result = probe.invoke({"op": "raise"})

    assert result.function_error == "Unhandled"
    body = result.json()
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "boom"
    assert isinstance(body["stackTrace"], list)
    assert any("raise ValueError" in frame for frame in body["stackTrace"])
    assert result.error_type == "ValueError"


def test_handler_exception_report_has_no_status(probe: Function) -> None:
    result = probe.invoke({"op": "raise"})

    assert result.function_error == "Unhandled"
    assert "Status:" not in report_line(result)


def test_handler_exception_is_logged_by_the_runtime(probe: Function) -> None:
    result = probe.invoke({"op": "raise"})

    assert any(line.startswith("[ERROR] ValueError: boom") for line in result.function_logs)


@pytest.fixture(scope="module")
def import_failed(functions: Path) -> Iterator[Pair]:
    """Two invokes of a function whose module fails to import."""
    with Function(code=functions / "python_import_error", runtime="python3.11", handler="app.handler") as fn:
        first = fn.invoke({})
        second = fn.invoke({})
    yield first, second


def test_import_error_fails_init_then_retries_init_inside_the_invoke(import_failed: Pair) -> None:
    result, _ = import_failed

    assert_failed_init_then_suppressed_init(result)


def test_import_error_payload_is_the_init_error(import_failed: Pair) -> None:
    result, _ = import_failed

    assert result.function_error == "Unhandled"
    assert result.error_type == "Runtime.ImportModuleError"
    body = result.json()
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"].startswith("Unable to import module 'app': No module named")


def test_import_error_init_report_names_the_error_type(import_failed: Pair) -> None:
    result, _ = import_failed

    init_reports = [line for line in result.logs if line.startswith("INIT_REPORT ")]
    assert len(init_reports) == 2
    expected_end = "\tStatus: error\tError Type: Runtime.ImportModuleError"
    assert all(line.endswith(expected_end) for line in init_reports)


def test_import_error_report_has_status_error(import_failed: Pair) -> None:
    result, _ = import_failed

    assert "\tStatus: error\tError Type: Runtime.ImportModuleError\t" in report_line(result)


def test_import_error_next_invoke_starts_a_fresh_init(import_failed: Pair) -> None:
    _, second = import_failed

    reports = [e.record for e in second.events if e.type == "platform.initReport"]
    phases = [(record["phase"], record["status"]) for record in reports]
    assert phases == [("init", "error"), ("invoke", "error")]
    assert second.json()["errorType"] == "Runtime.ImportModuleError"


# -- timeouts and crashes


@pytest.fixture(scope="module")
def timed_out(functions: Path) -> Iterator[Pair]:
    """A 1-second function whose handler sleeps too long, then is invoked again with no sleep."""
    with probe_function(functions, timeout=1) as fn:
        first = fn.invoke({"op": "sleep", "seconds": 30})
        second = fn.invoke({"op": "echo"})
    yield first, second


def test_timeout_payload_is_sandbox_timedout(timed_out: Pair) -> None:
    result, _ = timed_out

    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {result.request_id} Error: Task timed out after 1.00 seconds",
    }


def test_timeout_report_has_status_timeout(timed_out: Pair) -> None:
    result, _ = timed_out

    assert result.status == "timeout"
    assert "\tStatus: timeout\t" in report_line(result)


def test_timeout_logs_task_timed_out_line(timed_out: Pair) -> None:
    result, _ = timed_out

    index_of(result.logs, f"{ISO_TIME} {result.request_id} Task timed out after 1.00 seconds$")


def test_timeout_handler_output_before_the_timeout_is_logged(timed_out: Pair) -> None:
    result, _ = timed_out

    assert "sleeping" in result.function_logs


def test_invoke_after_timeout_reinits_and_works(timed_out: Pair) -> None:
    _, result = timed_out

    assert result.function_error is None
    assert result.json() == {"calls": 1, "event": {"op": "echo"}}
    assert result.init_duration_ms is not None
    assert "\tInit Duration: " in report_line(result)


@pytest.fixture(scope="module")
def exited(functions: Path) -> Iterator[Pair]:
    """A handler that calls os._exit(1), then a second invoke of the same function."""
    with probe_function(functions) as fn:
        first = fn.invoke({"op": "exit"})
        second = fn.invoke({"op": "echo"})
    yield first, second


def test_runtime_exit_mid_invoke_is_runtime_exit_error(exited: Pair) -> None:
    result, _ = exited

    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {result.request_id} Error: Runtime exited with error: exit status 1",
    }


def test_runtime_exit_report_has_status_error(exited: Pair) -> None:
    result, _ = exited

    assert result.status == "error"
    assert "\tStatus: error\tError Type: Runtime.ExitError\t" in report_line(result)


def test_invoke_after_runtime_exit_reinits_and_works(exited: Pair) -> None:
    _, result = exited

    assert result.function_error is None
    assert result.json() == {"calls": 1, "event": {"op": "echo"}}
    assert [e.record["phase"] for e in result.events if e.type == "platform.initStart"] == ["init"]
    assert "\tInit Duration: " in report_line(result)


def test_pending_invoke_response_arrives_for_a_crashed_invoke(functions: Path) -> None:
    with probe_function(functions) as fn:
        pending = fn.start_invoke({"op": "exit"})
        result = pending.result()

        assert pending.response(timeout=0).payload == result.payload  # answered before the invoke ended


# -- warm reuse


def test_module_state_survives_between_warm_invokes(functions: Path) -> None:
    with probe_function(functions) as fn:
        results = [fn.invoke({"op": "echo"}) for _ in range(3)]

    assert [r.json()["calls"] for r in results] == [1, 2, 3]


def test_only_the_first_invoke_reports_init_duration(functions: Path) -> None:
    with probe_function(functions) as fn:
        results = [fn.invoke({"op": "echo"}) for _ in range(3)]

    assert [r.init_duration_ms is not None for r in results] == [True, False, False]
    assert ["\tInit Duration: " in report_line(r) for r in results] == [True, False, False]


# -- environment variables


@pytest.fixture(scope="module")
def seen_env(functions: Path) -> dict[str, str | None]:
    names = [
        "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_REGION", "AWS_DEFAULT_REGION", "_HANDLER", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
        "AWS_LAMBDA_RUNTIME_API", "AWS_EXECUTION_ENV", "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME", "MY_SETTING", "LANG",
    ]  # fmt: skip
    with probe_function(
        functions, name="env-probe", memory=256, env={"MY_SETTING": "from the user", "LANG": "C.UTF-8"}
    ) as fn:
        result: dict[str, str | None] = fn.invoke({"op": "env", "names": names}).json()
    return result


@pytest.mark.parametrize(("name", "expected"), [
    ("AWS_LAMBDA_FUNCTION_NAME", "env-probe"),
    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
    ("_HANDLER", "app.handler"),
    ("AWS_EXECUTION_ENV", "AWS_Lambda_python3.11"),
    ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
    ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/env-probe"),
])  # fmt: skip
def test_runtime_sees_platform_variable(seen_env: dict[str, str | None], name: str, expected: str) -> None:
    assert seen_env[name] == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("LAMBDA_TASK_ROOT", "/var/task"),
    ("LAMBDA_RUNTIME_DIR", "/var/runtime"),
])  # fmt: skip
@pytest.mark.usefixtures("sandboxed")
def test_runtime_sees_lambda_directories(seen_env: dict[str, str | None], name: str, expected: str) -> None:
    assert seen_env[name] == expected


def test_runtime_api_address_is_host_and_port(seen_env: dict[str, str | None]) -> None:
    assert re.fullmatch(r"127\.0\.0\.1:\d{1,5}", seen_env["AWS_LAMBDA_RUNTIME_API"] or "")


def test_user_variable_is_seen(seen_env: dict[str, str | None]) -> None:
    assert seen_env["MY_SETTING"] == "from the user"


def test_user_overrides_an_unreserved_default(seen_env: dict[str, str | None]) -> None:
    assert seen_env["LANG"] == "C.UTF-8"


def test_lang_defaults_to_en_us_utf8(probe: Function) -> None:
    assert probe.invoke({"op": "env", "names": ["LANG"]}).json() == {"LANG": "en_US.UTF-8"}


def test_user_cannot_set_a_reserved_variable(functions: Path) -> None:
    with pytest.raises(lambdarun.ConfigError, match="Reserved keys used in this request: AWS_REGION"):
        probe_function(functions, env={"AWS_REGION": "eu-west-1"})


# -- layers


def test_python_layer_directory_is_importable(functions: Path, layers: Path) -> None:
    with probe_function(functions, layers=[layers / "python_a"]) as fn:
        result = fn.invoke({"op": "import", "module": "mymod"})

    assert result.json() == "layer a"


def test_python_layer_zip_is_importable(functions: Path, layers: Path, tmp_path: Path) -> None:
    layer_zip = shutil.make_archive(str(tmp_path / "layer_b"), "zip", layers / "python_b")
    with probe_function(functions, layers=[layer_zip]) as fn:
        result = fn.invoke({"op": "import", "module": "mymod"})

    assert result.json() == "layer b"


@pytest.mark.parametrize(("order", "winner"), [
    (["python_a", "python_b"], "layer b"),
    (["python_b", "python_a"], "layer a"),
], ids=["a-then-b", "b-then-a"])  # fmt: skip
def test_later_layer_wins_for_the_same_file(functions: Path, layers: Path, order: list[str], winner: str) -> None:
    with probe_function(functions, layers=[layers / name for name in order]) as fn:
        result = fn.invoke({"op": "import", "module": "mymod"})

    assert result.json() == winner


@pytest.mark.usefixtures("sandboxed")
def test_layer_files_are_at_opt(functions: Path, layers: Path) -> None:
    with probe_function(functions, layers=[layers / "python_a"]) as fn:
        result = fn.invoke({"op": "read", "path": "/opt/note.txt"})

    assert result.function_error is None, result.payload
    assert result.json() == "layer file\n"


# -- the filesystem and network view


@pytest.mark.usefixtures("sandboxed")
def test_code_files_are_at_var_task(probe: Function) -> None:
    result = probe.invoke({"op": "read", "path": "/var/task/data.txt"})

    assert result.function_error is None, result.payload
    assert result.json() == "code file\n"


@pytest.mark.usefixtures("sandboxed")  # without the sandbox this would write to the host's /tmp
def test_tmp_is_writable(probe: Function, marker: str) -> None:
    result = probe.invoke({"op": "write_tmp", "name": marker})

    assert result.function_error is None, result.payload
    assert marker in result.json()


@pytest.mark.usefixtures("sandboxed")
def test_tmp_is_not_the_host_tmp(probe: Function, marker: str) -> None:
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="host-only-") as host_file:
        listing = probe.invoke({"op": "write_tmp", "name": marker}).json()

        assert Path(host_file.name).name not in listing
    assert not (Path("/tmp") / marker).exists()


@pytest.mark.usefixtures("sandboxed")
def test_sandbox_localdomain_resolves_to_loopback(probe: Function) -> None:
    result = probe.invoke({"op": "resolve", "host": "sandbox.localdomain"})

    assert result.json() == "127.0.0.1"


# -- the context object


def test_context_remaining_time_is_within_the_timeout(probe: Function) -> None:
    remaining = probe.invoke({"op": "context"}).json()["remaining_ms"]

    assert 0 < remaining <= 3000


def test_context_invoked_function_arn(probe: Function) -> None:
    arn = probe.invoke({"op": "context"}).json()["arn"]

    assert arn == probe.config.arn
    assert re.fullmatch(r"arn:aws:lambda:us-east-1:\d{12}:function:probe", arn)


def test_context_request_id_is_the_invoke_request_id(probe: Function) -> None:
    result = probe.invoke({"op": "context"})

    assert result.json()["request_id"] == result.request_id


# -- response size limit


def test_response_at_the_size_limit_is_delivered(probe: Function) -> None:
    result = probe.invoke({"op": "big", "size": MAX_PAYLOAD - 2})  # the JSON string adds two quotes

    assert result.function_error is None
    assert len(result.payload) == MAX_PAYLOAD


def test_response_over_the_size_limit_is_function_error(probe: Function) -> None:
    result = probe.invoke({"op": "big", "size": MAX_PAYLOAD - 1})

    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": f"Response payload size ({MAX_PAYLOAD + 1} bytes) exceeded maximum allowed payload "
        f"size ({MAX_PAYLOAD} bytes).",
    }


# -- other Python versions


@pytest.mark.parametrize("runtime", ["python3.12", "python3.13"])
def test_other_python_runtime_runs_the_handler(functions: Path, runtime: str) -> None:
    fn = probe_function(functions, runtime=runtime)
    try:
        fn.start()
    except RuntimeUnavailable as exc:
        pytest.skip(f"{runtime} is not available on this machine: {exc}")
    try:
        version = fn.invoke({"op": "version"})
        env = fn.invoke({"op": "env", "names": ["AWS_EXECUTION_ENV"]})
    finally:
        fn.close()

    assert version.json() == [int(part) for part in runtime.removeprefix("python").split(".")]
    assert env.json() == {"AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}"}


# -- nothing left behind


def test_close_leaves_no_process_and_no_scratch_dir(
    functions: Path, tmp_path: Path, marker: str, processes_marked: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with probe_function(functions, env={"TEST_MARKER": marker}) as fn:
        result = fn.invoke({"op": "background"})  # the handler also leaves a `sleep 300` running
        assert result.function_error is None, result.payload
        assert processes_marked(marker), "the function's processes should be visible while it is open"
        assert list(tmp_path.glob("lambdarun-*")), "the environment's scratch dir should exist while open"

    assert processes_marked(marker) == []
    assert list(tmp_path.glob("lambdarun-*")) == []
