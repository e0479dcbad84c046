"""The pytest plugin (registered through the `pytest11` entry point: installing lambdarun is enough).

    def test_my_extension(lambda_function):
        fn = lambda_function("function/", runtime="python3.11", handler="app.handler", layers=["layer/"])
        result = fn.invoke({"x": 1})
        assert result.report.post_runtime_extensions_ms < 50
        assert any(e["type"] == "platform.report" for e in fn.telemetry_received("my-extension"))
        assert fn.shutdown()["my-extension"].state == "Exited"

- `lambda_function(code, runtime=None, handler=None, layers=(), env=None, memory=128, timeout=3.0, **options)`
  gives a started `LambdaFunction`, shut down after the test. `code` and `handler` may be mappings keyed by runtime
  (`"nodejs20.x"`) or family (`"nodejs"`), for tests that run across runtimes. A runtime this machine cannot run
  skips the test, saying what to install.
- `@pytest.mark.lambda_runtimes("python3.11", "nodejs20.x")` runs the test once per runtime: `lambda_function`
  uses each in turn (the `lambda_runtime` fixture says which).
- A failing test's report has a section with each function's log (START, REPORT, the function's and extensions'
  lines), as CloudWatch would show it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .function import Function
from .runtimes.registry import get_runtime
from .telemetry import lifecycle as lc
from .telemetry.records import Event
from .telemetry.text import text_line

MARKER = "lambda_runtimes"
_FUNCTIONS = pytest.StashKey[list["LambdaFunction"]]()
T = TypeVar("T")


class LambdaFunction(Function):
    """A `Function` that keeps every event of its environment's stream, for assertions after the fact."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Event] = []
        self._recorded: object = None  # the environment whose stream `events` follows

    def start(self) -> None:
        super().start()
        if self._env is not None and self._recorded is not self._env:  # a new one after a close: follow it too
            self._recorded = self._env
            self._env.stream.subscribe(self.events.append)

    @property
    def log(self) -> list[str]:
        """The environment's log so far: the text lines CloudWatch would show, platform lines included."""
        return [line for event in list(self.events) if (line := text_line(event)) is not None]

    def telemetry_deliveries(self, extension: str) -> list[lc.TelemetryDelivery]:
        """Every attempt to send a batch to `extension`'s Telemetry or Logs API subscription, in order."""
        return [e.data for e in list(self.events) if isinstance(e.data, lc.TelemetryDelivery)
                and e.data.name == extension]  # fmt: skip

    def telemetry_received(self, extension: str) -> list[dict[str, Any]]:
        """The events `extension`'s subscription was sent and accepted (`{time, type, record}` as the Telemetry or
        Logs API sends them), in order. A batch refused and sent again counts once."""
        return [event for d in self.telemetry_deliveries(extension) if d.delivered for event in d.events()]


def _runtime_problem(runtime: str) -> str | None:
    """Why this machine cannot run `runtime`, or None."""
    try:
        hint = get_runtime(runtime).install_hint()
    except KeyError as exc:
        raise pytest.UsageError(str(exc.args[0])) from None
    return None if hint is None else f"{runtime} is not available here: {hint}"


def _for_runtime(value: T | Mapping[str, T], runtime: str) -> T:
    """The value for `runtime` from a mapping keyed by runtime id or family (`nodejs20.x`, then `nodejs`)."""
    if not isinstance(value, Mapping):
        return value
    family = "".join(c for c in runtime.split(".")[0] if c.isalpha())
    for key in (runtime, family):
        if key in value:
            return value[key]
    raise pytest.UsageError(f"no entry for {runtime} (or {family}) in {dict(value)!r}")


@pytest.fixture
def lambda_runtime(request: pytest.FixtureRequest) -> str | None:
    """The runtime `@pytest.mark.lambda_runtimes` runs this test with, or None without the marker."""
    return getattr(request, "param", None)


@pytest.fixture
def lambda_function(
    request: pytest.FixtureRequest, lambda_runtime: str | None
) -> Iterator[Callable[..., LambdaFunction]]:
    """A factory of started functions, each shut down after the test."""
    made: list[LambdaFunction] = []
    request.node.stash[_FUNCTIONS] = made

    def make(
        code: str | Path | Mapping[str, str | Path],
        runtime: str | None = None,
        handler: str | Mapping[str, str] | None = None,
        layers: Sequence[str | Path] = (),
        env: Mapping[str, str] | None = None,
        memory: int = 128,
        timeout: float = 3.0,
        **options: Any,
    ) -> LambdaFunction:
        chosen = runtime or lambda_runtime
        if chosen is None:
            raise pytest.UsageError("lambda_function needs runtime=, or a @pytest.mark.lambda_runtimes(...) marker")
        problem = _runtime_problem(chosen)
        if problem is not None:
            pytest.skip(problem)
        fn = LambdaFunction(_for_runtime(code, chosen), chosen,
                            None if handler is None else _for_runtime(handler, chosen), layers=layers, env=env,
                            memory=memory, timeout=timeout, **options)  # fmt: skip
        made.append(fn)
        fn.start()
        return fn

    yield make
    for fn in made:
        fn.close()  # nothing to do for one the test shut down itself


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*runtimes): run the test once per Lambda runtime; lambda_function uses each in turn "
        "(runtimes this machine lacks are skipped, with what to install)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None or "lambda_runtime" not in metafunc.fixturenames:
        return
    if not marker.args:
        raise pytest.UsageError(f"@pytest.mark.{MARKER} needs at least one runtime, e.g. 'python3.11'")
    params = []
    for runtime in marker.args:
        problem = _runtime_problem(runtime)
        marks = [pytest.mark.skip(reason=problem)] if problem is not None else []
        params.append(pytest.param(runtime, id=runtime, marks=marks))
    metafunc.parametrize("lambda_runtime", params, indirect=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        for fn in item.stash.get(_FUNCTIONS, []):
            config = fn.config
            report.sections.append((f"lambdarun log: {config.name} ({config.runtime})", "\n".join(fn.log) or "(empty)"))
    return report
