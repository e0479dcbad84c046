"""The .NET runtimes (dotnet10, dotnet8, dotnet6, dotnetcore3.1): their image and lambdarun's runtime client.

`/var/lang/bin/dotnet` is the machine's own `dotnet` when it has one, else .NET Core 3.1 from PyPI's `dotnetcore2`
wheel (`dotnetcore2.py`). `/var/runtime` holds lambdarun's runtime client and Amazon.Lambda.Core, compiled with
`mcs` on first use (`client.py`), and the bootstrap script Lambda's .NET runtimes have (`bootstrap.sh`).

registry.py imports this module when a .NET runtime is used, never at its own import, so that these modules may
import it.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ...sandbox.view import LAMBDA_PATHS, Bind, HostDirs, Paths
from ..cache import cache_root
from ..registry import Prepared
from . import client, dotnetcore2

LAMBDA_MAJOR = {"dotnet10": "10", "dotnet8": "8", "dotnet6": "6", "dotnetcore3.1": "3.1"}
LAMBDA_NAME = {"dotnet10": ".NET 10", "dotnet8": ".NET 8", "dotnet6": ".NET 6", "dotnetcore3.1": ".NET Core 3.1"}
_ICU_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib64")


def cache() -> Path:
    return cache_root() / "dotnet"


@dataclass(frozen=True)
class Install:
    """A .NET install: its `dotnet` muxer, the runtime versions it has, and where it comes from."""

    muxer: str  # real path; `host/` and `shared/` are beside it
    versions: tuple[str, ...]  # Microsoft.NETCore.App versions, e.g. ("8.0.11",)
    origin: str  # "machine" | "dotnetcore2"

    @property
    def root(self) -> Path:
        return Path(self.muxer).parent

    def describe(self) -> str:
        if self.origin == "dotnetcore2":
            return f".NET Core {dotnetcore2.VERSION} from PyPI's dotnetcore2"
        return f".NET {', '.join(self.versions)} ({self.muxer})"


def _list_runtimes(muxer: str) -> tuple[str, ...]:
    try:
        out = subprocess.run([muxer, "--list-runtimes"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(re.findall(r"^Microsoft\.NETCore\.App (\S+) ", out, re.MULTILINE))


@functools.cache
def machine_install(major: str) -> Install | None:
    """The machine's own `dotnet`, preferring one that has a runtime of `major`; None when there is none."""
    home = Path.home()
    candidates = [shutil.which("dotnet"), os.path.join(os.environ.get("DOTNET_ROOT", "/nonexistent"), "dotnet"),
                  "/usr/share/dotnet/dotnet", "/usr/lib/dotnet/dotnet", "/usr/local/share/dotnet/dotnet",
                  str(home / ".dotnet" / "dotnet")]  # fmt: skip
    installs: list[Install] = []
    for path in candidates:
        if not path or not os.access(path, os.X_OK) or not os.path.isfile(path):
            continue
        real = os.path.realpath(path)
        if any(i.muxer == real for i in installs) or real.startswith(str(cache())):
            continue
        versions = _list_runtimes(real)
        if versions:
            installs.append(Install(real, versions, "machine"))
    for install in installs:
        if any(v == major or v.startswith(f"{major}.") for v in install.versions):
            return install
    return installs[0] if installs else None


def find(identifier: str) -> Install | None:
    """The install a runtime would use, without fetching or compiling anything."""
    found = machine_install(LAMBDA_MAJOR[identifier])
    if found is not None:
        return found
    muxer = dotnetcore2.installed(cache())
    return Install(str(muxer), (dotnetcore2.VERSION,), "dotnetcore2") if muxer is not None else None


def locate(identifier: str) -> str:
    """The real path of the `dotnet` the runtime uses, after fetching .NET and compiling the client if needed;
    raises RuntimeUnavailable."""
    install = find(identifier)
    if install is None:
        dotnetcore2.ensure(cache())
        install = find(identifier)
        assert install is not None
    client.ensure(cache())
    return install.muxer


