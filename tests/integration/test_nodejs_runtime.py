"""The Node.js runtime end to end: lambdarun's runtime client (runtimes/nodejs/index.mjs) in the sandbox, invoked.

Most tests use the `probe_cjs` fixture function, whose `index.handler` does what the event's "op" asks; tests that
do not depend on the environment's state share one warm environment (`probe`). When the official aws-lambda-ric
is installed in lambdarun's cache, registry.py starts that client instead, and these tests exercise it; the few
behaviours where our client follows the newer managed runtime rather than aws-lambda-ric 3.x say so and skip.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from _log_support import assert_failed_init_then_suppressed_init

from lambdarun import Function, InvokeResult, RuntimeUnavailable
from lambdarun.runtimes import registry

NODE = Path(__file__).resolve().parents[1] / "fixtures" / "nodejs"
ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
Pair = tuple[InvokeResult, InvokeResult]

pytestmark = pytest.mark.usefixtures("sandboxed", "node20")


@pytest.fixture(scope="session")
def node20() -> None:
    hint = registry.get_runtime("nodejs20.x").install_hint()
    if hint is not None:
        pytest.skip(f"nodejs20.x is not available on this machine: {hint}")


def official_client() -> bool:
    """Whether registry.py starts AWS's aws-lambda-ric instead of our client."""
    return (registry.NODE_RIC_DIR / "package.json").exists()


def node_function(code: str = "probe_cjs", handler: str = "index.handler", **options: Any) -> Function:
    options.setdefault("runtime", "nodejs20.x")
    return Function(code=NODE / code, handler=handler, **options)


@pytest.fixture(scope="module")
def probe() -> Iterator[Function]:
    """One warm environment for the tests whose outcome does not depend on its state."""
    with node_function(layers=[NODE / "layer"], name="node-probe") as fn:
        yield fn


