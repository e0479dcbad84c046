"""Scenarios that drive `Sandbox` directly with real processes, run as a program so that the tests can run each one
as root and as an ordinary user: `python3 _sandbox_scenarios.py NAME WORKDIR [JSON]` prints one JSON line.

Only the standard library and lambdarun.sandbox are imported, through a bare `lambdarun` package (its __init__ pulls
in the whole of lambdarun, whose dependencies an ordinary user's interpreter may lack).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"
if "lambdarun" not in sys.modules:
    package = types.ModuleType("lambdarun")
    package.__path__ = [str(SRC / "lambdarun")]
    sys.modules["lambdarun"] = package

from lambdarun.sandbox import bwrap  # noqa: E402
from lambdarun.sandbox.sandbox import Sandbox  # noqa: E402
from lambdarun.sandbox.spec import SandboxSpec  # noqa: E402

PATH = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
PY = "/usr/bin/python3"


def spec(work: Path, network: str = "default") -> SandboxSpec:
    dirs = {}
    for name in ("task", "opt", "runtime", "lang", "tmp"):
        (work / name).mkdir(exist_ok=True)
        (work / name).chmod(0o755)
        dirs[name] = work / name
    return SandboxSpec(**dirs, network=network)  # type: ignore[arg-type]


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str, at: float) -> None:
        self.lines.append(line)

    async def wait_for(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline:
                raise TimeoutError(f"never printed {text!r}: {self.lines}")
            await asyncio.sleep(0.01)


async def run_python(sb: Sandbox, code: str, env: dict[str, str] | None = None) -> Any:
    """Run `code` with the sandbox's python3 and return the JSON it prints last."""
    out = Lines()
    process = await sb.spawn("check", [PY, "-I", "-c", code], {**PATH, **(env or {})}, out)
    await asyncio.wait_for(asyncio.shield(process.exited), 30)
    process.drain_logs()
    for line in reversed(out.lines):
        if line.startswith(("{", "[")):
            return json.loads(line)
    raise RuntimeError(f"no JSON from the check: {out.lines}")


IDENTITY = r"""
import ctypes, json, os, pwd, socket, subprocess
r = {"uid": os.getuid(), "gid": os.getgid(), "user": pwd.getpwuid(os.getuid()).pw_name}
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
for key in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs"):
    r[key] = status[key].strip()
run = lambda *argv: subprocess.run(list(argv), capture_output=True, text=True)
r["remount_root"] = run("mount", "-o", "remount,bind,rw", "/").returncode
r["remount_task"] = run("mount", "-o", "remount,bind,rw", "/var/task").returncode
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); r["raw_socket"] = 0
except OSError as e:
    r["raw_socket"] = e.errno
r["unshare_r"] = run("unshare", "-r", "true").returncode
r["unshare_net"] = run("unshare", "-n", "true").returncode
libc = ctypes.CDLL(None, use_errno=True)
for name, pid in (("init", 1), ("host", int(os.environ["HOST_PID"]))):
    result = libc.ptrace(16, pid, 0, 0)  # PTRACE_ATTACH
    r["ptrace_" + name] = 0 if result == 0 else ctypes.get_errno()
r["sh"] = run("/bin/sh", "-c", "x=(a b); echo ${x[1]} $BASH_VERSION").stdout.strip()
r["resolve"] = [socket.gethostbyname(n) for n in ("sandbox.localdomain", "sandbox", "localhost")]
r["hostname"] = socket.gethostname()
r["passwd"] = open("/etc/passwd").read()
r["pid1"] = open("/proc/1/cmdline").read().split("\0")[0]
print(json.dumps(r))
"""

FILESYSTEM = r"""
import json, os, sys
absent = json.loads(os.environ["ABSENT"])
r = {"present": [p for p in absent if os.path.lexists(p)], "writes": {}}
for d in ("/", "/var/task", "/opt", "/var/runtime", "/var/lang", "/etc", "/usr", "/var/rapid", "/dev/shm", "/tmp"):
    path = d.rstrip("/") + "/x"
    try:
        open(path, "w").write("x"); r["writes"][path] = "ok"
    except OSError as e:
        r["writes"][path] = e.strerror
for d in ("/", "/var", "/etc", "/dev", "/usr/local"):
    r[d] = sorted(os.listdir(d))
r["cwd"] = os.getcwd()
print(json.dumps(r))
"""


async def identity(work: Path, params: dict[str, Any]) -> Any:
    sb = await Sandbox.open(spec(work, "none"))
    try:
        return {"sandboxed": sb.sandboxed, **await run_python(sb, IDENTITY, {"HOST_PID": str(os.getpid())})}
    finally:
        await sb.close()


