"""`lambdarun invoke` as a user runs it: a subprocess, payloads on stdout, logs on stderr, an exit status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

PROBE = ["--runtime", "python3.11", "--handler", "app.handler"]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def lambdarun(tmp_path: Path) -> Run:
    """`lambdarun(*args)` runs the command with its temp dirs under this test's tmp_path."""

    def run(*args: str | Path, hang_guard: float = 60) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "lambdarun", *map(str, args)]
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        return subprocess.run(command, capture_output=True, text=True, timeout=hang_guard, env=env)

    return run


@pytest.fixture
def probe(functions: Path) -> Path:
    return functions / "python_probe"


def test_success_exits_0_and_prints_one_line(lambdarun: Run, probe: Path) -> None:
    run = lambdarun("invoke", probe, *PROBE, "--event", '{"op": "echo", "n": 1}')

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ['{"calls": 1, "event": {"op": "echo", "n": 1}}']


def test_logs_go_to_stderr(lambdarun: Run, probe: Path) -> None:
    run = lambdarun("invoke", probe, *PROBE)

    lines = run.stderr.splitlines()
    assert lines[0].startswith("INIT_START Runtime Version: python:3.11")
    assert [line.split(" ")[0] for line in lines[1:]] == ["START", "END", "REPORT"]


def test_default_event_is_an_empty_object(lambdarun: Run, probe: Path) -> None:
    run = lambdarun("invoke", probe, *PROBE)

    assert json.loads(run.stdout) == {"calls": 1, "event": {}}


def test_repeat_invokes_in_one_warm_environment(lambdarun: Run, probe: Path) -> None:
    run = lambdarun("invoke", probe, *PROBE, "--repeat", "3")

    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["calls"] for line in run.stdout.splitlines()] == [1, 2, 3]
    assert run.stderr.count("INIT_START") == 1
    assert run.stderr.count("\tInit Duration: ") == 1


def test_event_file_invokes_once_per_line(lambdarun: Run, probe: Path, tmp_path: Path) -> None:
    events = [{"n": 1}, {"n": 2}, {"n": 3}]
    event_file = tmp_path / "events.jsonl"
    event_file.write_text("".join(json.dumps(event) + "\n" for event in events))

    run = lambdarun("invoke", probe, *PROBE, "--event-file", event_file)

    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["event"] for line in run.stdout.splitlines()] == events


def test_handler_error_exits_1_and_prints_the_error_payload(lambdarun: Run, probe: Path) -> None:
    run = lambdarun("invoke", probe, *PROBE, "--event", '{"op": "raise"}')

    assert run.returncode == 1
    [line] = run.stdout.splitlines()
    assert json.loads(line)["errorType"] == "ValueError"


def test_timeout_exits_1_and_prints_the_timeout_error(lambdarun: Run, probe: Path) -> None:
    run = lambdarun(
        "invoke", probe, *PROBE, "--timeout", "1", "--event", '{"op": "sleep", "seconds": 30}', hang_guard=10
    )

    assert run.returncode == 1
    assert json.loads(run.stdout)["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in run.stderr


def test_runtime_crash_exits_1_and_prints_the_exit_error(lambdarun: Run, probe: Path) -> None:
    run = lambdarun("invoke", probe, *PROBE, "--event", '{"op": "exit"}', hang_guard=10)

    assert run.returncode == 1
    assert json.loads(run.stdout)["errorType"] == "Runtime.ExitError"


def test_provided_runtime_needs_no_handler(lambdarun: Run, functions: Path) -> None:
    run = lambdarun("invoke", functions / "provided_bash", "--runtime", "provided.al2023", "--event", "[1]")

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["echo"] == [1]


# -- bad usage: a clear message and exit status 2


@pytest.mark.parametrize(("args", "message"), [
    (["--runtime", "nodejs99.x", "--handler", "app.handler"], "unknown runtime 'nodejs99.x'"),
    (["--runtime", "python3.11"], "needs a handler"),
    ([*PROBE, "--event", "{not json"], "--event is not valid JSON"),
    ([*PROBE, "--env", "AWS_REGION=x"], "Reserved keys used in this request: AWS_REGION"),
    ([*PROBE, "--env", "NO_EQUALS_SIGN"], "--env takes KEY=VALUE"),
    ([*PROBE, "--memory", "64"], "outside Lambda's range 128-10240 MB"),
], ids=["unknown-runtime", "missing-handler", "malformed-event", "reserved-variable", "env-without-value",
        "memory-too-small"])  # fmt: skip
def test_bad_usage_exits_2_with_a_message(
    lambdarun: Run, probe: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    run = lambdarun("invoke", probe, *args)

    assert run.returncode == 2
    assert message in run.stderr
    assert run.stdout == ""
    assert list(tmp_path.glob("lambdarun-*")) == []


def test_malformed_line_in_event_file_exits_2_naming_the_line(lambdarun: Run, probe: Path, tmp_path: Path) -> None:
    event_file = tmp_path / "events.jsonl"
    event_file.write_text('{"n": 1}\n{"n": \n')

    run = lambdarun("invoke", probe, *PROBE, "--event-file", event_file)

    assert run.returncode == 2
    assert f"{event_file}:2 is not valid JSON" in run.stderr
    assert run.stdout == ""


# -- nothing left behind


def test_invoke_leaves_no_process_and_no_temp_dir(
    lambdarun: Run, probe: Path, tmp_path: Path, marker: str, processes_marked: Callable[[str], list[str]]
) -> None:
    # The handler leaves a `sleep 300` running in a session of its own: it must go with the environment.
    run = lambdarun("invoke", probe, *PROBE, "--env", f"TEST_MARKER={marker}", "--event", '{"op": "background"}')

    assert run.returncode == 0, run.stderr
    assert processes_marked(marker) == []
    assert list(tmp_path.glob("lambdarun-*")) == []


def test_ctrl_c_shuts_down_and_leaves_nothing_behind(
    probe: Path, tmp_path: Path, marker: str, processes_marked: Callable[[str], list[str]]
) -> None:
    command = [
        sys.executable,
        "-m",
        "lambdarun",
        "invoke",
        str(probe),
        *PROBE,
        "--timeout",
        "30",
        "--env",
        f"TEST_MARKER={marker}",
        "--event",
        '{"op": "sleep", "seconds": 5}',
    ]
    cli = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)}
    )
    try:
        assert cli.stderr is not None
        seen = []
        for line in cli.stderr:  # wait until the handler is running
            seen.append(line)
            if line.strip() == "sleeping":
                break
        else:
            pytest.fail("the handler never started:\n" + "".join(seen))
        assert processes_marked(marker), "the function's processes should be running"
        assert list(tmp_path.glob("lambdarun-*")), "the environment's temp dir should exist"

        cli.send_signal(signal.SIGINT)
        stdout, stderr = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()

    assert cli.returncode == 130, stderr
    assert "interrupted" in stderr
    assert stdout == ""
    assert processes_marked(marker) == []
    assert list(tmp_path.glob("lambdarun-*")) == []