@pytest.fixture(scope="module")
def exit_status_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layer with /opt/exit_status.sh: a wrapper that runs the runtime as its child and prints its exit status."""
    layer = tmp_path_factory.mktemp("exit-status-layer")
    wrapper = layer / "exit_status.sh"
    wrapper.write_text('#!/bin/bash\n"$@"\nstatus=$?\necho "RUNTIME-EXIT-STATUS $status"\nexit $status\n')
    wrapper.chmod(0o755)
    return layer


def exit_statuses(*results: InvokeResult) -> list[int]:
    return [int(m.group(1)) for r in results for line in r.function_logs
            if (m := re.match(r"RUNTIME-EXIT-STATUS (\d+)", line))]  # fmt: skip


def log_record(result: InvokeResult, text: str) -> str:
    """The one function log record of `result` whose message contains `text`."""
    [record] = [record for record in result.function_logs if text in record]
    return record


# -- handler styles


def test_async_handler_return_value_is_the_payload(probe: Function) -> None:
    result = probe.invoke({"op": "echo", "value": [1, "two"]})

    assert result.function_error is None
    assert result.json() == {"event": {"op": "echo", "value": [1, "two"]}}


def test_async_handler_returning_undefined_gives_null(probe: Function) -> None:
    result = probe.invoke({"op": "undefined"})

    assert result.function_error is None
    assert result.payload == b"null"


def test_callback_handler_result_is_the_payload() -> None:
    with node_function(handler="index.callback") as fn:
        result = fn.invoke({"n": 1})

    assert result.function_error is None
    assert result.json() == {"via": "callback", "event": {"n": 1}}


def test_callback_handler_answers_without_waiting_for_empty_event_loop() -> None:
    with node_function(handler="index.callback") as fn:
        result = fn.invoke({"waits": False})

    assert result.json() == {"via": "callback", "event": {"waits": False}}


def test_callback_error_is_the_error_payload() -> None:
    with node_function(handler="index.callback") as fn:
        result = fn.invoke({"fail": True})

    assert result.function_error == "Unhandled"
    body = result.json()
    assert (body["errorType"], body["errorMessage"]) == ("Error", "callback failure")


def test_sync_handler_return_value_is_ignored_and_payload_is_null() -> None:
    # aws-lambda-ric: a non-async handler that never calls its callback answers null once the event loop is empty.
    with node_function(handler="index.sync") as fn:
        result = fn.invoke({"n": 1})

    assert result.function_error is None
    assert result.payload == b"null"


def test_nested_handler_path_after_the_first_dot_is_resolved() -> None:
    with node_function(handler="index.nested.deeper.handler") as fn:
        result = fn.invoke({})

    assert result.json() == "nested handler"


def test_handler_in_a_subdirectory_is_resolved_from_the_task_root() -> None:
    with node_function(handler="lib/inner.handler") as fn:
        result = fn.invoke({})

    assert result.json() == {"file": "/var/task/lib/inner.js"}


def test_async_handler_never_settling_fails_with_nodejs_exit() -> None:
    if official_client():
        pytest.skip("aws-lambda-ric 3.x answers null here; our client follows the managed runtime's NodeJsExit")
    with node_function(handler="index.neverSettles") as fn:
        result = fn.invoke({})

    assert result.function_error == "Unhandled"
    assert result.error_type == "Runtime.NodeJsExit"


# -- module kinds


def test_commonjs_module_is_loaded(probe: Function) -> None:
    result = probe.invoke({"op": "echo"})

    assert result.json() == {"event": {"op": "echo"}}


def test_mjs_module_is_loaded_as_es_module() -> None:
    with node_function(code="probe_esm", handler="app.handler") as fn:
        result = fn.invoke({"x": 1})

    assert result.json() == {"kind": "esm", "started": "esm-init", "event": {"x": 1},
                             "moduleUrl": "file:///var/task/app.mjs"}  # fmt: skip


def test_js_module_in_type_module_package_is_es_module() -> None:
    with node_function(code="esm_pkg", handler="index.handler") as fn:
        result = fn.invoke({})

    assert result.json() == {"kind": "esm-js", "isModule": True}


def test_cjs_module_in_type_module_package_is_commonjs() -> None:
    with node_function(code="esm_pkg", handler="legacy.handler") as fn:
        result = fn.invoke({})

    assert result.json() == {"kind": "cjs", "isCommonJs": True}


def test_layer_module_is_importable_from_opt_nodejs_node_modules(probe: Function) -> None:
    result = probe.invoke({"op": "layer"})

    assert result.json() == "hello from the layer (/opt/nodejs/node_modules/greeting/index.js)"


# -- handler errors


def test_handler_error_payload_has_type_message_and_trace(probe: Function) -> None:
    result = probe.invoke({"op": "raise"})

    assert result.function_error == "Unhandled"
    body = result.json()
    assert set(body) == {"errorType", "errorMessage", "trace"}
    assert (body["errorType"], body["errorMessage"]) == ("TypeError", "boom")
    assert body["trace"][0] == "TypeError: boom"
    assert any("/var/task/index.js" in frame for frame in body["trace"])
    assert result.error_type == "TypeError"


def test_rejected_promise_is_the_error_payload(probe: Function) -> None:
    result = probe.invoke({"op": "reject"})

    body = result.json()
    assert (body["errorType"], body["errorMessage"]) == ("RangeError", "async boom")


def test_handler_error_is_logged_as_invoke_error(probe: Function) -> None:
    result = probe.invoke({"op": "raise"})

    record = log_record(result, "Invoke Error")
    prefix = f"{ISO_TIME}\t{result.request_id}\tERROR\tInvoke Error \t"
    assert re.match(prefix, record)
    logged = json.loads(re.sub(prefix, "", record))
    assert (logged["errorType"], logged["errorMessage"]) == ("TypeError", "boom")
    assert logged["stack"][0] == "TypeError: boom"


def test_unserializable_result_is_an_error(probe: Function) -> None:
    result = probe.invoke({"op": "circular"})

    assert result.function_error == "Unhandled"
    assert result.json()["errorMessage"] == "Unable to stringify response body"


# -- init errors: reported through /init/error, then init is retried inside the invoke (suppressed init)


@pytest.fixture(scope="module")
def import_failed() -> Iterator[Pair]:
    with node_function(code="probe_cjs", handler="nothere.handler") as fn:
        first = fn.invoke({})
        second = fn.invoke({})
    yield first, second


def test_missing_module_fails_init_then_retries_init_inside_the_invoke(import_failed: Pair) -> None:
    result, _ = import_failed

    assert_failed_init_then_suppressed_init(result)


def test_missing_module_payload_is_import_module_error(import_failed: Pair) -> None:
    result, _ = import_failed

    assert result.function_error == "Unhandled"
    assert result.error_type == "Runtime.ImportModuleError"
    body = result.json()
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"].startswith("Error: Cannot find module 'nothere'\nRequire stack:\n")
    assert body["trace"][0] == "Runtime.ImportModuleError: Error: Cannot find module 'nothere'"


def test_missing_module_init_reports_name_the_error_type(import_failed: Pair) -> None:
    result, _ = import_failed

    init_reports = [line for line in result.logs if line.startswith("INIT_REPORT ")]
    assert len(init_reports) == 2
    assert all(line.endswith("\tStatus: error\tError Type: Runtime.ImportModuleError") for line in init_reports)


def test_missing_module_is_logged_as_uncaught_exception_without_request_id(import_failed: Pair) -> None:
    result, _ = import_failed

    records = [r for r in result.function_logs if "Uncaught Exception" in r]
    assert len(records) == 2  # the failed init, then the suppressed init
    assert all(re.match(f"{ISO_TIME}\tundefined\tERROR\tUncaught Exception \t{{", r) for r in records)


def test_missing_module_fails_every_invoke(import_failed: Pair) -> None:
    _, second = import_failed

    assert second.error_type == "Runtime.ImportModuleError"


def test_missing_dependency_of_the_module_is_import_module_error() -> None:
    with node_function(code="import_error", handler="index.handler") as fn:
        result = fn.invoke({})

    assert result.error_type == "Runtime.ImportModuleError"
    assert result.json()["errorMessage"].startswith("Error: Cannot find module 'no-such-package-anywhere'")


@pytest.fixture(scope="module")
def handler_missing() -> InvokeResult:
    with node_function(code="missing_handler", handler="index.handler") as fn:
        return fn.invoke({})


def test_missing_handler_payload_is_handler_not_found(handler_missing: InvokeResult) -> None:
    body = handler_missing.json()
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "index.handler is undefined or not exported"


def test_missing_handler_fails_init_then_the_suppressed_init(handler_missing: InvokeResult) -> None:
    init_reports = [line for line in handler_missing.logs if line.startswith("INIT_REPORT ")]
    assert re.findall(r"\tPhase: (\w+)\t", "\n".join(init_reports)) == ["init", "invoke"]
    assert all(line.endswith("\tError Type: Runtime.HandlerNotFound") for line in init_reports)


def test_export_that_is_not_a_function_is_handler_not_found() -> None:
    with node_function(handler="index.notAFunction") as fn:
        result = fn.invoke({})

    assert result.json()["errorMessage"] == "index.notAFunction is not a function"


def test_syntax_error_is_user_code_syntax_error() -> None:
    with node_function(code="syntax_error", handler="index.handler") as fn:
        result = fn.invoke({})

    assert result.error_type == "Runtime.UserCodeSyntaxError"
    assert result.json()["errorMessage"].startswith("SyntaxError: ")


def test_handler_without_a_dot_is_malformed_handler_name() -> None:
    with node_function(handler="index") as fn:
        result = fn.invoke({})

    assert result.error_type == "Runtime.MalformedHandlerName"
    assert result.json()["errorMessage"] == "Bad handler"


# -- console logging


@pytest.fixture(scope="module")
def logged(probe: Function) -> InvokeResult:
    return probe.invoke({"op": "log"})


def test_console_log_line_has_time_request_id_and_level(logged: InvokeResult) -> None:
    record = log_record(logged, "hello from")

    assert re.fullmatch(f"{ISO_TIME}\t{logged.request_id}\tINFO\thello from console.log {{ n: 1 }}\n?", record)


@pytest.mark.parametrize(("text", "level"),
                         [("info line", "INFO"), ("warn line", "WARN"), ("error line", "ERROR"),
                          ("debug line", "DEBUG")])  # fmt: skip
def test_console_methods_log_at_their_level(logged: InvokeResult, text: str, level: str) -> None:
    record = log_record(logged, text)

    assert re.fullmatch(f"{ISO_TIME}\t{logged.request_id}\t{level}\t{text}\n?", record)


def test_multi_line_message_stays_one_record(logged: InvokeResult) -> None:
    record = log_record(logged, "first")

    # As written (framed through _LAMBDA_TELEMETRY_LOG_FD), or with "\r" for "\n" when written to stdout.
    assert re.fullmatch(f"{ISO_TIME}\t{logged.request_id}\tINFO\tfirst[\n\r]second\n?", record)


def test_log_level_setting_drops_lower_levels() -> None:
    with node_function(env={"AWS_LAMBDA_LOG_LEVEL": "WARN"}) as fn:
        result = fn.invoke({"op": "log"})

    levels = [record.split("\t")[2] for record in result.function_logs if re.match(ISO_TIME, record)]
    assert levels == ["WARN", "ERROR"]


def test_json_log_format_writes_json_records() -> None:
    with node_function(env={"AWS_LAMBDA_LOG_FORMAT": "JSON"}) as fn:
        result = fn.invoke({"op": "log"})

    # The platform parses JSON records: the event's record is the object itself (SPEC 3.5).
    records = [e.record for e in result.events if e.type == "function" and isinstance(e.record, dict)]
    [record] = [r for r in records if r.get("message") == "warn line"]
    assert record == {"timestamp": record["timestamp"], "level": "WARN", "requestId": result.request_id,
                      "message": "warn line"}  # fmt: skip
    assert re.fullmatch(ISO_TIME, record["timestamp"])


# -- context and environment


@pytest.fixture(scope="module")
def context_seen(probe: Function) -> InvokeResult:
    return probe.invoke({"op": "context"})


def test_context_carries_the_request_id(context_seen: InvokeResult) -> None:
    assert context_seen.json()["awsRequestId"] == context_seen.request_id


def test_context_describes_the_function(context_seen: InvokeResult) -> None:
    context = context_seen.json()

    assert context["functionName"] == "node-probe"
    assert context["functionVersion"] == "$LATEST"
    assert context["memoryLimitInMB"] == "128"  # a string, as aws-lambda-ric reads it from the environment
    assert re.fullmatch(r"arn:aws:lambda:[a-z0-9-]+:\d{12}:function:node-probe", context["invokedFunctionArn"])
    assert context["logGroupName"] == "/aws/lambda/node-probe"
    assert context["callbackWaitsForEmptyEventLoop"] is True


def test_remaining_time_counts_down_from_the_timeout(context_seen: InvokeResult) -> None:
    remaining = context_seen.json()["remaining"]

    assert isinstance(remaining, int)
    assert 0 < remaining <= 3000


def test_client_context_and_identity_are_parsed_from_the_invoke() -> None:
    client_context = {"custom": {"k": "v"}, "env": {"platform": "test"}}
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    with node_function() as fn:
        result = fn.invoke({"op": "context"}, client_context=json.dumps(client_context),
                           cognito_identity=json.dumps(identity))  # fmt: skip

    assert result.json()["clientContext"] == client_context
    assert result.json()["identity"] == identity


def test_trace_id_env_follows_each_invoke() -> None:
    trace = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
    names = {"op": "env", "names": ["_X_AMZN_TRACE_ID"]}
    with node_function() as fn:
        traced = fn.invoke(names, trace_id=trace)
        untraced = fn.invoke(names)

    assert traced.json() == {"_X_AMZN_TRACE_ID": trace}
    # Lambda sends a fresh header on every invoke, Sampled=0 without active tracing (SPEC 1.2).
    fresh = untraced.json()["_X_AMZN_TRACE_ID"]
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", fresh)


def test_execution_env_names_the_runtime(probe: Function) -> None:
    result = probe.invoke({"op": "env", "names": ["AWS_EXECUTION_ENV"]})

    assert result.json() == {"AWS_EXECUTION_ENV": "AWS_Lambda_nodejs20.x"}


def test_node_path_defaults_to_the_layer_paths(probe: Function) -> None:
    result = probe.invoke({"op": "env", "names": ["NODE_PATH"]})

    assert result.json()["NODE_PATH"].split(":")[:2] == ["/opt/nodejs/node20/node_modules",
                                                          "/opt/nodejs/node_modules"]  # fmt: skip


def test_node_starts_with_memory_flags_and_runtime_entry(probe: Function) -> None:
    result = probe.invoke({"op": "argv"})

    assert result.json()["execArgv"] == ["--expose-gc", "--max-http-header-size", "81920",
                                         "--max-semi-space-size=6", "--max-old-space-size=116"]  # fmt: skip
    assert result.json()["argv"][1:] == ["/var/runtime/index.mjs"]


# -- crashes during an invoke: the error is posted for that invoke, then the runtime exits


@pytest.fixture(scope="module")
def uncaught(exit_status_layer: Path) -> Iterator[Pair]:
    """An exception thrown from a timer during an invoke, then a second invoke; the runtime under a wrapper that
    prints its exit status."""
    with node_function(layers=[exit_status_layer], env={"AWS_LAMBDA_EXEC_WRAPPER": "/opt/exit_status.sh"}) as fn:
        first = fn.invoke({"op": "uncaught"})
        second = fn.invoke({"op": "echo"})
    yield first, second


def test_uncaught_exception_is_the_invoke_error(uncaught: Pair) -> None:
    result, _ = uncaught

    assert result.function_error == "Unhandled"
    body = result.json()
    assert (body["errorType"], body["errorMessage"]) == ("Error", "thrown from a timer")


def test_uncaught_exception_is_logged(uncaught: Pair) -> None:
    result, _ = uncaught

    assert re.match(f"{ISO_TIME}\t{result.request_id}\tERROR\tUncaught Exception \t", log_record(result, "Uncaught"))


def test_uncaught_exception_exits_the_runtime_with_129(uncaught: Pair) -> None:
    assert exit_statuses(*uncaught)[:1] == [129]


def test_invoke_after_uncaught_exception_starts_a_new_runtime(uncaught: Pair) -> None:
    _, result = uncaught

    assert result.json() == {"event": {"op": "echo"}}
    assert any(line.startswith("INIT_START ") for line in result.logs)


@pytest.fixture(scope="module")
def rejected(exit_status_layer: Path) -> Iterator[Pair]:
    """A promise rejected with nobody to catch it during an invoke, then a second invoke."""
    with node_function(layers=[exit_status_layer], env={"AWS_LAMBDA_EXEC_WRAPPER": "/opt/exit_status.sh"}) as fn:
        first = fn.invoke({"op": "unhandled"})
        second = fn.invoke({"op": "echo"})
    yield first, second


def test_unhandled_rejection_is_the_invoke_error(rejected: Pair) -> None:
    body = rejected[0].json()

    assert body["errorType"] == "Runtime.UnhandledPromiseRejection"
    assert body["errorMessage"] == "Error: nobody catches me"


def test_unhandled_rejection_exits_the_runtime_with_128(rejected: Pair) -> None:
    assert exit_statuses(*rejected)[:1] == [128]


# -- the client's side of the Runtime API, against a stub server (what lambdarun's answers do not show)


class StubRuntimeApi:
    """A Runtime API that hands out the given events, records every request and answers posts with 202."""

    def __init__(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.events = list(events)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.posted = threading.Event()
        self.stop = threading.Event()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def read_chunked(self, headers: dict[str, str]) -> bytes:
                """The chunked body; its trailers are added to `headers` as `trailer:<name>`."""
                body = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                while (line := self.rfile.readline().strip()) != b"":
                    name, _, value = line.decode().partition(":")
                    headers[f"trailer:{name.strip().lower()}"] = value.strip()
                return body

            def do_GET(self) -> None:
                stub.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b""))
                if not stub.events:
                    stub.stop.wait(30)
                    self.send_error(500)
                    return
                request_id, event = stub.events.pop(0)
                body = json.dumps(event).encode()
                self.send_response(200)
                headers = {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30000),
                    "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:f",
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                }
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                headers["trailer"] = ", ".join(self.headers.get_all("Trailer") or [])  # may be repeated
                if headers.get("transfer-encoding") == "chunked":
                    body = self.read_chunked(headers)
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                stub.requests.append(("POST", self.path, headers, body))
                answer = b'{"status":"OK"}'
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                stub.posted.set()

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the client is killed mid-request at the end of each test

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def posts(self) -> list[tuple[str, dict[str, str], bytes]]:
        return [(path, headers, body) for method, path, headers, body in self.requests if method == "POST"]

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def run_our_client(stub: StubRuntimeApi, code: str, handler: str) -> subprocess.Popen[bytes]:
    """Our runtime client, started directly (no sandbox) against the stub."""
    entry = resources.files("lambdarun.runtimes").joinpath("nodejs", "index.mjs")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "_HANDLER": handler,
           "LAMBDA_TASK_ROOT": str(NODE / code), "AWS_LAMBDA_RUNTIME_API": stub.address}  # fmt: skip
    node = registry.get_runtime("nodejs20.x").locate()
    assert node is not None
    return subprocess.Popen([node, str(entry)], env=env, cwd=NODE / code, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip


@pytest.fixture
def stub_api() -> Iterator[Any]:
    stubs: list[StubRuntimeApi] = []

    def make(events: list[tuple[str, dict[str, Any]]]) -> StubRuntimeApi:
        stubs.append(StubRuntimeApi(events))
        return stubs[-1]

    yield make
    for stub in stubs:
        stub.close()


def test_init_error_is_posted_with_its_type_header_then_exits_129(stub_api: Any) -> None:
    stub = stub_api([])
    client = run_our_client(stub, "probe_cjs", "nothere.handler")
    status = client.wait(timeout=30)

    [(path, headers, body)] = stub.posts()
    assert path == "/2018-06-01/runtime/init/error"
    assert headers["lambda-runtime-function-error-type"] == "Runtime.ImportModuleError"
    assert headers["content-type"] == "application/json"
    assert set(json.loads(body)) == {"errorType", "errorMessage", "trace"}
    assert status == 129


def test_invoke_error_is_posted_without_an_error_type_header(stub_api: Any) -> None:
    stub = stub_api([("req-1", {"op": "raise"})])
    path, headers, body = posted_by(stub, run_our_client(stub, "probe_cjs", "index.handler"))

    assert path == "/2018-06-01/runtime/invocation/req-1/error"
    assert "lambda-runtime-function-error-type" not in headers  # the type is in the body only (SPEC 10.4)
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["errorType"] == "TypeError"


def test_response_is_posted_as_json(stub_api: Any) -> None:
    stub = stub_api([("req-1", {"op": "echo"})])
    path, headers, body = posted_by(stub, run_our_client(stub, "probe_cjs", "index.handler"))

    assert path == "/2018-06-01/runtime/invocation/req-1/response"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"event": {"op": "echo"}}


def posted_by(stub: StubRuntimeApi, client: subprocess.Popen[bytes]) -> tuple[str, dict[str, str], bytes]:
    """The one post of the client's first invoke (the client is stopped once it is in)."""
    try:
        assert stub.posted.wait(30)
    finally:
        client.kill()
        client.wait()
    [post] = stub.posts()
    return post


