"""Nothing is left behind even when lambdarun itself is killed with SIGKILL, which it cannot clean up after."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from lambdarun import Function

SLEEPER = "import time\n\ndef handler(event, context):\n    time.sleep(60)\n"


def _marked(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _wait_until(condition, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_killed_lambdarun_leaves_no_process_and_its_files_go_at_the_next_start(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(SLEEPER)
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    marker = f"LAMBDARUN_KILL_MARKER_{uuid.uuid4().hex}"
    env = {**os.environ, "TMPDIR": str(scratch_root)}
    command = ["lambdarun", "invoke", str(code), "--runtime", "python3.11", "--handler", "app.handler",
               "--timeout", "60", "--env", f"{marker}=1"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_until(lambda: len(_marked(marker)) > 0), "the runtime never started"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    assert _wait_until(lambda: _marked(marker) == []), "the sandbox outlived the lambdarun that started it"
    left = [p.name for p in scratch_root.iterdir() if p.name.startswith("lambdarun-")]
    assert len(left) == 1  # SIGKILL gives no chance to clean up...

    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(scratch_root)
    import tempfile

    tempfile.tempdir = None
    try:
        with Function(code, "python3.11", "app.handler"):
            pass  # ...so the next start sweeps what a dead lambdarun left
    finally:
        if previous is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = previous
        tempfile.tempdir = None
    assert [p.name for p in scratch_root.iterdir() if p.name.startswith("lambdarun-")] == []
