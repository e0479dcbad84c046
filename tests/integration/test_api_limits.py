"""The in-sandbox APIs against hostile functions, through the Python API with real processes: a 2 MB header sent
to the Runtime API is refused, and 2,000 idle connections to one environment's APIs leave another environment's
invokes working."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lambdarun import Function

SRC = str(Path(__file__).resolve().parents[2] / "src")

# A handler that sends its own Runtime API a request with a header of `size` bytes, and returns the status line,
# the body, and whether the answer came before it could send the whole header.
BIG_HEADER = """
import os, socket

def handler(event, context):
    host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\nHost: x\\r\\nX-Big: "
    try:
        sock.sendall(head + b"a" * event["size"] + b"\\r\\n\\r\\n")
        sent_all = True
    except OSError:
        sent_all = False
    answer = b""
    while b"\\r\\n\\r\\n" not in answer or not answer.rstrip().endswith(b"}"):
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    status, _, rest = answer.partition(b"\\r\\n")
    return {"status": status.decode(), "body": rest.partition(b"\\r\\n\\r\\n")[2].decode(), "sent_all": sent_all}
"""

# A handler that forks `processes` children which each open `each` connections to the function's own Runtime API
# and keep them open, idle, until they are killed; it returns once every child has made its attempts.
FLOOD = """
import os, signal, socket

def handler(event, context):
    host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
    opened = 0
    for _ in range(event["processes"]):
        read, write = os.pipe()
        if os.fork() == 0:
            try:
                os.close(read)
                held = []
                for _ in range(event["each"]):
                    try:
                        held.append(socket.create_connection((host, int(port)), timeout=5))
                    except OSError:
                        pass
                os.write(write, f"{len(held)}\\n".encode())
                os.close(write)
                while True:
                    signal.pause()
            finally:
                os._exit(0)  # never back into the runtime client
        os.close(write)
        with os.fdopen(read) as pipe:
            opened += int(pipe.readline())
    return {"opened": opened}
"""

ECHO = "def handler(event, context):\n    return event\n"

# Both functions in one process, as a test suite or a control plane has them, with lambdarun's open files capped
# at 1,024 (the usual soft limit, made hard here so lambdarun cannot raise it): connections of one environment
# must not use up what the other needs.
DRIVER = """
import json, sys
from lambdarun import Function
flood_code, echo_code, invokes = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Function(flood_code, "python3.11", "app.handler", timeout=60, name="crowded") as crowded:
    flood = crowded.invoke({"processes": 4, "each": 500})
    # The neighbour starts while the crowd is there: its server, processes and pipes need descriptors too.
    with Function(echo_code, "python3.11", "app.handler", name="neighbour") as neighbour:
        results = [neighbour.invoke({"i": i}) for i in range(invokes)]
    print(json.dumps({
        "flood": flood.json() if flood.function_error is None else flood.payload.decode(),
        "neighbour": [[r.status, r.function_error, r.json()] for r in results],
    }))
"""


def function_dir(root: Path, source: str) -> Path:
    root.mkdir()
    (root / "app.py").write_text(textwrap.dedent(source))
    return root


@pytest.fixture(scope="module")
def python_runtime() -> None:
    try:
        Function(Path(__file__).parent, "python3.11", "app.handler")
        from lambdarun.runtimes.registry import get_runtime

        get_runtime("python3.11").locate()
    except Exception as exc:  # RuntimeUnavailable: awslambdaric or the interpreter is missing
        pytest.skip(f"the python3.11 runtime is not usable here: {exc}")


@pytest.mark.usefixtures("python_runtime")
def test_a_2_mb_header_to_the_runtime_api_is_refused_with_431(tmp_path: Path) -> None:
    code = function_dir(tmp_path / "code", BIG_HEADER)
    with Function(code, "python3.11", "app.handler", timeout=30) as fn:
        result = fn.invoke({"size": 2 * 1024 * 1024})

    assert result.function_error is None, result.payload
    seen = result.json()
    assert seen["status"] == "HTTP/1.1 431 Request Header Fields Too Large", seen
    assert json.loads(seen["body"])["errorType"] == "RequestHeaderFieldsTooLarge"


@pytest.mark.slow
@pytest.mark.usefixtures("python_runtime")
def test_2000_idle_connections_to_one_environment_leave_another_environments_invokes_working(tmp_path: Path) -> None:
    flood = function_dir(tmp_path / "flood", FLOOD)
    echo = function_dir(tmp_path / "echo", ECHO)
    invokes = 20

    def cap_open_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(flood), str(echo), str(invokes)],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap_open_files,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    assert seen["flood"]["opened"] >= 2000 * 0.9, seen["flood"]  # the connections were made (most of them)
    assert seen["neighbour"] == [["success", None, {"i": i}] for i in range(invokes)]