def test_streaming_handler_posts_a_chunked_streaming_response(stub_api: Any) -> None:
    stub = stub_api([("req-1", {})])
    path, headers, body = posted_by(stub, run_our_client(stub, "streaming", "index.handler"))

    assert path == "/2018-06-01/runtime/invocation/req-1/response"
    assert headers["lambda-runtime-function-response-mode"] == "streaming"
    assert headers["content-type"] == "text/plain"
    assert "Lambda-Runtime-Function-Error-Type" in headers["trailer"]
    assert body == b"one,two,three"


def test_streaming_handler_error_is_sent_in_the_trailers(stub_api: Any) -> None:
    stub = stub_api([("req-1", {})])
    _, headers, body = posted_by(stub, run_our_client(stub, "streaming", "index.failing"))

    assert body == b"partial"
    assert headers["trailer:lambda-runtime-function-error-type"] == "Error"
    error = json.loads(base64.b64decode(headers["trailer:lambda-runtime-function-error-body"]))
    assert (error["errorType"], error["errorMessage"]) == ("Error", "stream broke")


def test_http_response_stream_sends_the_prelude_first(stub_api: Any) -> None:
    stub = stub_api([("req-1", {})])
    _, headers, body = posted_by(stub, run_our_client(stub, "streaming", "index.httpResponse"))

    assert headers["content-type"] == "application/vnd.awslambda.http-integration-response"
    prelude, _, rest = body.partition(b"\0" * 8)
    assert json.loads(prelude) == {"statusCode": 201, "headers": {"x-a": "b"}}
    assert rest == b"body"