async def filesystem(work: Path, params: dict[str, Any]) -> Any:
    sb = await Sandbox.open(spec(work, "none"))
    try:
        result = await run_python(sb, FILESYSTEM, {"ABSENT": json.dumps(params["absent"])})
        result["tmp_on_host"] = sorted(os.listdir(work / "tmp"))
        return result
    finally:
        await sb.close()


PORTS = r"""
import os, socket, json
tel = socket.socket(); tel.bind(("127.0.0.1", 4243)); tel.listen(1)
api = socket.create_connection(("127.0.0.1", 9001)); answer = api.recv(100).decode(); api.close()
print(json.dumps({"api": answer}), flush=True)
conn, _ = tel.accept(); conn.sendall(os.environ["NAME"].encode()); conn.close()
"""


async def ports(work: Path, params: dict[str, Any]) -> Any:
    loop = asyncio.get_running_loop()
    result: dict[str, Any] = {}
    boxes = []
    for name in ("A", "B"):
        (work / name).mkdir()
        sb = await Sandbox.open(spec(work / name, "none"))
        boxes.append(sb)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str = name) -> None:
            writer.write(name.encode())
            await writer.drain()
            writer.close()

        await asyncio.start_server(answer, sock=sb.listener)
    try:
        outs = []
        for name, sb in zip("AB", boxes, strict=True):
            out = Lines()
            await sb.spawn("ports", [PY, "-I", "-c", PORTS], {**PATH, "NAME": name}, out)
            outs.append(out)
        for name, sb, out in zip("AB", boxes, outs, strict=True):
            await out.wait_for('"api"')
            result[f"api_seen_by_{name}"] = json.loads(out.lines[-1])["api"]
            sock = await sb.socket()
            await loop.sock_connect(sock, ("127.0.0.1", 4243))
            result[f"4243_of_{name}"] = (await loop.sock_recv(sock, 100)).decode()
            sock.close()
        result["runtime_api"] = [sb.runtime_api for sb in boxes]
        for port in (9001, 4243):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.settimeout(2)
                    result[f"host_{port}"] = s.recv(100).decode(errors="replace") or "connected, nothing"
            except OSError as e:
                result[f"host_{port}"] = e.strerror
        return result
    finally:
        for sb in boxes:
            await sb.close()


FREEZE = r"""
import os, time
def count(path):
    n = 0
    while True:
        n += 1
        with open(path + ".new", "w") as f: f.write(str(n))
        os.replace(path + ".new", path)
        time.sleep(0.005)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        count("/tmp/grandchild")
    os._exit(0)
count("/tmp/parent")
"""


def _counters(tmp: Path) -> dict[str, int]:
    return {name: int((tmp / name).read_text() or 0) for name in ("parent", "grandchild") if (tmp / name).exists()}


async def freeze(work: Path, params: dict[str, Any]) -> Any:
    sb = await Sandbox.open(spec(work, "none"))
    tmp = work / "tmp"
    try:
        await sb.spawn("ticker", [PY, "-I", "-c", FREEZE], PATH, Lines())
        deadline = time.monotonic() + 10
        while min(_counters(tmp).values(), default=0) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        sb.freeze()
        await asyncio.sleep(0.1)  # a stop lands within a scheduler tick; a write under way finishes
        frozen = _counters(tmp)
        await asyncio.sleep(0.5)
        still = _counters(tmp)
        sb.thaw()
        await asyncio.sleep(0.3)
        return {"frozen": frozen, "after_idle": still, "after_thaw": _counters(tmp)}
    finally:
        await sb.close()


GRACEFUL = r"""
import signal, sys, time
def on_term(*_):
    time.sleep(0.3)
    open("/tmp/finished", "w").write("done")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


async def grace(work: Path, params: dict[str, Any]) -> Any:
    sb = await Sandbox.open(spec(work, "none"))
    out = Lines()
    runtime = await sb.spawn("runtime", [PY, "-I", "-c", GRACEFUL], PATH, out)
    other = await sb.spawn("extension", ["/bin/sleep", "600"], PATH, Lines())
    await out.wait_for("ready")
    if params.get("via") == "signal_group":
        runtime.signal_group(signal.SIGTERM)
        await asyncio.wait_for(asyncio.shield(runtime.exited), 5)
        after = Lines()
        probe = await sb.spawn("after", ["/bin/echo", "init still serves"], PATH, after)
        await probe.exited
        probe.drain_logs()
        await sb.close()
        return {"exit": runtime.exited.result(), "finished": (work / "tmp" / "finished").exists(), "after": after.lines}
    started = time.monotonic()
    sb.freeze()  # close() thaws first: a frozen runtime still gets its grace
    await sb.close(grace=2.0)
    return {"exit": runtime.exited.result(), "other_exit": other.exited.result(),
            "description": other.exit_description(), "finished": (work / "tmp" / "finished").exists(),
            "close_s": time.monotonic() - started}  # fmt: skip


OUTBOUND = r"""
import json, os, urllib.request
r = {}
for host in ("169.254.1.1", "host.lambdarun.internal"):
    try:
        r[host] = urllib.request.urlopen(f"http://{host}:{os.environ['PORT']}/", timeout=3).read().decode()
    except OSError as e:
        r[host] = type(e).__name__ + ": " + str(getattr(e, "reason", e))
