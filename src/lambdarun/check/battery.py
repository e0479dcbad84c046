"""The standard battery check-extension runs against a layer: a small built-in function of the runtime's family,
invoked cold, warm, with an error, with heavy logging, into a timeout (and the reset after it), then shut down.

Everything it learns is the environment's event stream, the sink's requests and which scenario each invoke was.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..function import Function
from ..sandbox import network
from ..sandbox.sandbox import plain_reason
from ..sandbox.spec import HOST_GATEWAY_NAME
from ..telemetry.records import Event
from .sink import Sink, SinkRequest

FUNCTIONS = Path(__file__).resolve().parent / "functions"
HANDLERS = {"python": "app.handler", "nodejs": "index.handler"}
SINK_VARIABLE = "LAMBDARUN_CHECK_SINK"
TIMEOUT_S = 1.0  # the function timeout: the timeout scenario costs this much
PAUSE_S = 0.1  # between invokes: the environment stays frozen that long
LOG_LINES = 30_000  # heavy logging: ~3 MB, more than a subscriber's buffer holds at the default maxBytes

OK: dict[str, Any] = {"op": "ok"}
SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("cold", OK),
    *[("warm", OK)] * 4,
    ("error", {"op": "error"}),
    ("heavy logging", {"op": "log", "lines": LOG_LINES}),
    ("warm", OK),
    ("timeout", {"op": "sleep", "seconds": TIMEOUT_S * 3}),
    ("after the timeout", OK),
]


class UnsupportedRuntime(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    scenario: str
    request_id: str
    function_error: str | None


@dataclass
class Evidence:
    layer: Path
    runtime: str
    extensions: list[str]  # the external extensions the layer holds
    sink_url: str
    sink_unreachable: str | None = None  # why the function's processes cannot reach the sink, if they cannot
    steps: list[Step] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    sink: list[SinkRequest] = field(default_factory=list)

    def scenario_of(self, request_id: str) -> str:
        return next((s.scenario for s in self.steps if s.request_id == request_id), "?")


def sink_host() -> tuple[str | None, str | None]:
    """How the function's processes reach the host's loopback, where the sink listens; or why they cannot."""
    if plain_reason() is not None:
        return "127.0.0.1", None  # plain processes share the host's network
    problem = network.unavailable()
    if problem is None:
        return HOST_GATEWAY_NAME, None
    return None, f"the sandbox has no network to the host here: {problem}"


def family(runtime: str) -> str:
    return "".join(c for c in runtime.split(".")[0] if c.isalpha())


def layer_extensions(layer: Path) -> list[str]:
    if layer.is_dir():
        folder = layer / "extensions"
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    with zipfile.ZipFile(layer) as archive:
        names = [n.split("/", 1)[1] for n in archive.namelist() if n.startswith("extensions/")]
    return sorted(n for n in names if n and "/" not in n)


def run_battery(layer: Path, runtime: str = "python3.11", env: dict[str, str] | None = None) -> Evidence:
    """Run every scenario against `layer`; `env` values may name the sink as `{sink}`."""
    kind = family(runtime)
    if kind not in HANDLERS:
        raise UnsupportedRuntime(f"check-extension has a built-in function for {', '.join(HANDLERS)} runtimes, "
                                 f"not {runtime}")  # fmt: skip
    host, unreachable = sink_host()
    with Sink() as sink, tempfile.TemporaryDirectory(prefix="lambdarun-check-") as tmp:
        url = sink.url_for(host or "127.0.0.1")
        variables = {key: value.replace("{sink}", url) for key, value in (env or {}).items()}
        variables.setdefault(SINK_VARIABLE, url)
        evidence = Evidence(layer, runtime, layer_extensions(layer), url, unreachable)
        # A copy the user owns: the installed package may be root's, and the code directory is the user's to lay out.
        code = shutil.copytree(FUNCTIONS / kind, Path(tmp) / "function")
        fn = Function(code, runtime, HANDLERS[kind], layers=[layer], env=variables, timeout=TIMEOUT_S,
                      name="check-extension")  # fmt: skip
        fn.start()
        fn.subscribe(evidence.events.append)
        try:
            for n, (scenario, event) in enumerate(SCENARIOS):
                if n:
                    time.sleep(PAUSE_S)
                result = fn.invoke(event)
                evidence.steps.append(Step(scenario, result.request_id, result.function_error))
        finally:
            fn.close()
        time.sleep(PAUSE_S)  # requests sent during the shutdown get their answers
        evidence.sink = sink.taken()
    return evidence