def install_hint(identifier: str) -> str | None:
    """What to install for the runtime to run here, or None when it can (perhaps after fetching .NET once)."""
    if find(identifier) is None:
        reason = dotnetcore2.fetchable()
        if reason is not None:
            return f"runtime {identifier} needs `dotnet`; {reason}: install .NET from Microsoft"
    if client.built(cache()) is None and client.mcs() is None:
        return f"runtime {identifier} compiles lambdarun's .NET runtime client once with `mcs`; {client.MCS_HINT}"
    return None


def client_note(identifier: str) -> str:
    """Which .NET actually runs, next to the one Lambda runs."""
    lambda_runs = f"Lambda runs {LAMBDA_NAME[identifier]}"
    install = find(identifier)
    if install is None:
        return (f"runs .NET Core {dotnetcore2.VERSION} ({dotnetcore2.REQUIREMENT} from PyPI, fetched on first use) "
                f"with lambdarun's runtime client; {lambda_runs}")  # fmt: skip
    return f"runs {install.describe()} with lambdarun's runtime client; {lambda_runs}"


def prepare(identifier: str, host: HostDirs, seen: Paths) -> Prepared:
    """Fill /var/lang/bin (the `dotnet` muxer, with its `host` and `shared` beside it, so that DOTNET_ROOT works)
    and /var/runtime (the client, Amazon.Lambda.Core, runtime-release and the bootstrap script)."""
    muxer = locate(identifier)
    install = find(identifier)
    assert install is not None
    built = client.ensure(cache())
    binds: tuple[Bind, ...] = ()
    if seen.lang == LAMBDA_PATHS.lang:
        # The install's directory mounted as /var/lang/bin: a link into it would point where the sandbox shows
        # nothing (the cache under the user's home, or /tmp).
        binds = (Bind(install.root, f"{seen.lang}/bin"),)
    else:
        lang_bin = host.lang / "bin"
        (lang_bin / "dotnet").symlink_to(muxer)
        for name in ("host", "shared"):
            if (install.root / name).is_dir():
                (lang_bin / name).symlink_to(install.root / name)
    for name in (client.CLIENT, client.CORE):
        # Copies (tens of KB), not links: the host resolves links, and the client's path would show the cache's.
        shutil.copyfile(built / f"{name}.dll", host.runtime / f"{name}.dll")
    (host.runtime / "runtime-release").write_text(f"LAMBDA_RUNTIME_NAME={identifier}\n")
    exports = globalization(install)
    template = resources.files("lambdarun.runtimes.dotnet").joinpath("bootstrap.sh").read_text()
    script = (
        template.replace("@EXPORTS@", "\n".join(f'export {k}="${{{k}:-{v}}}"' for k, v in exports.items()))
        .replace("@RUNTIME_DIR@", _quoted(seen.runtime))
        .replace("@LANG_BIN@", _quoted(f"{seen.lang}/bin"))
    )
    bootstrap = host.runtime / "bootstrap"
    bootstrap.write_text(script)
    bootstrap.chmod(0o755)
    # Always through the script: the command depends on the handler and the task root's files, as on Lambda.
    return Prepared([f"{seen.runtime}/bootstrap"], f"dotnet:{LAMBDA_MAJOR[identifier]}.lambdarun", binds=binds)


def globalization(install: Install) -> dict[str, str]:
    """Defaults that let .NET start without the ICU it expects: invariant globalization when the machine has no
    libicu, and for .NET Core 3.1 (which only probes ICU versions older than today's) the version it has."""
    majors = sorted({int(m) for d in _ICU_DIRS for p in glob.glob(f"{d}/libicuuc.so.*")
                     if (m := p.rsplit(".so.", 1)[1].split(".")[0]).isdigit()})  # fmt: skip
    if not majors:
        return {"DOTNET_SYSTEM_GLOBALIZATION_INVARIANT": "1"}
    if any(v.startswith("3.") for v in install.versions):
        return {"CLR_ICU_VERSION_OVERRIDE": str(majors[-1])}
    return {}


def _quoted(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"
