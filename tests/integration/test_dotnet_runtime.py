""".NET runtimes: lambdarun's C# runtime client on a real .NET runtime (SPEC 6.1-6.2), with handlers, a startup
hook and a wrapper compiled by `mcs` once per session (tests/fixtures/dotnet, _dotnet_support.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _dotnet_support import RUNTIME, DotnetBuild, build

from lambdarun import Function, InvokeResult

HANDLER = "Handlers::Fixtures.Probe::"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dotnet-hello"


@pytest.fixture(scope="session")
def dotnet_build(tmp_path_factory: pytest.TempPathFactory) -> DotnetBuild:
    return build(tmp_path_factory)


def function(dotnet_build: DotnetBuild, method: str, **options: Any) -> Function:
    options.setdefault("runtime", RUNTIME)
    options.setdefault("timeout", 10)
    return Function(code=dotnet_build.code, handler=HANDLER + method, layers=[dotnet_build.layer], **options)


def init_reports(result: InvokeResult) -> list[str]:
    return [line for line in result.logs if line.startswith("INIT_REPORT ")]


# -- a handler compiled against lambdarun's Amazon.Lambda.Core


@pytest.fixture(scope="module")
def context_probe(dotnet_build: DotnetBuild) -> InvokeResult:
    with function(dotnet_build, "Context", memory=256) as fn:
        return fn.invoke({"n": 1})


def test_handler_reads_the_request_id_and_remaining_time_from_its_context(context_probe: InvokeResult) -> None:
    answer = context_probe.json()

    assert answer["awsRequestId"] == context_probe.request_id
    assert 0 < answer["remainingMs"] <= 10_000
    assert answer["memoryLimitInMB"] == 256
    assert answer["invokedFunctionArn"].endswith(f":function:{answer['functionName']}")
    assert answer["event"] == '{"n": 1}'


def test_context_logger_line_is_one_record_with_time_request_id_and_level(context_probe: InvokeResult) -> None:
    records = [r for r in context_probe.function_logs if "context.Logger says hello" in r]

    assert len(records) == 1
    timestamp, request_id, level, message = records[0].rstrip("\n").split("\t")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", timestamp)
    assert (request_id, level) == (context_probe.request_id, "info")
    assert message == f"context.Logger says hello to {context_probe.request_id}"


def test_multi_line_records_stay_whole_through_the_framed_log_fd(dotnet_build: DotnetBuild) -> None:
    with function(dotnet_build, "Multiline") as fn:
        result = fn.invoke({})
    records = [r.rstrip("\n") for r in result.function_logs]

    assert any(r.endswith("\tinfo\tcontext line one\ncontext line two") for r in records)
    assert any(r.endswith("\tinfo\tconsole line one\nconsole line two") for r in records)
    # LambdaLogger.Log: time and request id, no level (as Lambda's client writes it)
    assert any(r.endswith(f"\t{result.request_id}\tstatic line one\nstatic line two") for r in records)
    assert any(r.endswith("\twarn\ta warning") for r in records)
    assert result.payload == b""  # a void handler answers with an empty payload


def test_dotnetcore31_writes_records_without_a_prefix(dotnet_build: DotnetBuild) -> None:
    with function(dotnet_build, "Context", runtime="dotnetcore3.1") as fn:
        result = fn.invoke({})

    assert f"context.Logger says hello to {result.request_id}" in [r.rstrip("\n") for r in result.function_logs]


def test_string_handlers_get_the_event_string_and_answer_json(dotnet_build: DotnetBuild) -> None:
    with function(dotnet_build, "Echo") as fn:
        plain = fn.invoke("world")
    with function(dotnet_build, "EchoAsync") as fn:
        awaited = fn.invoke("world")

    assert plain.json() == "hello world"
    assert awaited.json() == "async hello world"


# -- errors


@pytest.fixture(scope="module")
def thrown(dotnet_build: DotnetBuild) -> InvokeResult:
    with function(dotnet_build, "Throw") as fn:
        return fn.invoke({})


def test_throwing_handler_reports_the_exception_type_and_stack_trace(thrown: InvokeResult) -> None:
    body = thrown.json()

    assert thrown.function_error == "Unhandled"
    # Lambda's .NET client reports Type.Name (no namespace) [S-DOTNET ExceptionInfo]; the log has the full name.
    assert body["errorType"] == "HandlerFailure"
    assert body["errorMessage"] == "the handler gives up"
    assert any("Fixtures.Probe.Throw(Stream input)" in frame for frame in body["stackTrace"])


def test_throwing_handler_logs_the_full_exception_at_error_level(thrown: InvokeResult) -> None:
    records = [r for r in thrown.function_logs if "\tfail\t" in r]

    assert len(records) == 1
    assert "\tfail\tFixtures.HandlerFailure: the handler gives up\n   at Fixtures.Probe.Throw" in records[0]


def test_unknown_handler_method_fails_init_with_the_clients_error(dotnet_build: DotnetBuild) -> None:
    with function(dotnet_build, "NoSuchMethod") as fn:
        result = fn.invoke({})

    assert result.json()["errorType"] == "LambdaValidationException"
    assert "Found no methods matching method name 'NoSuchMethod'" in result.json()["errorMessage"]
    # The platform keeps only `Runtime.X`/`Function.X` types in its own records (SPEC 4.3).
    expected = "\tStatus: error\tError Type: Runtime.Unknown"
    assert [line.endswith(expected) for line in init_reports(result)] == [True, True]


def test_task_root_without_deps_json_fails_as_lambdas_bootstrap(dotnet_build: DotnetBuild, tmp_path: Path) -> None:
    shutil.copyfile(dotnet_build.code / "Handlers.dll", tmp_path / "Handlers.dll")
    with Function(code=tmp_path, runtime=RUNTIME, handler=HANDLER + "Echo") as fn:
        result = fn.invoke("x")

    message = "directory is missing the required .deps.json file."
    assert sum(message in line for line in result.function_logs) == 2  # the init, then the suppressed init
    assert result.json()["errorMessage"].endswith("Runtime exited with error: exit status 105")


# -- AWS_LAMBDA_EXEC_WRAPPER


@pytest.fixture(scope="module")
def wrapped(dotnet_build: DotnetBuild) -> InvokeResult:
    with function(dotnet_build, "Runtime", env={"AWS_LAMBDA_EXEC_WRAPPER": "/opt/probing.sh"}) as fn:
        return fn.invoke({})


@pytest.mark.usefixtures("sandboxed")
def test_wrapper_receives_the_dotnet_command_line(wrapped: InvokeResult) -> None:
    argv = [line.removeprefix("WRAPPER-ARGV ") for line in wrapped.function_logs if line.startswith("WRAPPER-ARGV ")]

    assert argv == ["/opt/probing.sh", "/var/lang/bin/dotnet", "exec",
                    "--depsfile", "/var/task/Handlers.deps.json",
                    "--runtimeconfig", "/var/task/Handlers.runtimeconfig.json",
                    "/var/runtime/Amazon.Lambda.RuntimeSupport.dll", "Handlers::Fixtures.Probe::Runtime"]  # fmt: skip


@pytest.mark.usefixtures("sandboxed")
def test_wrapper_adds_a_host_option_the_runtime_honours(wrapped: InvokeResult) -> None:
    answer = wrapped.json()

    assert "/opt" in answer["probingDirectories"].split(":")
    assert answer["commandLine"] == ["/var/runtime/Amazon.Lambda.RuntimeSupport.dll", HANDLER + "Runtime"]
    assert answer["executionEnv"] == "AWS_Lambda_dotnet8"


# -- DOTNET_STARTUP_HOOKS


@pytest.fixture(scope="module")
def hooked(dotnet_build: DotnetBuild) -> Iterator[list[InvokeResult]]:
    with function(dotnet_build, "HookEvents", env={"DOTNET_STARTUP_HOOKS": "/opt/ExtensionHook.dll"}) as fn:
        yield [fn.invoke({"n": n}) for n in range(3)]


@pytest.mark.usefixtures("sandboxed")
def test_startup_hook_extension_receives_one_event_per_invoke_on_its_own_thread(hooked: list[InvokeResult]) -> None:
    seen = [result.json() for result in hooked]

    events = [line.split(" thread=") for line in seen[-1]["events"]]
    assert [request_id for request_id, _ in events] == [result.request_id for result in hooked]
    assert all(thread != str(answer["handlerThread"]) for answer in seen for _, thread in events)
    assert [len(answer["events"]) for answer in seen] == [1, 2, 3]


@pytest.mark.usefixtures("sandboxed")
def test_startup_hook_runs_in_the_runtime_process_before_the_clients_main(hooked: list[InvokeResult]) -> None:
    # The hook saw _LAMBDA_TELEMETRY_LOG_FD, which the client's Main removes first thing; and it shares the
    # handler's AppDomain, so both run in one process.
    assert hooked[0].json()["hookRanBeforeMain"].isdigit()
    assert "EXTENSION\tName: dotnet-hook-ext\tState: Ready\tEvents: [INVOKE]" in hooked[0].logs


def failed_init(dotnet_build: DotnetBuild, hook: str) -> InvokeResult:
    with function(dotnet_build, "Echo", env={"DOTNET_STARTUP_HOOKS": hook}) as fn:
        return fn.invoke("x")


@pytest.mark.usefixtures("sandboxed")
def test_missing_hook_assembly_fails_init_with_the_dotnet_message(dotnet_build: DotnetBuild) -> None:
    result = failed_init(dotnet_build, "/opt/NoSuchHook.dll")

    assert sum("Startup hook assembly '/opt/NoSuchHook.dll' failed to load" in r for r in result.function_logs) == 2
    assert re.findall(r"\tPhase: (\w+)\tStatus: error\t", "\n".join(init_reports(result))) == ["init", "invoke"]
    assert result.error_type == "Runtime.ExitError"


@pytest.mark.usefixtures("sandboxed")
def test_throwing_hook_fails_init_with_its_exception_in_the_log(dotnet_build: DotnetBuild) -> None:
    result = failed_init(dotnet_build, "/opt/ThrowingHook.dll")

    expected = "System.InvalidOperationException: the startup hook refuses to start"
    assert sum(expected in r for r in result.function_logs) == 2
    assert all(line.endswith("\tStatus: error\tError Type: Runtime.ExitError") for line in init_reports(result))


# -- lambdarun runtimes


def test_runtimes_command_says_which_dotnet_runs_and_which_lambda_runs(dotnet_build: DotnetBuild) -> None:
    command = [sys.executable, "-m", "lambdarun", "runtimes"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout
    lines = {line.split()[0]: line for line in out.splitlines()}

    assert re.search(r"runs \.NET( Core)? \d+\.\d+\.\d+", lines["dotnet8"])
    assert lines["dotnet8"].endswith("Lambda runs .NET 8")
    assert lines["dotnetcore3.1"].endswith("Lambda runs .NET Core 3.1")


def test_readme_example_builds_with_mcs_and_runs(dotnet_build: DotnetBuild, tmp_path: Path) -> None:
    path = f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"  # build.sh's python3 is this one
    subprocess.run(["bash", str(EXAMPLE / "build.sh"), str(tmp_path)], check=True, capture_output=True, timeout=120,
                   env={**os.environ, "PATH": path})  # fmt: skip
    with Function(code=tmp_path, runtime=RUNTIME, handler="Hello::Example.Function::Handler") as fn:
        result = fn.invoke("world")

    assert re.fullmatch(r"Hello, world! \d s left\.", result.json())
    assert any(r.endswith(f"\tinfo\tgreeting world in request {result.request_id}\n") for r in result.function_logs)
