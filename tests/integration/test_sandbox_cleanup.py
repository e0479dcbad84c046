"""Nothing of a sandbox is left: not after close, and not when lambdarun itself is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from _sandbox_support import SCENARIOS, WHO, ordinary_user, run_scenario, user_python


@pytest.mark.parametrize("who", WHO)
def test_close_leaves_no_process_descriptor_mount_or_helper(who: str) -> None:
    seen, _ = run_scenario(who, "leaks")
    assert seen["running"] == 5  # two runtimes' worth of processes, setsid and backgrounded ones included
    assert seen["left"] == []
    assert seen["helpers_left"] == []  # no pasta, no init, no bwrap
    assert seen["fds_equal"] and seen["mounts_equal"]
    assert seen["temporary_files"] == []


def _marked(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _naming(init_pid: int) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_text().replace("\0", " ")
            except OSError:
                continue
            if f"/proc/{init_pid}/ns/" in cmdline or int(entry) == init_pid:
                found.append(cmdline)
    return found


def _eventually(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


@pytest.mark.slow
@pytest.mark.parametrize("who", WHO)
def test_a_sigkilled_lambdarun_takes_its_sandbox_with_it(who: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("root runs both cases here")
    marker = f"LAMBDARUN_SBX_KILLED_{uuid.uuid4().hex}"
    work = Path(tempfile.mkdtemp(prefix="lambdarun-sbx-"))
    work.chmod(0o755)
    command = [sys.executable, str(SCENARIOS), "killed", str(work), json.dumps({"marker": marker})]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.path.expanduser("~")}
    if who == "user":
        user = ordinary_user()
        os.chown(work, user.pw_uid, user.pw_gid)
        # setpriv execs the scenario itself (runuser would stay its parent and take the SIGKILL instead)
        command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
                   user_python(), *command[1:]]  # fmt: skip
        env["HOME"] = user.pw_dir
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/", env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"the scenario did not start: {process.stderr.read() if process.stderr else ''}")
        started = json.loads(line)
        if "unavailable" in started:
            pytest.skip(f"no sandbox for {who} here: {started['unavailable']}")
        assert _marked(marker), "the sandbox's processes never ran"
        assert _naming(started["init_pid"]), "init (and pasta, with outbound network) should be running"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert _eventually(lambda: _marked(marker) == []), "the sandbox outlived the lambdarun that made it"
        assert _eventually(lambda: _naming(started["init_pid"]) == []), _naming(started["init_pid"])
    finally:
        process.kill()
        process.wait()
        for pid in _marked(marker):  # never leave them behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(work)], check=False)
