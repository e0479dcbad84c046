"""`lambdarun runtimes`: every runtime, whether this machine can run it, and what to install if not."""

from __future__ import annotations

import subprocess

from lambdarun.runtimes.registry import all_runtimes


def test_every_runtime_is_listed_with_its_status_and_what_to_install() -> None:
    out = subprocess.run(["lambdarun", "runtimes"], capture_output=True, text=True, check=True, timeout=120).stdout
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(lines) == {spec.id for spec in all_runtimes()}
    for spec in all_runtimes():
        hint = spec.install_hint()
        if hint is None:
            assert lines[spec.id].split()[1] == "ready"
        else:
            assert lines[spec.id].split()[1] == "missing"
            assert hint in lines[spec.id]  # names what to install
    assert "ready" in lines["python3.11"] and "ready" in lines["provided.al2023"]


def test_a_missing_runtime_says_what_to_install() -> None:
    out = subprocess.run(["lambdarun", "runtimes"], capture_output=True, text=True, check=True, timeout=120).stdout
    for line in out.splitlines():
        if " missing " in line:
            assert "install" in line
