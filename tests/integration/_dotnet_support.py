"""The .NET fixtures (tests/fixtures/dotnet), compiled with `mcs` once per test session.

`build(tmp_path_factory)` gives a code directory with Handlers.dll and its .runtimeconfig.json/.deps.json, and a
layer with the startup hooks (ExtensionHook.dll, ThrowingHook.dll) and a wrapper script (probing.sh). Where .NET
cannot run the tests skip, except in CI (CI=true), which installs what they need: there they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from lambdarun.runtimes import registry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dotnet"
RUNTIME = "dotnet8"


@dataclass(frozen=True)
class DotnetBuild:
    code: Path  # /var/task: Handlers.dll, Handlers.runtimeconfig.json, Handlers.deps.json
    layer: Path  # /opt: ExtensionHook.dll, ThrowingHook.dll, probing.sh


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the .NET tests: {reason}")
    pytest.skip(reason)


_built: list[DotnetBuild] = []  # one build per session, shared by every test module


def build(factory: pytest.TempPathFactory) -> DotnetBuild:
    if not _built:
        _built.append(_build(factory))
    return _built[0]


def _build(factory: pytest.TempPathFactory) -> DotnetBuild:
    spec = registry.get_runtime(RUNTIME)
    hint = spec.install_hint()
    if hint is not None:
        unavailable(f"{RUNTIME} cannot run here: {hint}")
    try:
        spec.locate()  # fetches .NET and compiles lambdarun's client when needed
    except registry.RuntimeUnavailable as exc:
        unavailable(str(exc))
    from lambdarun.runtimes import dotnet
    from lambdarun.runtimes.dotnet import client

    core = client.ensure(dotnet.cache()) / f"{client.CORE}.dll"
    mcs = shutil.which("mcs")
    assert mcs is not None  # the client was compiled with it, or install_hint said so
    root = factory.mktemp("dotnet")
    code, layer = root / "code", root / "layer"
    code.mkdir()
    layer.mkdir()

    def compile_library(source: str, out: Path, *references: Path) -> None:
        command = [mcs, "-nologo", "-target:library", f"-out:{out}", *(f"-r:{r}" for r in references),
                   str(FIXTURES / source)]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    compile_library("Handlers.cs", code / "Handlers.dll", core)
    for name in ("Handlers.runtimeconfig.json", "Handlers.deps.json"):
        shutil.copyfile(FIXTURES / name, code / name)
    compile_library("ExtensionHook.cs", layer / "ExtensionHook.dll")
    compile_library("ThrowingHook.cs", layer / "ThrowingHook.dll")
    shutil.copyfile(FIXTURES / "probing.sh", layer / "probing.sh")
    (layer / "probing.sh").chmod(0o755)
    return DotnetBuild(code, layer)
