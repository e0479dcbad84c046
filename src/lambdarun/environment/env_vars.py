"""The environment variables of the runtime and of extensions (SPEC 5.1, 2.6).

Precedence, lowest first, as RAPID builds the runtime environment: the user-overridable defaults, the customer's
variables, credentials, the runtime's own (`_HANDLER`, task root, log group …), then the platform's (region,
function name, Runtime API address …). Reserved names are refused from the customer, so the upper layers only
ever add.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

RESERVED = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
    # TZ: the 2023 docs call it unreserved, RAPID and the current docs treat it as reserved [UNCONFIRMED];
    # we follow the current docs. Move it to DEFAULTS to let users set it.
    "TZ",
})  # fmt: skip

CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

# Hidden from extensions (RAPID AgentExecEnv drops every `_`-prefixed key and these).
_NOT_FOR_EXTENSIONS = frozenset({
    "AWS_EXECUTION_ENV", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS", "LAMBDA_RUNTIME_DIR", "LAMBDA_TASK_ROOT",
})  # fmt: skip

_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]+$")
MAX_ENV_BYTES = 4096


def validate_customer_env(env: Mapping[str, str]) -> None:
    bad = sorted(k for k in env if not _KEY.match(k))
    if bad:
        raise ValueError(
            f"environment variable names must start with a letter and hold at least two letters, digits or "
            f"underscores: {', '.join(bad)}"
        )
    reserved = sorted(k for k in env if k in RESERVED)
    if reserved:
        # Lambda's own wording (InvalidParameterValueException from UpdateFunctionConfiguration).
        raise ValueError(
            "Lambda was unable to configure your environment variables because the environment variables you "
            "have provided contains reserved keys that are currently not supported for modification. "
            f"Reserved keys used in this request: {', '.join(reserved)}"
        )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
    if size > MAX_ENV_BYTES:
        raise ValueError(f"environment variables total {size} bytes, over Lambda's limit of {MAX_ENV_BYTES} bytes")


@dataclass(frozen=True)
class Platform:
    """What the platform knows about the function and this environment."""

    function_name: str
    function_version: str
    memory_mb: int
    region: str
    runtime_api: str
    log_stream: str
    handler: str | None
    task_root: str
    runtime_dir: str
    lang_bin: str
    opt: str
    initialization_type: str = "on-demand"


def defaults(p: Platform) -> dict[str, str]:
    return {
        "LANG": "en_US.UTF-8",
        "PATH": f"{p.lang_bin}:/usr/local/bin:/usr/bin/:/bin:{p.opt}/bin",
        "LD_LIBRARY_PATH": (
            f"/var/lang/lib:/lib64:/usr/lib64:{p.runtime_dir}:{p.runtime_dir}/lib:"
            f"{p.task_root}:{p.task_root}/lib:{p.opt}/lib"
        ),
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        # No X-Ray daemon runs here; loopback keeps SDK traffic on this machine.
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "_AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1",
        "_AWS_XRAY_DAEMON_PORT": "2000",
    }


def credentials() -> dict[str, str]:
    """The execution role's credentials: those of the caller's own environment when it has them."""
    return {k: os.environ[k] for k in CREDENTIALS if os.environ.get(k)}


def runtime_env(p: Platform, customer: Mapping[str, str]) -> dict[str, str]:
    env = defaults(p)
    env.update(customer)
    env.update(credentials())
    if p.handler is not None:
        env["_HANDLER"] = p.handler
    env["AWS_LAMBDA_LOG_GROUP_NAME"] = f"/aws/lambda/{p.function_name}"
    env["AWS_LAMBDA_LOG_STREAM_NAME"] = p.log_stream
    env["LAMBDA_TASK_ROOT"] = p.task_root
    env["LAMBDA_RUNTIME_DIR"] = p.runtime_dir
    env.update({
        "AWS_REGION": p.region,
        "AWS_DEFAULT_REGION": p.region,
        "AWS_LAMBDA_FUNCTION_NAME": p.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": p.function_version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(p.memory_mb),
        "AWS_LAMBDA_INITIALIZATION_TYPE": p.initialization_type,
        "AWS_LAMBDA_RUNTIME_API": p.runtime_api,
        "TZ": ":UTC",
    })  # fmt: skip
    return env


def extension_env(runtime: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in runtime.items() if not k.startswith("_") and k not in _NOT_FOR_EXTENSIONS}