# -- response streaming through lambdarun


def test_streaming_handler_chunks_are_the_buffered_payload() -> None:
    with node_function(code="streaming", handler="index.handler") as fn:
        result = fn.invoke({})

    assert result.function_error is None
    assert result.payload == b"one,two,three"


# -- other Node.js majors


@pytest.mark.parametrize("runtime", ["nodejs18.x", "nodejs22.x"])
def test_missing_node_major_raises_runtime_unavailable(runtime: str) -> None:
    major = runtime.removeprefix("nodejs").removesuffix(".x")
    if registry.get_runtime(runtime).install_hint() is None:
        pytest.skip(f"Node.js {major} is installed here")
    fn = node_function(runtime=runtime)

    with pytest.raises(RuntimeUnavailable, match=f"needs Node.js {major}"):
        fn.start()
    fn.close()


@pytest.mark.parametrize("runtime", ["nodejs18.x", "nodejs22.x"])
def test_other_node_major_runs_the_handler(runtime: str) -> None:
    hint = registry.get_runtime(runtime).install_hint()
    if hint is not None:
        pytest.skip(f"{runtime} is not available on this machine: {hint}")
    with node_function(runtime=runtime) as fn:
        result = fn.invoke({"op": "env", "names": ["AWS_EXECUTION_ENV"]})

    assert result.json() == {"AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}"}
