"""The sandbox as a user of lambdarun meets it (issue 9, "Must show"): functions that misbehave on purpose, run through
the Python API (tests/fixtures/sandbox/runner.py, in a process of its own) and the `lambdarun` command, as root and
as the ordinary user `lambdarun-test` that the set-up creates.

Every function is a `provided.al2023` bootstrap run by the host's /usr/bin/python3 (tests/fixtures/sandbox/probe:
each event names what to probe) or bash. What degrades for the ordinary user is skipped with the reason
lambdarun itself gives on stderr: no cgroup (memory not limited), no /dev/net/tun (no outbound network).
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from _unprivileged import SRC, Identity, current, ordinary_user

from lambdarun.sandbox.spec import HOST_GATEWAY, HOST_GATEWAY_NAME, RUNTIME_API

SANDBOX = Path(__file__).resolve().parents[1] / "fixtures" / "sandbox"
RUNNER = SANDBOX / "runner.py"
PROBE = SANDBOX / "probe"
REPO = Path(SRC).parent
NO_CGROUP = "no cgroup for the sandbox"  # lambdarun's one line when memory cannot be limited
NO_NETWORK = "functions have no outbound network here"  # and when there is no outbound network
MB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    not os.access("/usr/bin/python3", os.X_OK),
    reason="the functions here are scripts run by /usr/bin/python3 inside the sandbox",
)


@pytest.fixture(scope="module", params=["root", "user"])
def who(request: pytest.FixtureRequest) -> Identity:
    """Each case as root, and as an ordinary user."""
    return current() if request.param == "root" else ordinary_user()


def probe(**kwargs: Any) -> dict[str, Any]:
    """Function kwargs of the probe runtime."""
    return {"code": "probe", "runtime": "provided.al2023", "handler": "probe", "timeout": 30, **kwargs}


def run_plan(who: Identity, plan: dict[str, Any], timeout: float = 120) -> tuple[dict[str, Any], str]:
    """Run a plan of runner.py as `who`; returns what it saw and its stderr (lambdarun's announcements)."""
    done = subprocess.run(who.command(["python", str(RUNNER), json.dumps(plan)]), env=who.env(), cwd="/",
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"the runner failed as {who.name}:\n{done.stderr[-4000:]}"
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if "unavailable" in seen:
        pytest.skip(f"no sandbox for {who.name} here: {seen['unavailable']}")
    return seen, done.stderr


def cli(
    who: Identity, code: Path, *options: str, events: list[Any], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`lambdarun invoke` as `who`: one invoke per event, in one environment."""
    events_file = who.private_dir("lambdarun-events-") / "events.jsonl"
    events_file.write_text("".join(json.dumps(event) + "\n" for event in events))
    os.chown(events_file, who.uid, -1)
    argv = ["python", "-m", "lambdarun", "invoke", str(code), "--runtime", "provided.al2023", "--handler", "probe",
            "--timeout", "30", "--event-file", str(events_file), *options]  # fmt: skip
    try:
        return subprocess.run(who.command(argv), env=who.env(), cwd="/", capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    finally:
        events_file.unlink()
        events_file.parent.rmdir()


def skip_degraded(who: Identity, stderr: str, announcement: str) -> None:
    """Skip with lambdarun's own words when it announced that this machine cannot do it for `who`."""
    for line in stderr.splitlines():
        if announcement in line:
            pytest.skip(f"as {who.name}: {line}")


def reports(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("REPORT ")]


def field(report: str, name: str) -> str:
    match = re.search(rf"{name}: ([^\t]+)", report)
    assert match is not None, f"no {name} in {report!r}"
    return match.group(1).strip()


# -- who the function is, what it can do, what it sees: one environment per identity, probed in turn


@pytest.fixture(scope="module")
def host_marker() -> Iterator[Path]:
    """A file in the host's real /tmp, readable by anyone: the sandbox's /tmp must not show it."""
    path = Path("/tmp") / f"lambdarun-host-marker-{uuid.uuid4().hex}"
    path.write_text("the host's /tmp")
    path.chmod(0o644)
    yield path
    path.unlink()


HIDDEN = ["/root", "/home", "/etc/shadow", "/var/tmp", "/usr/local/bin", "/work"]


@pytest.fixture(scope="module")
def probed(who: Identity, host_marker: Path) -> dict[str, Any]:
    import lambdarun

    hidden = [*HIDDEN, str(host_marker), str(REPO), str(Path(lambdarun.__file__).parent)]
    visible = ["/var/task/bootstrap", "/usr/bin/python3", "/tmp", "/opt", "/proc/self/status", "/dev/null"]
    steps = [
        ["invoke", "probe", {"op": "identity"}],
        ["invoke", "probe", {"op": "paths", "paths": hidden + visible}],
        ["invoke", "probe", {"op": "environment"}],
        ["invoke", "probe", {"op": "shell", "script": 'echo "$BASH_VERSION"'}],
        ["invoke", "sh", {"n": 1}],
        ["invoke", "probe", {"op": "write_tmp", "mb": 600}],
        ["invoke", "probe", {"op": "write_tmp", "mb": 400}],
        ["invoke", "probe", {"op": "threads"}],
        ["invoke", "probe", {"op": "big_header", "size": 2 * MB}],
        ["invoke", "probe", {"op": "echo", "after": "all of the above"}],
    ]
    plan = {"functions": {"probe": probe(), "sh": probe(code="sh_bashisms")}, "steps": steps}
    seen, stderr = run_plan(who, plan)
    names = ["identity", "paths", "environment", "shell", "sh", "tmp600", "tmp400", "threads", "header", "after"]
    return {"stderr": stderr, "hidden": hidden, "visible": visible, **dict(zip(names, seen["steps"], strict=True))}


def payload(probed: dict[str, Any], step: str) -> Any:
    result = probed[step]
    assert result["status"] == "success", result
    return result["payload"]


def test_the_function_runs_as_sbx_user1051_without_capabilities(probed: dict[str, Any]) -> None:
    seen = payload(probed, "identity")
    assert (seen["uid"], seen["gid"], seen["user"]) == (993, 990, "sbx_user1051")
    assert "sbx_user1051:x:993:990:" in seen["passwd"]
    assert int(seen["CapEff"], 16) == 0 and int(seen["CapPrm"], 16) == 0 and int(seen["CapBnd"], 16) == 0
    assert seen["NoNewPrivs"] == "1"


def test_remounting_the_root_read_write_fails(probed: dict[str, Any]) -> None:
    seen = payload(probed, "identity")
    assert seen["remount"]["rc"] != 0, seen["remount"]
    assert seen["remount_syscall"] == "EPERM"
    assert seen["root_writable"] == "EROFS"  # and / is still read-only after the attempt


def test_raw_sockets_and_new_user_namespaces_fail(probed: dict[str, Any]) -> None:
    seen = payload(probed, "identity")
    assert seen["raw_socket"] == "EPERM"
    assert seen["unshare"]["rc"] != 0, seen["unshare"]


def test_host_paths_are_absent(probed: dict[str, Any], host_marker: Path) -> None:
    seen = payload(probed, "paths")
    assert host_marker.exists()  # it is there on the host
    assert {path: seen[path] for path in probed["hidden"]} == dict.fromkeys(probed["hidden"], False)
    assert {path: seen[path] for path in probed["visible"]} == dict.fromkeys(probed["visible"], True)


def test_the_runtime_api_is_lambdas_address(probed: dict[str, Any]) -> None:
    assert payload(probed, "environment")["AWS_LAMBDA_RUNTIME_API"] == RUNTIME_API == "127.0.0.1:9001"


def test_bin_sh_is_bash_and_a_bootstrap_with_bashisms_under_bin_sh_works(probed: dict[str, Any]) -> None:
    assert payload(probed, "shell")["out"].startswith("5.")
    seen = payload(probed, "sh")
    assert seen["event"] == {"n": 1}
    assert (seen["words"], seen["deadline"]) == ("bash under sh", "yes")
    assert seen["shell"].startswith("5.")


def test_writing_600_mb_to_tmp_at_the_default_size_fails_with_enospc(probed: dict[str, Any]) -> None:
    seen = payload(probed, "tmp600")
    assert seen["errno"] == errno.errorcode[errno.ENOSPC]
    assert 500 <= seen["written_mb"] <= 520, seen  # about the 512 MB default went in


def test_400_mb_to_tmp_at_128_mb_of_memory_succeeds(probed: dict[str, Any]) -> None:
    # /tmp does not count against the function's memory, as on Lambda (the probe runs at the default 128 MB)
    assert probed["tmp400"]["report"]["memory_size_mb"] == 128
    assert payload(probed, "tmp400") == {"written_mb": 400, "errno": None}


def test_the_1025th_thread_fails_to_start(probed: dict[str, Any]) -> None:
    seen = payload(probed, "threads")
    assert seen["error"] is not None, seen  # it ran into the limit, not into the probe's own cap
    if NO_CGROUP not in probed["stderr"]:
        # The pids cgroup holds the runtime's 1,024 tasks (its main thread and the threads it started); the
        # namespace also shows our init, which is not in it.
        assert seen["started"] + 1 == 1024, seen
        assert seen["tasks_at_failure"] == 1024 + 1, seen
    else:
        # Degraded without a cgroup: RLIMIT_NPROC counts the tasks of the sandbox's uid in its user namespace,
        # which include lambdarun's init (and, for an ordinary user, bwrap's monitor): a few fewer for the function.
        assert 1020 <= seen["tasks_at_failure"] <= 1024, seen


def test_a_2_mb_header_to_the_runtime_api_is_refused_with_431(probed: dict[str, Any]) -> None:
    seen = payload(probed, "header")
    assert seen["status"] == "HTTP/1.1 431 Request Header Fields Too Large", seen
    assert json.loads(seen["body"])["errorType"] == "RequestHeaderFieldsTooLarge"


def test_the_environment_still_works_after_every_probe(probed: dict[str, Any]) -> None:
    assert payload(probed, "after") == {"op": "echo", "after": "all of the above"}


# -- memory, through the command line: REPORT lines as a user reads them


@pytest.fixture(scope="module")
def memory_run(who: Identity) -> subprocess.CompletedProcess[str]:
    events = [{"op": "echo"}, {"op": "hold", "mb": 100}, {"op": "alloc", "mb": 200}, {"op": "echo", "after": "oom"}]
    return cli(who, PROBE, "--memory", "128", events=events)


def test_max_memory_used_of_a_function_holding_100_mb_reads_within_10_percent(
    memory_run: subprocess.CompletedProcess[str],
) -> None:
    before, holding, *_ = reports(memory_run.stderr)
    baseline = int(field(before, "Max Memory Used").removesuffix(" MB"))  # the runtime on its own
    used = int(field(holding, "Max Memory Used").removesuffix(" MB"))
    assert abs(used - (baseline + 100)) <= 0.1 * (baseline + 100), (baseline, used)


def test_a_200_mb_allocation_at_128_mb_is_runtime_out_of_memory_and_the_next_invoke_succeeds(
    who: Identity, memory_run: subprocess.CompletedProcess[str]
) -> None:
    skip_degraded(who, memory_run.stderr, NO_CGROUP)
    _, _, oom, after = memory_run.stdout.splitlines()
    assert memory_run.returncode == 1  # an invoke returned a function error
    assert json.loads(oom)["errorType"] == "Runtime.OutOfMemory"
    report = reports(memory_run.stderr)[2]
    assert (field(report, "Status"), field(report, "Error Type")) == ("error", "Runtime.OutOfMemory")
    assert field(report, "Max Memory Used") == "128 MB"
    assert json.loads(after) == {"op": "echo", "after": "oom"}
    assert "Init Duration" in reports(memory_run.stderr)[3]  # a fresh environment


def test_the_python_api_reports_runtime_out_of_memory(who: Identity) -> None:
    steps = [["invoke", "m", {"op": "alloc", "mb": 200}], ["invoke", "m", {"op": "echo"}]]
    seen, stderr = run_plan(who, {"functions": {"m": probe(memory=128)}, "steps": steps})
    skip_degraded(who, stderr, NO_CGROUP)
    oom, after = seen["steps"]
    assert (oom["status"], oom["error_type"], oom["function_error"]) == ("error", "Runtime.OutOfMemory", "Unhandled")
    assert oom["report"]["status"] == "error" and oom["report"]["error_type"] == "Runtime.OutOfMemory"
    assert after["status"] == "success" and after["payload"] == {"op": "echo"}


# -- outbound network


@pytest.fixture(scope="module")
def host_service() -> Iterator[tuple[int, str]]:
    """An HTTP server on the host's loopback (a local database, LocalStack): (port, the token it answers)."""
    token = uuid.uuid4().hex

    class Token(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"token": token}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Token)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], token
    server.shutdown()
    thread.join()


@pytest.mark.parametrize("network", ["default", "none"])
def test_the_hosts_loopback_is_reachable_at_the_documented_address_unless_network_none(
    who: Identity, host_service: tuple[int, str], network: str
) -> None:
    port, token = host_service
    events = [{"op": "http_get", "address": f"{address}:{port}", "path": "/", "timeout": 2}
              for address in (HOST_GATEWAY_NAME, HOST_GATEWAY)]  # fmt: skip
    done = cli(who, PROBE, "--network", network, events=events)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    if network == "none":
        assert all("error" in answer for answer in answers), answers
        return
    skip_degraded(who, done.stderr, NO_NETWORK)
    assert answers == [{"status": 200, "body": json.dumps({"token": token})}] * 2


# -- freezing, shutdown, telemetry: the Python API


def function_lines(events: list[Any]) -> list[str]:
    return [record for kind, record in events if kind == "function"]


def extension_lines(events: list[Any]) -> list[str]:
    return [record for kind, record in events if kind == "extension"]


def test_a_setsid_child_is_frozen_between_invokes(who: Identity) -> None:
    steps = [
        ["invoke", "f", {"op": "counter_start"}],  # a child in its own session counts every 10 ms for 300 ms
        ["sleep", 1.0],  # frozen: unfrozen, it would count ~100 more
        ["invoke", "f", {"op": "counter_read"}],
        ["invoke", "f", {"op": "counter_stop"}],
    ]
    seen, _ = run_plan(who, {"functions": {"f": probe()}, "steps": steps})
    started, _, read, _ = seen["steps"]
    assert started["status"] == read["status"] == "success", seen["steps"]
    assert started["payload"]["count"] >= 10  # it does count while the environment runs
    assert read["payload"]["count"] - started["payload"]["count"] < 20, (started["payload"], read["payload"])


def test_a_runtime_trapping_sigterm_finishes_its_300_ms_of_work_at_shutdown(who: Identity) -> None:
    # The aws-samples graceful-shutdown pattern: an external extension is registered, so the runtime gets SIGTERM
    # and its share of the shutdown before SIGKILL.
    function = probe(layers=["telemetry_layer"], env={"PROBE_TRAP_SIGTERM": "1"})
    steps = [["invoke", "g", {"op": "echo"}], ["close", "g"]]
    seen, _ = run_plan(who, {"functions": {"g": function}, "steps": steps})
    assert seen["steps"][0]["status"] == "success"
    lines = function_lines(seen["events"]["g"])
    assert "sigterm received" in lines, lines
    assert lines[-1] == "cleanup finished", lines


def test_two_environments_each_bind_4243_and_receive_their_own_telemetry(who: Identity) -> None:
    functions = {name: probe(layers=["telemetry_layer"], name=name) for name in ("a", "b")}
    steps = [["invoke", name, {"op": "echo", "to": name}] for name in ("a", "b", "a", "b")]
    seen, _ = run_plan(who, {"functions": functions, "steps": steps})
    for name in ("a", "b"):
        invokes = [step for step in seen["steps"] if step["payload"] == {"op": "echo", "to": name}]
        assert [step["status"] for step in invokes] == ["success", "success"]
        lines = extension_lines(seen["events"][name])
        assert "listening on sandbox.localdomain:4243" in lines, lines  # both bound it, each in its namespace
        received = {line.split()[2] for line in lines if line.startswith("telemetry platform.start ")}
        assert received == {step["request_id"] for step in invokes}, lines  # its own requests, all of them


@pytest.mark.slow
def test_neither_a_host_process_nor_another_function_can_take_an_environments_event(who: Identity) -> None:
    token = uuid.uuid4().hex
    next_path = "/2018-06-01/runtime/invocation/next"
    steps = [
        ["invoke", "b", {"op": "echo"}],
        # a's runtime sleeps 4 s before its first /next: its event waits for it meanwhile
        ["start", "a", {"op": "echo", "token": token}],
        ["host_listeners"],
        ["host_get", RUNTIME_API, next_path, 1],
        *(
            ["invoke", "b", {"op": "http_get", "address": f"{address}:9001", "path": next_path, "timeout": 1}]
            for address in (HOST_GATEWAY, HOST_GATEWAY_NAME)
        ),
        ["result", "a"],
    ]
    functions = {"a": probe(env={"PROBE_SLEEP_BEFORE_NEXT": "4"}), "b": probe()}
    seen, _ = run_plan(who, {"functions": functions, "steps": steps})
    _, _, listeners, from_host, *from_b, taken = seen["steps"]
    assert listeners == []  # nothing of lambdarun listens in the host's network namespace
    assert token not in json.dumps(from_host), from_host
    for attempt in from_b:
        assert attempt["status"] == "success" and token not in json.dumps(attempt["payload"]), attempt
    assert taken["status"] == "success" and taken["payload"] == {"op": "echo", "token": token}  # a got its own event


@pytest.mark.slow
def test_2000_idle_connections_to_one_environment_leave_another_environments_invokes_working(who: Identity) -> None:
    steps = [
        ["invoke", "crowded", {"op": "flood", "processes": 4, "each": 500}],
        ["open", "neighbour", probe()],  # it starts while the crowd is there: it needs descriptors too
        *(["invoke", "neighbour", {"op": "echo", "i": i}] for i in range(20)),
    ]
    # lambdarun's own descriptors capped at 1,024, the usual soft limit, made hard so that it cannot raise it
    seen, _ = run_plan(who, {"functions": {"crowded": probe(timeout=60)}, "steps": steps, "nofile": 1024})
    flood, _, *neighbour = seen["steps"]
    assert flood["status"] == "success", flood
    assert flood["payload"]["opened"] >= 2000 * 0.9, flood["payload"]  # the connections were made (most of them)
    assert [(step["status"], step["payload"]) for step in neighbour] == [
        ("success", {"op": "echo", "i": i}) for i in range(20)
    ]