print(json.dumps(r))
"""


async def outbound(work: Path, params: dict[str, Any]) -> Any:
    sb = await Sandbox.open(spec(work, params["network"]))
    try:
        return {"network": sb.network, **await run_python(sb, OUTBOUND, {"PORT": str(params["port"])})}
    finally:
        await sb.close()


TARGET = r"""
import signal, sys, time
signal.signal(signal.SIGUSR1, lambda *_: (print("got USR1", flush=True), sys.exit(7)))
print("up", flush=True)
time.sleep(60)
"""

FIND_TARGET = r"""
import json, os
mine = [p for p in os.listdir("/proc") if p.isdigit() and "sys.exit(7)" in open(f"/proc/{p}/cmdline").read()]
print(json.dumps(mine))
"""

SIBLING = r"""
import json, os, signal
pid = int(os.environ["TARGET"])
name = open(f"/proc/{pid}/cmdline").read().split("\0")
os.kill(pid, signal.SIGUSR1)
print(json.dumps({"seen": name, "my_pid": os.getpid()}))
"""

FRAME = r"""
import os, struct, time
fd = int(os.environ["_LAMBDA_TELEMETRY_LOG_FD"])
message = b"first line\nsecond line"
os.write(fd, struct.pack(">IIQ", 0xA55A0003, len(message), int(time.time() * 1e6)) + message)
print("plain stdout")
os.write(2, b"plain stderr\n")
"""


async def spawning(work: Path, params: dict[str, Any]) -> Any:
    """Exit codes, errors, logs, the framed log fd, and a PID namespace shared by every process."""
    sb = await Sandbox.open(spec(work, "none"))
    result: dict[str, Any] = {}
    try:
        for label, script in (("exit3", "exit 3"), ("exit200", "exit 200"), ("killed", "kill -KILL $$"),
                              ("segv", "kill -SEGV $$")):  # fmt: skip
            process = await sb.spawn(label, ["/bin/sh", "-c", script], PATH, Lines())
            code = await process.exited
            result[label] = [code, process.exit_description()]
        (work / "task" / "not-executable").write_text("#!/bin/sh\n")
        (work / "task" / "not-executable").chmod(0o644)
        for label, argv in (("missing", ["/var/task/nothing"]), ("not_executable", ["/var/task/not-executable"]),
                            ("not_on_path", ["no-such-command"])):  # fmt: skip
            try:
                await sb.spawn(label, argv, PATH, Lines())
                result[label] = "started"
            except OSError as e:
                result[label] = [e.errno, e.strerror]
        lines, frames = Lines(), Lines()
        process = await sb.spawn("framed", [PY, "-I", "-c", FRAME], PATH, lines, on_frame=frames)
        await process.exited
        process.drain_logs()
        result["lines"], result["frames"] = lines.lines, frames.lines
        target_out = Lines()
        target = await sb.spawn("runtime", [PY, "-I", "-c", TARGET], PATH, target_out)
        await target_out.wait_for("up")
        inside_pid = await run_python(sb, FIND_TARGET)
        result["sibling"] = await run_python(sb, SIBLING, {**PATH, "TARGET": inside_pid[0]})
        result["target_exit"] = await asyncio.wait_for(target.exited, 5)
        result["target_lines"] = target_out.lines
        result["host_pid_is_real"] = target.pid > 0 and target.pid != int(inside_pid[0])
        result["max_rss_kb"] = target.max_rss_kb
        return result
    finally:
        await sb.close()


KILL_ALL = r"""
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(600)
time.sleep(600)
"""


def _marked(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


async def kill_all(work: Path, params: dict[str, Any]) -> Any:
    sb = await Sandbox.open(spec(work, "none"))
    marker = f"LAMBDARUN_SBX_{os.getpid()}_{time.monotonic_ns()}"
    try:
        process = await sb.spawn("runtime", [PY, "-I", "-c", KILL_ALL], {**PATH, marker: "1"}, Lines())
        deadline = time.monotonic() + 10
        while len(_marked(marker)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        before = len(_marked(marker))
        await sb.kill_all()
        after = len(_marked(marker))
        again = Lines()
        probe = await sb.spawn("again", ["/bin/echo", "spawned after kill_all"], PATH, again)
        await probe.exited
        probe.drain_logs()
        return {"before": before, "after": after, "exit": process.exited.result(), "again": again.lines}
    finally:
        await sb.close()


async def init_killed(work: Path, params: dict[str, Any]) -> Any:
    """Someone kills the sandbox's init: its processes are gone, and lambdarun knows it."""
    sb = await Sandbox.open(spec(work, "none"))
    try:
        process = await sb.spawn("runtime", ["/bin/sleep", "600"], PATH, Lines())
        os.kill(sb.init_pid, signal.SIGKILL)  # type: ignore[attr-defined]
        code = await asyncio.wait_for(asyncio.shield(process.exited), 10)
        try:
            await sb.spawn("after", ["/bin/true"], PATH, Lines())
            after = "started"
        except OSError as e:
            after = f"OSError: {e.strerror}"
        return {"exit": code, "after": after}
    finally:
        await sb.close()


