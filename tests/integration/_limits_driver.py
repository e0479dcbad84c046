"""Scenarios for test_limits.py, run as `python _limits_driver.py SCENARIO [JSON ARGS]` by whoever the test runs as
(root, or the ordinary test user); each prints one JSON object with what it saw.

Each scenario drives the sandbox modules directly: a plain `subprocess.Popen` whose `preexec_fn` joins the cgroup
stands in for the sandbox's spawn.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lambdarun.sandbox import cgroups, storage
from lambdarun.sandbox.limits import Limits, announce_unenforced, apply_rlimits

PY = sys.executable
CLONE_NEWUSER = 0x10000000


def spawn(cgroup: cgroups.Cgroup | None, code: str, **kwargs: Any) -> subprocess.Popen[str]:
    fds = cgroup.join_fds() if cgroup is not None else ()
    return subprocess.Popen(
        [PY, "-c", code], preexec_fn=lambda: cgroups.join(fds), text=True, stdout=subprocess.PIPE, **kwargs
    )


def oom(memory_mb: int, allocate_mb: int) -> dict[str, Any]:
    cgroup = cgroups.create(Limits(memory_mb))
    try:
        child = spawn(cgroup, f"b = bytearray({allocate_mb} << 20); print('allocated', flush=True)")
        out, _ = child.communicate()
        return {
            "returncode": child.returncode,
            "printed": out,
            "oom_killed": cgroup.oom_killed(),
            "oom_killed_again": cgroup.oom_killed(),
            "peak_mb": cgroup.peak_mb(),
        }
    finally:
        cgroup.close()


HOLD = """
import sys, time
with open({cache!r}, "wb") as f:  # page cache charged to the cgroup, which Max Memory Used leaves out
    for _ in range({cache_mb}):
        f.write(b"x" * (1 << 20))
held = bytearray({hold_mb} << 20)
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]) // 1024, flush=True)
sys.stdin.readline()
"""


def peak(hold_mb: int, cache_mb: int) -> dict[str, Any]:
    cgroup = cgroups.create(Limits(512))
    with tempfile.NamedTemporaryFile(dir="/var/tmp") as cache:
        try:
            code = HOLD.format(cache=cache.name, cache_mb=cache_mb, hold_mb=hold_mb)
            child = spawn(cgroup, code, stdin=subprocess.PIPE)
            assert child.stdout is not None and child.stdin is not None
            hwm_mb = int(child.stdout.readline())
            first = cgroup.peak_mb()
            child.stdin.write("\n")
            child.stdin.flush()
            child.wait()
            return {"vmhwm_mb": hwm_mb, "peak_mb": first, "peak_after_exit_mb": cgroup.peak_mb()}
        finally:
            cgroup.close()


WRITE = """
import errno, os
chunk = os.urandom(1 << 20)
written = 0
try:
    with open(os.path.join({path!r}, "big"), "wb") as f:
        for _ in range({write_mb}):
            f.write(chunk)
            written += 1
            f.flush()
    print("ok", written, flush=True)
except OSError as exc:
    print(errno.errorcode[exc.errno], written, flush=True)
"""


def tmp_write(memory_mb: int, ephemeral_mb: int, write_mb: int) -> dict[str, Any]:
    """Root: write to the loop-mounted /tmp from a process in the memory cgroup."""
    scratch = Path(tempfile.mkdtemp(prefix="lambdarun-test-"))
    limits = Limits(memory_mb, ephemeral_mb)
    cgroup = cgroups.create(limits)
    tmp = storage.EphemeralStorage.create(scratch, limits.ephemeral_mb)
    try:
        assert tmp.host_path is not None
        child = spawn(cgroup, WRITE.format(path=str(tmp.host_path), write_mb=write_mb))
        out, _ = child.communicate()
        outcome, written = out.split()
        return {
            "returncode": child.returncode,
            "outcome": outcome,
            "written_mb": int(written),
            "oom_killed": cgroup.oom_killed(),
            "peak_mb": cgroup.peak_mb(),
        }
    finally:
        tmp.close()
        cgroup.close()
        (scratch / "tmp").rmdir()
        scratch.rmdir()


def tmpfs_write(ephemeral_mb: int, write_mb: int) -> dict[str, Any]:
    """Not root: the storage is a tmpfs that bwrap mounts in a user namespace of its own."""
    tmp = storage.EphemeralStorage.create(Path(tempfile.gettempdir()), ephemeral_mb)
    argv = ["bwrap", "--unshare-user", "--ro-bind", "/", "/", "--dev", "/dev", *tmp.mount_args("/tmp")]
    code = WRITE.format(path="/tmp", write_mb=write_mb)
    done = subprocess.run([*argv, "--", PY, "-c", code], capture_output=True, text=True)
    if done.returncode != 0 and not done.stdout:
        return {"skip": f"bwrap cannot make a sandbox here: {done.stderr.strip()}"}
    outcome, written = done.stdout.split()
    return {"host_path": tmp.host_path, "tmpfs_bytes": tmp.tmpfs_bytes, "outcome": outcome, "written_mb": int(written)}


THREADS = """
import os, threading, time
threading.stack_size(64 * 1024)
stop = threading.Event()
started = 0
while True:
    try:
        threading.Thread(target=stop.wait, daemon=True).start()
        started += 1
    except RuntimeError:
        break
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    fork = "ok"
except OSError as exc:
    fork = type(exc).__name__
