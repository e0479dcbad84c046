"""Lambda's error types, the shapes of error bodies (SPEC 1.4, 4.3), and the refusal of illegal state moves."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

MAX_PAYLOAD = 6 * 1024 * 1024 + 100  # RAPID's MaxPayloadSize: 6 MiB plus 100 bytes (6,291,556)

# Platform error types (RAPID fatalerror.go; Sandbox.Timedout as production and the newer RAPID show it).
RUNTIME_EXIT = "Runtime.ExitError"
RUNTIME_UNKNOWN = "Runtime.Unknown"
RUNTIME_OUT_OF_MEMORY = "Runtime.OutOfMemory"
FUNCTION_UNKNOWN = "Function.Unknown"
INVALID_ENTRYPOINT = "Runtime.InvalidEntrypoint"
RESPONSE_TOO_LARGE = "Function.ResponseSizeTooLarge"
INVALID_RESPONSE_MODE = "Runtime.InvalidResponseModeHeader"
SANDBOX_TIMEDOUT = "Sandbox.Timedout"
EXTENSION_LAUNCH = "Extension.LaunchError"
EXTENSION_CRASH = "Extension.Crash"
EXTENSION_INIT = "Extension.InitError"
EXTENSION_EXIT = "Extension.ExitError"

_VALID_TYPE = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")  # unanchored, as RAPID matches it


def sanitize_error_type(header: str | None) -> str:
    """What the platform records for a runtime-supplied error type (RAPID GetValidRuntimeOrFunctionErrorType)."""
    value = header or ""
    if _VALID_TYPE.search(value):
        return value
    return FUNCTION_UNKNOWN if value.startswith("Function.") else RUNTIME_UNKNOWN


@dataclass(frozen=True)
class FunctionError:
    """What the invoker receives when the invoke failed: a payload with `X-Amz-Function-Error: Unhandled`."""

    error_type: str  # the platform's type, for REPORT and telemetry
    payload: bytes
    content_type: str = "application/json"

    @classmethod
    def platform(cls, error_type: str, text: str, request_id: str | None = None) -> FunctionError:
        """The default error JSON Lambda builds: `{"errorType", "errorMessage": "RequestId: … Error: …"}`."""
        message = f"RequestId: {request_id} Error: {text}" if request_id else f"Error: {text}"
        return cls(error_type, json.dumps({"errorType": error_type, "errorMessage": message}).encode())


def timeout_error(request_id: str, timeout_s: float) -> FunctionError:
    return FunctionError.platform(SANDBOX_TIMEDOUT, f"Task timed out after {timeout_s:.2f} seconds", request_id)


def response_too_large(size: int) -> FunctionError:
    body = {
        "errorType": RESPONSE_TOO_LARGE,
        "errorMessage": f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
        f"({MAX_PAYLOAD} bytes).",
    }
    return FunctionError(RESPONSE_TOO_LARGE, json.dumps(body).encode())


def runtime_exit_text(description: str) -> str:
    """`Runtime exited with error: exit status 1`, or the no-reason form for a clean exit."""
    if description == "exit status 0":
        return "Runtime exited without providing a reason"
    return f"Runtime exited with error: {description}"


class InvalidStateTransition(Exception):
    """A call that the runtime's or an extension's state machine does not allow now (RAPID's wording)."""

    def __init__(self, subject: str, current: str, target: str) -> None:
        if subject == "runtime":
            message = (
                f"State transition from {current} to {target} failed for runtime. "
                "Error: State transition is not allowed"
            )
        else:
            message = f"State transition from {current} to {target} failed for extension"
        super().__init__(message)
        self.subject = subject
        self.current = current
        self.target = target
