"""lambdarun's .NET runtime client and Amazon.Lambda.Core, compiled with Mono's `mcs` on first use and cached.

Assemblies built by `mcs` against Mono's mscorlib/System load on .NET Core 3.1 and later, which forward those
names to their own implementations. The build lands in a directory named for the sources' hash, so a changed
source is rebuilt and concurrent first uses do not see each other's half-written files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from ..registry import RuntimeUnavailable

CORE = "Amazon.Lambda.Core"
# The file name Lambda's .NET bootstrap execs (SPEC 6.2), so that wrappers matching on it see what they expect;
# the assembly inside is lambdarun's.
CLIENT = "Amazon.Lambda.RuntimeSupport"
_SOURCES = (f"{CORE}.cs", "RuntimeSupport.cs")
MCS_HINT = "install Mono's C# compiler: `apt-get install mono-mcs`"


def _source(name: str) -> bytes:
    return resources.files("lambdarun.runtimes.dotnet").joinpath(name).read_bytes()


def build_dir(cache: Path) -> Path:
    digest = hashlib.sha256(b"\0".join(_source(name) for name in _SOURCES)).hexdigest()[:16]
    return cache / f"client-{digest}"


def built(cache: Path) -> Path | None:
    directory = build_dir(cache)
    return directory if (directory / f"{CLIENT}.dll").is_file() else None


def mcs() -> str | None:
    return shutil.which("mcs")


def ensure(cache: Path) -> Path:
    """The directory holding Amazon.Lambda.Core.dll and Amazon.Lambda.RuntimeSupport.dll, compiling them first
    when this version of the sources has not been compiled yet."""
    found = built(cache)
    if found is not None:
        return found
    compiler = mcs()
    if compiler is None:
        raise RuntimeUnavailable(f"the .NET runtimes compile lambdarun's runtime client once with `mcs`; {MCS_HINT}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="client-tmp", dir=cache) as scratch:
        work = Path(scratch)
        for name in _SOURCES:
            (work / name).write_bytes(_source(name))
        out = work / "out"
        out.mkdir()
        core = str(out / f"{CORE}.dll")
        _compile(compiler, ["-target:library", f"-out:{core}", str(work / f"{CORE}.cs")])
        _compile(compiler, ["-target:exe", f"-out:{out / CLIENT}.dll", f"-r:{core}", str(work / "RuntimeSupport.cs")])
        try:
            os.rename(out, build_dir(cache))
        except OSError:
            if built(cache) is None:
                raise
    found = built(cache)
    assert found is not None
    # Builds of other sources are of no use any more: environments run copies of the assemblies.
    for stale in cache.glob("client-*"):
        if stale != found and not stale.name.startswith("client-tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    return found


def _compile(compiler: str, arguments: list[str]) -> None:
    result = subprocess.run([compiler, "-nologo", "-optimize+", *arguments], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeUnavailable(f"compiling lambdarun's .NET runtime client failed: {result.stdout.strip()}")