tasks = len(os.listdir("/proc/self/task"))
stop.set()
print(started, tasks, fork, flush=True)
"""


def tasks(in_cgroup: bool) -> dict[str, Any]:
    """Start threads until one fails: with a pids cgroup, or (not root) RLIMIT_NPROC set in a user namespace."""
    limits = Limits(1024)
    if in_cgroup:
        cgroup = cgroups.create(limits)
        try:
            out, _ = spawn(cgroup, THREADS).communicate()
        finally:
            cgroup.close()
    else:

        def enter() -> None:
            if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUSER) != 0:  # os.unshare is Python 3.12+
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
            apply_rlimits(limits, nproc=True)

        try:
            out = subprocess.run([PY, "-c", THREADS], preexec_fn=enter, capture_output=True, text=True).stdout
        except subprocess.SubprocessError as exc:
            return {"skip": f"cannot enter a user namespace: {exc}"}
    started, total, fork = out.split()
    return {"threads_started": int(started), "tasks": int(total), "fork": fork}


FILES = """
import os
opened = []
try:
    while True:
        opened.append(os.open("/dev/null", os.O_RDONLY))
except OSError as exc:
    import errno
    os.close(opened.pop())  # listing /proc/self/fd takes one, in its place
    print(len(os.listdir("/proc/self/fd")), max(opened) + 1, errno.errorcode[exc.errno], flush=True)
"""


def files() -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-c", FILES], preexec_fn=lambda: apply_rlimits(Limits(128), nproc=False), capture_output=True, text=True
    ).stdout
    count, highest, error = out.split()
    return {"open": int(count), "highest_fd": int(highest), "error": error}


TICKER = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # a grandchild in a session of its own, as daemons do
        while True:
            with open({path!r}, "a") as f:
                f.write(".")
            time.sleep(0.005)
    os._exit(0)
print("started", flush=True)
sys.stdin.readline()
"""


def freeze() -> dict[str, Any]:
    cgroup = cgroups.create(Limits(256))
    with tempfile.NamedTemporaryFile(dir="/var/tmp") as ticks:
        os.chmod(ticks.name, 0o666)
        try:
            child = spawn(cgroup, TICKER.format(path=ticks.name), stdin=subprocess.PIPE)
            assert child.stdout is not None
            child.stdout.readline()
            time.sleep(0.1)
            running = _ticks_during(ticks.name, 0.3)
            cgroup.freeze()
            time.sleep(0.05)
            frozen = _ticks_during(ticks.name, 0.3)
            states = {pid: _state(pid) for pid in cgroup.pids()}
            cgroup.thaw()
            thawed = _ticks_during(ticks.name, 0.3)
            return {"running": running, "frozen": frozen, "thawed": thawed, "states": states}
        finally:
            cgroup.close()


def _ticks_during(path: str, seconds: float) -> int:
    before = os.path.getsize(path)
    time.sleep(seconds)
    return os.path.getsize(path) - before


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def close(with_storage: bool) -> dict[str, Any]:
    """A cgroup with a process still running in it, and (root) the /tmp storage, closed."""
    scratch = Path(tempfile.mkdtemp(prefix="lambdarun-test-"))
    cgroup = cgroups.create(Limits(128))
    tmp = storage.EphemeralStorage.create(scratch, 512) if with_storage else None
    child = spawn(cgroup, "import time; time.sleep(60)")
    paths = cgroup.paths
    device = storage._mounted_device(tmp.host_path) if tmp is not None and tmp.host_path else None
    cgroup.close()
    if tmp is not None:
        tmp.close()
    child.wait(5)
    seen = {
        "cgroup_paths": [str(p) for p in paths],
        "left": [str(p) for p in paths if p.exists()],
        "returncode": child.returncode,
        "device": device,
        "mounted": any(str(scratch) in line for line in Path("/proc/self/mountinfo").read_text().splitlines()),
        "loop_attached": device is not None and Path(f"/sys/block/{device[5:]}/loop").exists(),
        "scratch_left": sorted(p.name for p in scratch.iterdir()),
    }
    if not seen["mounted"]:
        shutil.rmtree(scratch)
    return seen


def orphan(memory_mb: int) -> dict[str, Any]:
    """Be a lambdarun that gets SIGKILLed: make a cgroup with a process in it and (root) a /tmp, then wait."""
    scratch = Path(tempfile.mkdtemp(prefix="lambdarun-test-"))
    cgroup = cgroups.create(Limits(memory_mb))
    tmp = storage.EphemeralStorage.create(scratch, 512) if os.geteuid() == 0 else None
    child = spawn(cgroup, "import time; time.sleep(60)")
    device = storage._mounted_device(tmp.host_path) if tmp is not None and tmp.host_path else None
    print(json.dumps({"name": cgroup.name, "pid": child.pid, "scratch": str(scratch), "device": device}), flush=True)
    time.sleep(60)
    return {}


def sweep() -> dict[str, Any]:
    return {"storage": storage.sweep(), "cgroups": cgroups.sweep()}


def attached_unmounted() -> dict[str, Any]:
    """Be a lambdarun killed between attaching its /tmp image and mounting it: the device has no autoclear."""
    scratch = Path(tempfile.mkdtemp(prefix="lambdarun-test-"))
    image = scratch / storage.IMAGE
    with open(image, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True)
    return {"device": device.stdout.strip(), "scratch": str(scratch)}


def unavailable() -> dict[str, Any]:
    try:
        cgroups.create(Limits(128)).close()
        return {"created": True}
    except cgroups.CgroupUnavailable as exc:
        line = announce_unenforced(str(exc), uid_is_root_outside=False)
        announce_unenforced(str(exc), uid_is_root_outside=False)
        tmp = storage.EphemeralStorage.create(Path(tempfile.gettempdir()), 512)
        return {"created": False, "reason": str(exc), "line": line, "tmpfs_bytes": tmp.tmpfs_bytes}


if __name__ == "__main__":
    scenario, *rest = sys.argv[1:]
    kwargs = json.loads(rest[0]) if rest else {}
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    print(json.dumps(globals()[scenario](**kwargs), default=str))
