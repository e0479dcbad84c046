"""Running the sandbox scenarios (_sandbox_scenarios.py) as root and as an ordinary user made for the tests."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

SCENARIOS = Path(__file__).with_name("_sandbox_scenarios.py")
USER = "lambdarun-test"
WHO = ["root", "user"]


def user_python() -> str:
    """An interpreter an ordinary user can run: ours may live under /root."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no system python3 that an ordinary user can run")


def ordinary_user() -> pwd.struct_passwd:
    """The ordinary user of the tests, created when missing."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        if shutil.which("useradd") is None:
            pytest.skip("cannot create a user for the non-root cases: no useradd")
        subprocess.run(["useradd", "-m", USER], check=True, capture_output=True)
        return pwd.getpwnam(USER)


def run_scenario(who: str, name: str, params: dict[str, Any] | None = None, timeout: float = 60,
                 env: dict[str, str] | None = None) -> tuple[Any, str]:  # fmt: skip
    """Run one scenario as `who` ("root" or "user"); returns its JSON result and its stderr. Skips with the reason
    when the sandbox cannot be built for that user here."""
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("the scenarios run /usr/bin/python3 inside the sandbox, and there is none")
    work = Path(tempfile.mkdtemp(prefix="lambdarun-sbx-"))
    work.chmod(0o755)
    command = [sys.executable, str(SCENARIOS), name, str(work), json.dumps(params or {})]
    if who == "root":
        if os.geteuid() != 0:
            pytest.skip("the root cases need root")
    elif os.geteuid() == 0:
        user = ordinary_user()
        os.chown(work, user.pw_uid, user.pw_gid)
        runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin")
        if runuser is None:
            pytest.skip("no runuser to run the non-root cases")
        command = [runuser, "-u", USER, "--", user_python(), *command[1:]]
    base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if who == "root":
        base.update({k: v for k, v in os.environ.items() if k in ("HOME", "LAMBDARUN_CACHE")})
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd="/",
                              env={**base, **(env or {})})  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0, f"scenario {name} as {who} failed:\n{done.stderr}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if isinstance(result, dict) and "unavailable" in result:
        pytest.skip(f"no sandbox for {who} here: {result['unavailable']}")
    return result, done.stderr
