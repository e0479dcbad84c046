"""The Extensions API's answers to bad calls, and its error endpoints, as a real extension process sees them.

`api_probe.py` makes the calls from inside the environment during Init and prints each answer; one environment
serves all the refusal tests. `init/error` and `exit/error` each get an environment of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _extension_support import (
    API_PROBE,
    PYTHON_EXT,
    Recorded,
    build_layer,
    options,
    recorded_function,
)

from lambdarun.telemetry import records as r


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Recorded, dict[str, Any]]]:
    """One environment with the probe and a plain extension; one ordinary invoke, then one whose handler tries
    to register an internal extension."""
    layer = build_layer(tmp_path_factory.mktemp("probe") / "layer", {"probe": API_PROBE, "plain": PYTHON_EXT})
    with recorded_function([layer]) as rec:
        first = rec.fn.invoke({})
        late = rec.fn.invoke({"op": "register", "name": "late-internal", "events": ["INVOKE"]})
    results = {}
    for line in rec.lines("probe", "RESULT"):
        label, answer = line.split(" ", 1)
        results[label] = json.loads(answer)
    results["first_invoke"] = first
    results["late_registration"] = late.json()
    yield rec, results


def _refused(answer: dict[str, Any], status: int, error_type: str) -> str:
    assert answer["status"] == status, answer
    assert answer["body"]["errorType"] == error_type, answer
    message: str = answer["body"]["errorMessage"]
    assert message
    return message


def test_probe_environment_still_runs_its_invokes(probed: tuple[Recorded, dict[str, Any]]) -> None:
    rec, results = probed
    assert results["first_invoke"].status == "success"
    assert [e["requestId"] for e in rec.received("probe", "INVOKE")] == [
        e.record["requestId"] for e in rec.of_type(r.START)
    ]
    assert rec.shutdown()["extensions"] == {"plain": "Exited", "probe": "Exited"}


def test_register_with_empty_name_is_refused(probed: tuple[Recorded, dict[str, Any]]) -> None:
    message = _refused(probed[1]["register_empty_name"], 403, "Extension.InvalidExtensionName")
    assert message == "Empty extension name"


def test_register_with_unknown_event_type_is_refused(probed: tuple[Recorded, dict[str, Any]]) -> None:
    _refused(probed[1]["register_bad_event_type"], 403, "Extension.InvalidEventType")


def test_register_with_invalid_json_is_refused(probed: tuple[Recorded, dict[str, Any]]) -> None:
    _refused(probed[1]["register_invalid_json"], 403, "InvalidRequestFormat")


def test_register_accepts_a_json_body_sent_as_form_urlencoded(
    probed: tuple[Recorded, dict[str, Any]],
) -> None:
    rec, results = probed
    answer = results["register_form_urlencoded_with_account_id"]
    assert answer["status"] == 200
    assert rec.one(r.EXTENSION, name="probe").record["events"] == ["INVOKE", "SHUTDOWN"]


def test_register_with_account_id_feature_returns_the_account_id(
    probed: tuple[Recorded, dict[str, Any]],
) -> None:
    rec, results = probed
    body = results["register_form_urlencoded_with_account_id"]["body"]
    assert body == {
        "functionName": "function",
        "functionVersion": "$LATEST",
        "handler": "app.handler",
        "accountId": "123456789012",
    }
    # Without the feature header, no accountId.
    (plain,) = rec.lines("plain", "REGISTER")
    status, plain_body = plain.split(" ", 1)
    assert status == "200"
    assert "accountId" not in json.loads(plain_body)


def test_register_twice_is_refused(probed: tuple[Recorded, dict[str, Any]]) -> None:
    _refused(probed[1]["register_twice"], 403, "Extension.InvalidExtensionState")


def test_next_without_identifier_is_refused(probed: tuple[Recorded, dict[str, Any]]) -> None:
    message = _refused(probed[1]["next_without_identifier"], 403, "Extension.MissingExtensionIdentifier")
    assert message == "Missing Lambda-Extension-Identifier header"


def test_next_with_a_non_uuid_identifier_is_refused(probed: tuple[Recorded, dict[str, Any]]) -> None:
    _refused(probed[1]["next_with_non_uuid"], 403, "Extension.InvalidExtensionIdentifier")


def test_next_with_an_unknown_identifier_is_refused(probed: tuple[Recorded, dict[str, Any]]) -> None:
    message = _refused(probed[1]["next_with_unknown_uuid"], 403, "Extension.UnknownExtensionIdentifier")
    assert message.startswith("Unknown extension ")


def test_init_error_without_error_type_header_is_refused(probed: tuple[Recorded, dict[str, Any]]) -> None:
    message = _refused(probed[1]["init_error_without_error_type"], 403, "Extension.MissingHeader")
    assert message == "Lambda-Extension-Function-Error-Type not found"


def test_exit_error_without_error_type_header_is_refused(probed: tuple[Recorded, dict[str, Any]]) -> None:
    _refused(probed[1]["exit_error_without_error_type"], 403, "Extension.MissingHeader")


def test_internal_registration_after_the_runtimes_first_next_is_refused(
    probed: tuple[Recorded, dict[str, Any]],
) -> None:
    answer = probed[1]["late_registration"]
    message = _refused(answer, 403, "Extension.RegistrationClosed")
    assert message == "Extension registration closed already"


# -- the error endpoints


def test_extension_init_error_fails_init_with_extension_init_error(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"unready": PYTHON_EXT})
    with recorded_function([layer], env=options("unready", init_error="Extension.ConfigMissing")) as rec:
        result = rec.fn.invoke({})
    assert set(rec.lines("unready", "INIT_ERROR")) == {'202 {"status":"OK"}'}
    assert result.function_error == "Unhandled"
    assert result.json()["errorType"] == "Extension.InitError"
    reports = rec.of_type(r.INIT_REPORT)
    assert [(e.record["phase"], e.record["status"], e.record.get("errorType")) for e in reports] == [
        ("init", "error", "Extension.InitError"),
        ("invoke", "error", "Extension.InitError"),
    ]
    assert result.report.status == "error"
    assert result.report.error_type == "Extension.InitError"


def test_extension_exit_error_fails_the_invoke_and_resets(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"breaking": PYTHON_EXT})
    with recorded_function([layer], env=options("breaking", exit_error_on_invoke=2)) as rec:
        first = rec.fn.invoke({})
        broken = rec.fn.invoke({})
        after = rec.fn.invoke({})
    assert rec.lines("breaking", "EXIT_ERROR") == ['202 {"status":"OK"}']
    assert first.status == "success"
    assert broken.status == "error"
    assert broken.report.error_type == "Extension.ExitError"
    assert any(line.endswith("Status: error\tError Type: Extension.ExitError\t") for line in broken.logs)
    # The reset: a failure shutdown right after the broken invoke's REPORT, then a fresh Init that works.
    report = rec.one(r.REPORT, requestId=broken.request_id)
    reset = rec.of_type(r.SHUTDOWN)[0]
    assert reset.record["shutdownReason"] == "failure"
    assert reset.record["extensions"] == {"breaking": "ExitError"}
    inits = rec.of_type(r.INIT_START)
    assert len(inits) == 2
    assert rec.index(report) < rec.index(reset) < rec.index(inits[1])
    assert after.status == "success"
    assert after.json() == {"requestId": after.request_id}
