"""The .NET Core 3.1 runtime from PyPI's `dotnetcore2` wheel, for machines without a `dotnet` of their own.

The wheel carries a complete framework-dependent .NET Core 3.1 install for Linux x64 (`dotnet`, `host/fxr`,
`shared/Microsoft.NETCore.App/3.1.23`). It is fetched by name with pip, once, into the per-user cache, unpacked
there, and reused offline afterwards.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..registry import RuntimeUnavailable

VERSION = "3.1.23"
REQUIREMENT = f"dotnetcore2=={VERSION}"
WHEEL_SIZE_MB = 31
_PREFIX = "dotnetcore2/bin/"  # the install root inside the wheel


def root(cache: Path) -> Path:
    """Where the unpacked runtime lives (it may not exist yet)."""
    return cache / f"dotnetcore2-{VERSION}"


def installed(cache: Path) -> Path | None:
    """The `dotnet` of an already unpacked runtime, or None."""
    muxer = root(cache) / "dotnet"
    return muxer if os.access(muxer, os.X_OK) else None


def fetchable() -> str | None:
    """Why the wheel cannot be fetched on this machine, or None when it can."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"PyPI's dotnetcore2 wheel is for Linux x86_64 only, and this machine is {platform.machine()}"
    try:
        import pip  # noqa: F401
    except ImportError:
        return f"fetching it needs pip in {sys.executable}"
    return None


def ensure(cache: Path) -> Path:
    """The `dotnet` of the unpacked runtime, fetching and unpacking the wheel first when needed."""
    found = installed(cache)
    if found is not None:
        return found
    reason = fetchable()
    if reason is not None:
        raise RuntimeUnavailable(f"the .NET runtimes need `dotnet`; {reason}: install .NET from Microsoft")
    cache.mkdir(parents=True, exist_ok=True)
    print(f"lambdarun: fetching the .NET Core {VERSION} runtime ({REQUIREMENT} from PyPI, {WHEEL_SIZE_MB} MB) "
          f"into {cache}; once", file=sys.stderr, flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="dotnetcore2-", dir=cache) as scratch:
        wheel = _download(Path(scratch))
        unpacked = Path(scratch) / "root"
        _unpack(wheel, unpacked)
        try:
            os.rename(unpacked, root(cache))  # atomic: a concurrent fetch either won or loses here
        except OSError:
            if installed(cache) is None:
                raise
    found = installed(cache)
    assert found is not None
    return found


def _download(directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--platform", "manylinux1_x86_64", "--disable-pip-version-check", "--quiet",
               "-d", str(directory), REQUIREMENT]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wheels = list(directory.glob("dotnetcore2-*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeUnavailable(
            f"the .NET runtimes need `dotnet`; fetching {REQUIREMENT} from PyPI failed"
            f"{': ' + detail[-1] if detail else ''}. Install .NET from Microsoft, or retry online"
        )
    return wheels[0]


def _unpack(wheel: Path, destination: Path) -> None:
    """Extract the install root, keeping the executable bits that zipfile alone drops."""
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if not member.filename.startswith(_PREFIX) or member.is_dir():
                continue
            relative = Path(member.filename[len(_PREFIX) :])
            if relative.is_absolute() or ".." in relative.parts:
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            mode = (member.external_attr >> 16) & 0o777
            target.chmod(0o755 if mode & 0o111 else 0o644)
