"""`lambdarun runtimes`: every runtime, whether a sandbox runs it here, and what to install if not."""

from __future__ import annotations

import subprocess

from lambdarun.runtimes.registry import State, all_runtimes


def runtimes_lines() -> dict[str, str]:
    out = subprocess.run(["lambdarun", "runtimes"], capture_output=True, text=True, check=True, timeout=120).stdout
    return {line.split()[0]: line for line in out.splitlines()}


def test_every_runtime_is_listed_with_its_status_and_what_to_install() -> None:
    lines = runtimes_lines()
    assert set(lines) == {spec.id for spec in all_runtimes()}
    for spec in all_runtimes():
        status = spec.status()
        assert lines[spec.id].split()[1] == status.state.value
        assert status.detail in lines[spec.id]  # names what it holds, or what to install
    assert "ready" in lines["python3.11"] and "ready" in lines["provided.al2023"]


def test_a_runtime_not_ready_says_what_to_install() -> None:
    for runtime, line in runtimes_lines().items():
        state = line.split()[1]
        if state == State.NOT_INSTALLED.value:
            assert f"`lambdarun runtimes install {runtime}`" in line
        elif state == State.MISSING.value:
            assert "install" in line


def test_invoke_help_names_every_runtime() -> None:
    out = subprocess.run(["lambdarun", "invoke", "--help"], capture_output=True, text=True, check=True).stdout
    words = out.replace(",", " ").split()

    assert all(spec.id in words for spec in all_runtimes())


def test_installing_an_unknown_runtime_names_the_supported_ones() -> None:
    done = subprocess.run(["lambdarun", "runtimes", "install", "nodejs99.x"], capture_output=True, text=True)

    assert done.returncode == 2
    assert "unknown runtime nodejs99.x; supported: python3.11, python3.12" in done.stderr