async def cgroup(work: Path, params: dict[str, Any]) -> Any:
    fd = os.open(os.path.join(params["cgroup"], "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        sb = await Sandbox.open(spec(work, "none"), cgroup_procs=[fd])
        try:
            out = Lines()
            process = await sb.spawn("cg", ["/bin/cat", "/proc/self/cgroup"], PATH, out)
            await process.exited
            process.drain_logs()
            return {"cgroups": out.lines}
        finally:
            await sb.close()
    finally:
        os.close(fd)


def _fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


async def leaks(work: Path, params: dict[str, Any]) -> Any:
    """Everything a sandbox made is gone after close: processes, pasta, descriptors, mounts, files."""
    marker = f"LAMBDARUN_SBX_{os.getpid()}_{time.monotonic_ns()}"
    scratch = work / "scratch"  # where anything temporary of ours would go
    scratch.mkdir()
    os.environ["TMPDIR"] = tempfile.tempdir = str(scratch)
    fds, mounts = _fds(), Path("/proc/self/mountinfo").read_text()
    sb = await Sandbox.open(spec(work, params.get("network", "default")))
    init_pid = getattr(sb, "init_pid", 0)
    await sb.spawn("runtime", [PY, "-I", "-c", KILL_ALL], {**PATH, marker: "1"}, Lines())
    await sb.spawn("extension", ["/bin/sh", "-c", "sleep 600 & sleep 600"], {**PATH, marker: "1"}, Lines())
    deadline = time.monotonic() + 10
    while len(_marked(marker)) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    running = len(_marked(marker))
    await sb.close(grace=0.2)
    return {"running": running, "left": _marked(marker), "helpers_left": _helpers_of(init_pid),
            "fds_equal": _fds() == fds, "mounts_equal": Path("/proc/self/mountinfo").read_text() == mounts,
            "network": sb.network, "temporary_files": os.listdir(scratch)}  # fmt: skip


def _helpers_of(init_pid: int) -> list[str]:
    """Processes on the host that name the sandbox's namespaces (pasta), and init or bwrap if still there."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_text().replace("\0", " ")
            except OSError:
                continue
            if f"/proc/{init_pid}/ns/" in cmdline or (init_pid and int(entry) == init_pid):
                found.append(cmdline)
    return found


async def killed(work: Path, params: dict[str, Any]) -> Any:
    """Opens a sandbox, prints where it is, and waits to be SIGKILLed by the test."""
    sb = await Sandbox.open(spec(work, params.get("network", "default")))
    await sb.spawn("runtime", [PY, "-I", "-c", KILL_ALL], {**PATH, params["marker"]: "1"}, Lines())
    while len(_marked(params["marker"])) < 2:
        await asyncio.sleep(0.02)
    print(json.dumps({"init_pid": getattr(sb, "init_pid", 0), "network": sb.network}), flush=True)
    await asyncio.sleep(600)


async def plain(work: Path, params: dict[str, Any]) -> Any:
    os.environ["LAMBDARUN_SANDBOX"] = "plain"
    sb = await Sandbox.open(spec(work))
    try:
        out = Lines()
        process = await sb.spawn("pwd", ["/bin/sh", "-c", "pwd; id -u"], PATH, out)
        await process.exited
        process.drain_logs()
        return {"sandboxed": sb.sandboxed, "runtime_api": sb.runtime_api, "task": sb.paths.task, "lines": out.lines}
    finally:
        await sb.close()


SCENARIOS = {f.__name__: f for f in (identity, filesystem, ports, freeze, grace, outbound, spawning, kill_all, cgroup,
                                     leaks, killed, plain, init_killed)}  # fmt: skip


def main() -> None:
    name, work = sys.argv[1], Path(sys.argv[2])
    params = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    if not params.get("plain") and (reason := bwrap.unavailable()) is not None:
        print(json.dumps({"unavailable": reason}), flush=True)
        return
    result = asyncio.run(SCENARIOS[name](work, params))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
