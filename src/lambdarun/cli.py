"""The `lambdarun` command. Thin: parses, calls the Python API, prints.

Exit status: 0 when every invoke succeeded, 1 when any returned a function error (its payload is still
printed), 2 for bad usage or configuration.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import click

from .config import ConfigError
from .function import Function
from .runtimes.registry import RuntimeUnavailable, State, all_runtimes
from .telemetry.records import Event, FunctionLog
from .telemetry.text import text_line


@click.group()
@click.version_option(package_name="lambdarun")
def main() -> None:
    """The AWS Lambda execution environment, locally: runtimes, extensions, telemetry. No Docker."""


def _parse_env(values: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--env takes KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def _events(event: str | None, event_file: Path | None) -> list[bytes]:
    if event is not None and event_file is not None:
        raise click.UsageError("give --event or --event-file, not both")
    if event_file is not None:
        lines = [(n, line) for n, line in enumerate(event_file.read_text().splitlines(), 1) if line.strip()]
        return [_checked_json(line, f"{event_file}:{n}") for n, line in lines]
    return [_checked_json(event if event is not None else "{}", "--event")]


def _checked_json(text: str, where: str) -> bytes:
    try:
        json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"{where} is not valid JSON: {exc}") from None
    return text.encode()


def _one_line(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace")
    if "\n" not in text:
        return text
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return text.replace("\n", "\\n")


def _write(stream: TextIO, line: str) -> None:
    """One write per line: the loop thread's log lines and the main thread's responses never split each other."""
    stream.write(line + "\n")
    stream.flush()


def _log_printer(json_format: bool) -> Callable[[Event], None]:
    """Text lines as CloudWatch shows them; with the JSON log format, platform events as `{time,type,record}`."""

    def print_log(event: Event) -> None:
        if json_format and event.type.startswith("platform."):
            line: str | None = json.dumps(event.envelope())
        elif isinstance(event.data, FunctionLog) and isinstance(event.data.record, dict):
            line = json.dumps(event.data.record)
        else:
            line = text_line(event)
        if line is not None:
            _write(sys.stderr, line)

    return print_log


def _telemetry_writer(stream: TextIO) -> Callable[[Event], None]:
    def write(event: Event) -> None:
        stream.write(json.dumps(event.envelope()) + "\n")

    return write


@main.command()
@click.argument("code", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--runtime",
    required=True,
    help=f"one of {', '.join(spec.id for spec in all_runtimes())} (`lambdarun runtimes` says which run here)",
)
@click.option("--handler", help="e.g. app.handler (module.function)")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="a layer directory or zip; repeat for several, later wins",
)
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="an environment variable; repeatable")
@click.option("--memory", default=128, show_default=True, type=int, help="memory size in MB")
@click.option("--timeout", default=3.0, show_default=True, type=float, help="function timeout in seconds")
@click.option("--ephemeral-storage", default=512, show_default=True, type=int, help="the size of /tmp in MB")
@click.option(
    "--network",
    type=click.Choice(["default", "none"]),
    default="default",
    show_default=True,
    help="default: outbound traffic as a non-VPC function has it; none: the sandbox's loopback only",
)
@click.option("--event", help="the event as JSON (default {})")
@click.option(
    "--event-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="one JSON event per line; one invoke per line",
)
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="invoke N times in one warm environment",
)
@click.option("--name", default="function", show_default=True, help="the function's name")
@click.option(
    "--stream", is_flag=True, help="write each response's bytes as they arrive (streamed responses), then a newline"
)
@click.option("--trace-id", help="the X-Ray header of each invoke (default: a fresh one per invoke, as Lambda sends)")
@click.option(
    "--tracing",
    type=click.Choice(["PassThrough", "Active"]),
    default="PassThrough",
    show_default=True,
    help="X-Ray tracing mode; Active sets Sampled=1 on the fresh trace ids",
)
@click.option(
    "--telemetry",
    "telemetry_file",
    type=click.File("w"),
    help="write every event of the environment's stream to FILE as JSON lines",
)
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="write the lifecycle trace (Chrome trace event format: Perfetto, chrome://tracing) to FILE at the end",
)
def invoke(
    code: Path,
    runtime: str,
    handler: str | None,
    layers: tuple[Path, ...],
    env: tuple[str, ...],
    memory: int,
    timeout: float,
    ephemeral_storage: int,
    network: str,
    event: str | None,
    event_file: Path | None,
    repeat: int,
    name: str,
    stream: bool,
    trace_id: str | None,
    tracing: str,
    telemetry_file: TextIO | None,
    trace_file: Path | None,
) -> None:
    """Invoke the function in CODE (a directory or zip) and print each response on one line."""
    payloads = _events(event, event_file)
    interrupts = _Interrupts()
    try:
        function = Function(
            code,
            runtime,
            handler,
            layers=layers,
            env=_parse_env(env),
            memory=memory,
            timeout=timeout,
            name=name,
            tracing=tracing,
            ephemeral_storage=ephemeral_storage,
            network=network,
            trace=trace_file,
        )
        function.start()
    except (ConfigError, RuntimeUnavailable, OSError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt:
        sys.exit(130)  # start() removed what it had made
    failed = False
    try:
        json_logs = function.config.env.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"
        function.subscribe(_log_printer(json_logs))
        if telemetry_file is not None:
            function.subscribe(_telemetry_writer(telemetry_file))
        for _ in range(repeat):
            for payload in payloads:
                pending = function.start_invoke(payload=payload, trace_id=trace_id)
                if stream:
                    for chunk in pending.chunks():
                        sys.stdout.buffer.write(chunk)
                        sys.stdout.buffer.flush()
                    _write(sys.stdout, "")
                else:
                    _write(sys.stdout, _one_line(pending.response().payload))
                failed |= pending.result().function_error is not None
    except KeyboardInterrupt:
        print("lambdarun: interrupted, shutting the environment down (again to kill it at once)", file=sys.stderr)
        interrupts.closing(function)
        function.close()
        sys.exit(130)
    finally:
        interrupts.closing(function)
        function.close()
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("trace_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--svg", "svg", type=click.Path(dir_okay=False, path_type=Path), help="draw the timeline into OUT.svg")
def trace(trace_file: Path, svg: Path | None) -> None:
    """Summarise a lifecycle trace written by `invoke --trace`, or draw it (--svg, needs lambdarun[trace])."""
    from .trace import chrome, draw, timeline

    try:
        loaded = chrome.load(trace_file)
    except chrome.TraceFormatError as exc:
        raise click.UsageError(str(exc)) from None
    if svg is None:
        origin = loaded.origin
        for track in timeline.track_order(loaded.tracks):
            for span in sorted(loaded.on(track), key=lambda s: s.start):
                click.echo(
                    f"{track:<24} +{(span.start - origin) * 1000:10.3f} ms {span.duration_ms:10.3f} ms  {span.name}"
                )
        return
    try:
        draw.draw_svg(loaded, svg, title=trace_file.name)
    except draw.DrawingUnavailable as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {svg}")


@main.command("check-extension")
@click.argument("layer", type=click.Path(exists=True, path_type=Path))
@click.option("--runtime", default="python3.11", show_default=True, help="the built-in function's runtime")
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="KEY=VALUE",
    help="an environment variable; `{sink}` in VALUE is the check's endpoint (also $LAMBDARUN_CHECK_SINK)",
)
@click.option("--json", "as_json", is_flag=True, help="the findings as JSON, for CI")
def check_extension(layer: Path, runtime: str, env: tuple[str, ...], as_json: bool) -> None:
    """Run a standard battery against the extensions of LAYER and report findings; exit 1 on any error."""
    from .check import battery, finding, report, rules

    try:
        evidence = battery.run_battery(layer, runtime, _parse_env(env))
    except (ConfigError, RuntimeUnavailable, battery.UnsupportedRuntime, OSError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    verdict = rules.judge(evidence)
    click.echo(report.as_json(evidence, verdict) if as_json else report.as_table(evidence, verdict))
    sys.exit(1 if verdict.worst is finding.Level.ERROR else 0)


@main.group(invoke_without_command=True)
@click.pass_context
def runtimes(context: click.Context) -> None:
    """List each runtime: ready (checked by starting it in a sandbox), not-installed (its image is fetched on first
    use, or by `lambdarun runtimes install`) or missing (what to install, and how)."""
    if context.invoked_subcommand is not None:
        return
    for spec in all_runtimes():
        status = spec.status()
        click.echo(f"{spec.id:<16} {status.state.value:<14} {status.detail}")


@runtimes.command("install")
@click.argument("names", nargs=-1, metavar="[RUNTIME]...")
@click.option("--force", is_flag=True, help="build the images again even when they are installed")
def install_runtimes(names: tuple[str, ...], force: bool) -> None:
    """Fetch and build the images of the RUNTIMEs (all this machine can run when none is named) into the cache
    ($LAMBDARUN_CACHE, else $XDG_CACHE_HOME/lambdarun or ~/.cache/lambdarun), to be used offline later."""
    known = {spec.id: spec for spec in all_runtimes()}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise click.UsageError(f"unknown runtime {', '.join(unknown)}; supported: {', '.join(known)}")
    chosen = [known[name] for name in names] or [spec for spec in known.values() if spec.needs_handler]
    failed = False
    for spec in chosen:
        status = spec.status()
        if not names and status.state is State.MISSING:
            click.echo(f"{spec.id:<16} skipped: {status.detail}")
            continue
        try:
            spec.install(replace=force)
        except RuntimeUnavailable as exc:
            failed = True
            click.echo(f"{spec.id:<16} failed: {exc}")
            continue
        status = spec.status()
        failed |= status.state is not State.READY
        click.echo(f"{spec.id:<16} {status.state.value:<14} {status.detail}")
    sys.exit(1 if failed else 0)


class _Interrupts:
    """Ctrl-C or SIGTERM: the first one interrupts what runs (KeyboardInterrupt) and the environment is shut down
    with its usual sequence; any later one, or one during that shutdown, kills its processes at once. Only the first
    raises, so nothing interrupts the code that removes the environment's files."""

    def __init__(self) -> None:
        self._function: Function | None = None
        self._raised = self._kill = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def closing(self, function: Function) -> None:
        """`function` is being closed: from now on a signal kills it."""
        self._function = function
        if self._kill:
            function.kill()

    def _handle(self, signum: int, frame: object) -> None:
        if not self._raised and self._function is None:
            self._raised = True
            raise KeyboardInterrupt
        if not self._kill:
            print("lambdarun: interrupted during shutdown, killing the environment", file=sys.stderr)
        self._kill = True
        if self._function is not None:
            self._function.kill()
