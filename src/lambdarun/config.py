"""A function's configuration and its validation: what `lambdarun invoke` flags and `Function(...)` accept."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .environment.env_vars import validate_customer_env
from .environment.layers import MAX_LAYERS, check_package
from .runtimes.registry import get_runtime
from .sandbox.limits import Limits


class ConfigError(ValueError):
    """A configuration Lambda would refuse; the message says what to fix."""


TRACING_MODES = ("PassThrough", "Active")
NETWORKS = ("default", "none")
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class FunctionConfig:
    code: Path
    runtime: str
    handler: str | None = None
    layers: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    memory_mb: int = 128
    timeout_s: float = 3.0
    name: str = "function"
    version: str = "$LATEST"
    region: str = "us-east-1"
    account_id: str = "123456789012"
    init_timeout_s: float = 10.0  # on-demand Init limit (SPEC 4.1)
    tracing: str = "PassThrough"  # X-Ray tracing mode: Active samples every invoke (Sampled=1)
    ephemeral_storage_mb: int = 512  # the size of /tmp
    network: str = "default"  # outbound traffic as a non-VPC function has it, or "none"

    def __post_init__(self) -> None:
        self.code = Path(self.code)
        self.layers = [Path(layer) for layer in self.layers]
        self.validate()

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.name}"

    def validate(self) -> None:
        try:
            spec = get_runtime(self.runtime)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
        if spec.needs_handler and not self.handler:
            raise ConfigError(f"runtime {self.runtime} needs a handler, e.g. --handler app.handler")
        if self.handler is not None and not 0 < len(self.handler) <= 128:
            raise ConfigError("the handler must be 1 to 128 characters")
        if not _NAME.match(self.name):
            raise ConfigError(f"function name {self.name!r} must be 1-64 letters, digits, hyphens or underscores")
        try:
            Limits(self.memory_mb, self.ephemeral_storage_mb)  # memory and /tmp sizes: Lambda's ranges, checked there
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not 1 <= self.timeout_s <= 900:
            raise ConfigError(f"timeout {self.timeout_s} s is outside Lambda's range 1-900 s")
        if self.network not in NETWORKS:
            raise ConfigError(f"network {self.network!r} is not one of {', '.join(NETWORKS)}")
        if self.tracing not in TRACING_MODES:
            raise ConfigError(f"tracing mode {self.tracing!r} is not one of {', '.join(TRACING_MODES)}")
        if len(self.layers) > MAX_LAYERS:
            raise ConfigError(f"a function can use at most {MAX_LAYERS} layers, {len(self.layers)} were given")
        try:
            check_package(self.code, "code")
            for layer in self.layers:
                check_package(layer, "layer")
            validate_customer_env(self.env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
