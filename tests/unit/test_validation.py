"""Configuration, environment variables, error types and subscription requests are validated as Lambda does."""

from __future__ import annotations

import pytest

from lambdarun.core.errors import sanitize_error_type
from lambdarun.core.outcomes import Status
from lambdarun.environment import env_vars
from lambdarun.telemetry import records as r
from lambdarun.telemetry import subscriptions as subs
from lambdarun.telemetry.records import Event, iso_time
from lambdarun.telemetry.text import report_line, text_line


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [
        ("Runtime.ImportModuleError", "Runtime.ImportModuleError"),
        ("Function.MyError", "Function.MyError"),
        ("Function.lower", "Function.Unknown"),
        ("KeyError", "Runtime.Unknown"),
        (None, "Runtime.Unknown"),
        ("xRuntime.Thing", "xRuntime.Thing"),  # RAPID's pattern is unanchored
    ],
)
def test_runtime_error_types_are_sanitised_as_rapid_does(sent: str | None, recorded: str) -> None:
    assert sanitize_error_type(sent) == recorded


def test_reserved_variables_are_refused_with_lambdas_message() -> None:
    with pytest.raises(ValueError, match="Reserved keys used in this request: AWS_REGION"):
        env_vars.validate_customer_env({"AWS_REGION": "x"})


def test_variable_names_must_start_with_a_letter() -> None:
    with pytest.raises(ValueError, match="_PRIVATE"):
        env_vars.validate_customer_env({"_PRIVATE": "x"})


def test_variables_over_4_kb_are_refused() -> None:
    with pytest.raises(ValueError, match="4096"):
        env_vars.validate_customer_env({"BIG": "x" * 5000})


def _platform() -> env_vars.Platform:
    return env_vars.Platform("fn", "$LATEST", 256, "eu-west-1", "127.0.0.1:9001", "2026/01/01/[$LATEST]ab",
                             "app.handler", "/var/task", "/var/runtime", "/var/lang/bin", "/opt")  # fmt: skip


def test_users_override_defaults_but_never_platform_variables() -> None:
    env = env_vars.runtime_env(_platform(), {"LANG": "C.UTF-8", "MY_VAR": "1"})
    assert env["LANG"] == "C.UTF-8" and env["MY_VAR"] == "1"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["_HANDLER"] == "app.handler"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/fn"


def test_extensions_do_not_see_runtime_only_variables() -> None:
    env = env_vars.extension_env(env_vars.runtime_env(_platform(), {"MY_VAR": "1"}))
    for hidden in ("_HANDLER", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "AWS_LAMBDA_LOG_GROUP_NAME",
                   "AWS_XRAY_DAEMON_ADDRESS", "_AWS_XRAY_DAEMON_PORT"):  # fmt: skip
        assert hidden not in env
    assert env["MY_VAR"] == "1" and env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"


def _subscribe(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "schemaVersion": "2022-12-13",
        "types": ["platform", "function"],
        "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:8080/x"},
    }
    body.update(overrides)
    return body


def test_a_valid_subscription_gets_the_default_buffering() -> None:
    subscription = subs.parse(subs.TELEMETRY, _subscribe())
    assert subscription.buffering == subs.Buffering(10_000, 262_144, 1_000)
    assert subscription.destination == subs.Destination("HTTP", 8080, "/x")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"schemaVersion": "2020-01-01"}, "schemaVersion"),
        ({"types": []}, "types"),
        ({"types": ["platform", "other"]}, "types"),
        ({"buffering": {"maxItems": 999}}, "buffering.maxItems"),
        ({"buffering": {"maxBytes": 2_000_000}}, "buffering.maxBytes"),
        ({"buffering": {"timeoutMs": 24}}, "buffering.timeoutMs"),
        ({"buffering": {"timeoutMs": "100"}}, "buffering.timeoutMs"),
        ({"destination": None}, "destination"),
        ({"destination": {"protocol": "UDP", "URI": "x"}}, "destination.protocol"),
        ({"destination": {"protocol": "HTTP", "URI": "https://sandbox.localdomain:80"}}, "destination.URI"),
        ({"destination": {"protocol": "HTTP", "URI": "http://example.com:80"}}, "destination.URI"),
        ({"destination": {"protocol": "HTTP", "URI": "http://sandbox:9001"}}, "9001"),
        ({"destination": {"protocol": "TCP"}}, "destination.port"),
    ],
)
def test_validation_errors_name_the_wrong_field(override: dict[str, object], field: str) -> None:
    with pytest.raises(subs.ValidationError, match=field.replace(".", r"\.")):
        subs.parse(subs.TELEMETRY, _subscribe(**override))


def test_the_logs_api_defaults_its_schema_and_carries_its_own_platform_events() -> None:
    subscription = subs.parse(subs.LOGS, {"types": ["platform"], "destination": {"protocol": "TCP", "port": 9999}})
    assert subscription.schema == "2020-08-15"
    assert subscription.wants(Event(r.End("r")))
    assert not subscription.wants(Event(r.InitStart(r.Phase.INIT, "python:3.12", "f", "$LATEST", "i", 128)))
    assert not subscription.wants(Event(r.RuntimeDone("r", Status.SUCCESS, 1.0)))


def test_time_has_millisecond_precision_in_utc() -> None:
    assert iso_time(0.0015) == "1970-01-01T00:00:00.001Z"


def test_report_line_reads_like_cloudwatch() -> None:
    record = r.Report("id", Status.TIMEOUT, duration_ms=3000.0, billed_duration_ms=3000, memory_size_mb=128,
                      max_memory_used_mb=40)  # fmt: skip
    assert report_line(record) == (
        "REPORT RequestId: id\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 128 MB\t"
        "Max Memory Used: 40 MB\tStatus: timeout\t"
    )


def test_failed_init_reads_as_init_report() -> None:
    record = r.InitReport(r.Phase.INIT, Status.ERROR, 150.789, "Runtime.ImportModuleError")
    assert text_line(Event(record)) == (
        "INIT_REPORT Init Duration: 150.79 ms\tPhase: init\tStatus: error\tError Type: Runtime.ImportModuleError"
    )
