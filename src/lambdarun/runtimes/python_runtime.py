"""The Python runtimes (python3.11-3.13): this machine's interpreter at /var/lang, PyPI's packages at /var/runtime.

/var/lang is the interpreter's own prefix (pyenv's or the system's), mounted read-only, with every site-packages
directory of it hidden under an empty one: what is pip-installed on this machine never imports in a function.
/var/runtime is the image: awslambdaric, boto3 and the rest of what Lambda ships (pins.PYTHON_PACKAGES), wheels for
the runtime's Python version fetched by the pip of the Python that runs lambdarun, then byte-compiled by the
runtime's own interpreter so a cold start does not compile boto3 again.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..sandbox.spec import Bind
from ..sandbox.view import LAMBDA_PATHS, HostDirs, Paths
from . import cache, pins
from .base import (
    Prepared,
    RuntimeUnavailable,
    State,
    Status,
    bootstrap_script,
    install_command,
    link_entries,
    resource,
    write_if_changed,
)
from .fetch import FetchError, Progress

FORMAT = 1  # bumped when the layout of the image changes
EMPTY = "empty"  # the image's empty directory, mounted over the interpreter's own site-packages


@dataclass(frozen=True)
class PythonHome:
    """A Python installation on this machine."""

    executable: Path  # real path of bin/pythonX.Y
    prefix: Path  # its sys.base_prefix, mounted at /var/lang
    version: str  # 3.12.1
    site_dirs: tuple[str, ...]  # its site-packages directories, relative to the prefix: masked


class PythonRuntime:
    def __init__(self, runtime_id: str, minor: str) -> None:
        self.id = runtime_id
        self.minor = minor  # 3.12
        self.image_name = f"{runtime_id}-{cache.digest(FORMAT, pins.PYTHON_PACKAGES, pins.PYTHON_PLATFORM)}"

    # -- readiness
    def status(self) -> Status:
        try:
            home = find_python(self.minor)
        except RuntimeUnavailable as exc:
            return Status(State.MISSING, str(exc))
        image = cache.load(self.image_name)
        if image is None:
            if importlib.util.find_spec("pip") is None:
                return Status(State.MISSING, _needs_pip(self.id))
            return Status(
                State.NOT_INSTALLED,
                f"Python {home.version} is here; its image ({_packages()} from PyPI) "
                f"is fetched on first use, or now with {install_command(self.id)}",
            )
        self._refresh(image)
        from .probe import in_sandbox

        check = "import sys; sys.path.insert(0, '/var/runtime'); import awslambdaric, boto3"
        env = {"PATH": "/var/lang/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": "/var/lang/lib", "LANG": "C.UTF-8"}
        error = in_sandbox(self._binds(image, home, LAMBDA_PATHS), [f"/var/lang/bin/python{self.minor}", "-c", check],
                           env)  # fmt: skip
        if error is not None:
            return Status(State.MISSING, f"the sandbox cannot start Python {home.version} from {home.prefix}: {error}")
        return Status(State.READY, f"Python {home.version} ({home.prefix}); {_packages()}")

    def locate(self) -> str:
        home = find_python(self.minor)
        image = cache.load(self.image_name) or self.install(Progress())
        self._refresh(image)
        return str(home.executable)

    # -- the image
    def image(self) -> cache.Image | None:
        return cache.load(self.image_name)

    def install(self, progress: Progress, replace: bool = False) -> cache.Image:
        home = find_python(self.minor)
        if importlib.util.find_spec("pip") is None:
            raise RuntimeUnavailable(_needs_pip(self.id))

        def fill(root: Path) -> dict[str, object]:
            runtime = root / "runtime"
            progress.step(f"fetching {self.id}: {_packages()} from PyPI")
            command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
                       "--no-warn-script-location", "--no-compile", "--retries", "1", "--timeout", "15",
                       "--target", str(runtime), "--only-binary=:all:", "--implementation", "cp",
                       "--python-version", self.minor, "--platform", pins.PYTHON_PLATFORM,
                       *pins.PYTHON_PACKAGES]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise FetchError(f"pip could not fetch {self.id}'s packages: {_tail(done.stderr or done.stdout)}")
            # Compiled by the runtime's interpreter, with the paths the sandbox shows in tracebacks.
            compile_all = [str(home.executable), "-I", "-m", "compileall", "-q", "-j", "0", "-s", str(runtime),
                           "-p", LAMBDA_PATHS.runtime, str(runtime)]  # fmt: skip
            compiled = subprocess.run(compile_all, capture_output=True, text=True)
            if compiled.returncode != 0:
                raise RuntimeUnavailable(f"compiling {self.id}'s packages failed: {_tail(compiled.stdout)}")
            return {"runtime": self.id, "packages": list(pins.PYTHON_PACKAGES)}

        try:
            return cache.build(
                self.image_name,
                fill,
                replace=replace,
                waiting=lambda: progress.step(f"waiting for another lambdarun building {self.id}"),
            )
        except FetchError as exc:
            raise RuntimeUnavailable(
                f"runtime {self.id} needs its image, and {exc}; connect to PyPI (or set "
                f"PIP_INDEX_URL), then {install_command(self.id)}"
            ) from exc

    def _refresh(self, image: cache.Image) -> None:
        """lambdarun's own files in the image, brought up to date without the network."""
        (image.root / EMPTY).mkdir(mode=0o755, exist_ok=True)
        write_if_changed(image.runtime / "bootstrap.py", resource("python/bootstrap.py"))
        script = bootstrap_script(f"AWS_Lambda_{self.id}", self._command(LAMBDA_PATHS), {})
        write_if_changed(image.runtime / "bootstrap", script, mode=0o755)

    def _command(self, seen: Paths) -> list[str]:
        return [f"{seen.lang}/bin/python{self.minor}", f"{seen.runtime}/bootstrap.py"]

    # -- one environment
    def prepare(self, host: HostDirs, seen: Paths, memory_mb: int) -> Prepared:
        home = find_python(self.minor)
        image = cache.load(self.image_name)
        if image is None:
            raise RuntimeUnavailable(f"runtime {self.id} is not installed: {install_command(self.id)}")
        version = f"python:{self.minor}.lambdarun"
        execution_env = f"AWS_Lambda_{self.id}"
        if seen == LAMBDA_PATHS:
            return Prepared([f"{seen.runtime}/bootstrap"], version, self._command(seen),
                            {"AWS_EXECUTION_ENV": execution_env}, self._binds(image, home, seen))  # fmt: skip
        # Without a sandbox: the image's files linked into the environment's runtime directory, and a virtual
        # environment's pyvenv.cfg at /var/lang, which keeps the interpreter's own site-packages out of sys.path.
        link_entries(image.runtime, host.runtime, skip=("bootstrap",))
        (host.lang / "pyvenv.cfg").write_text(
            f"home = {home.executable.parent}\ninclude-system-site-packages = false\nversion = {home.version}\n"
        )
        for name in (f"python{self.minor}", "python3", "python"):
            (host.lang / "bin" / name).symlink_to(home.executable)
        write_if_changed(host.runtime / "bootstrap", bootstrap_script(execution_env, self._command(seen), {}), 0o755)
        return Prepared(
            [f"{seen.runtime}/bootstrap"], version, self._command(seen), {"AWS_EXECUTION_ENV": execution_env}
        )

    @staticmethod
    def _binds(image: cache.Image, home: PythonHome, seen: Paths) -> tuple[Bind, ...]:
        """The image at /var/runtime, the interpreter's prefix at /var/lang, and an empty directory over each of
        its site-packages; with the system's Python (prefix /usr), also over /usr/local, which the sandbox hides at
        its own place."""
        hidden = ["local"] if home.prefix == Path("/usr") and (home.prefix / "local").is_dir() else []
        hidden += [d for d in home.site_dirs if not any(Path(d).is_relative_to(h) for h in hidden)]
        empty = image.root / EMPTY
        masks = (Bind(empty, f"{seen.lang}/{relative}") for relative in hidden)
        return (Bind(image.runtime, seen.runtime), Bind(home.prefix, seen.lang), *masks)


# -- this machine's interpreters
_PROBE = """
import json, os, site, sys
prefix = os.path.realpath(sys.base_prefix)
dirs = [os.path.realpath(d) for d in site.getsitepackages([sys.base_prefix, sys.base_exec_prefix])]
print(json.dumps({"executable": os.path.realpath(sys.executable), "prefix": prefix,
                  "version": "%d.%d.%d" % sys.version_info[:3], "site": [d for d in dirs if os.path.isdir(d)]}))
"""


@functools.cache
def find_python(minor: str) -> PythonHome:
    """A Python `minor` on this machine whose prefix can be mounted as /var/lang (bin/pythonX.Y inside it)."""
    for candidate in _candidates(minor):
        try:
            out = subprocess.run(
                [candidate, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30, check=True
            )
            found = json.loads(out.stdout)
        except (OSError, subprocess.SubprocessError, ValueError):
            continue
        executable, prefix = Path(found["executable"]), Path(found["prefix"])
        if not found["version"].startswith(f"{minor}.") or executable != prefix / "bin" / f"python{minor}":
            continue
        site_dirs = tuple(os.path.relpath(d, prefix) for d in found["site"] if Path(d).is_relative_to(prefix))
        return PythonHome(executable, prefix, found["version"], site_dirs)
    raise RuntimeUnavailable(
        f"runtime python{minor} needs a Python {minor} interpreter (python{minor}) on this machine; "
        f"install one, e.g. `apt-get install python{minor}` or `pyenv install {minor}`"
    )


def _candidates(minor: str) -> list[str]:
    """Where a python{minor} may live: PATH, the system, pyenv's versions (its shims refuse non-global ones)."""
    found = [shutil.which(f"python{minor}"), f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}"]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found += sorted((str(p) for p in pyenv_root.glob(f"versions/{minor}*/bin/python{minor}")), reverse=True)
    unique: list[str] = []
    for path in found:
        if path and path not in unique and os.path.isfile(path) and os.access(path, os.X_OK):
            unique.append(path)
    return unique


# -- helpers
def _packages() -> str:
    wanted = ("awslambdaric", "boto3")
    return ", ".join(p.replace("==", " ") for p in pins.PYTHON_PACKAGES if p.split("==")[0] in wanted) + " and more"


def _needs_pip(runtime_id: str) -> str:
    return (
        f"runtime {runtime_id} is fetched by pip, which the Python running lambdarun ({sys.executable}) lacks; "
        f"install it with `{sys.executable} -m ensurepip`"
    )


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-3:]) if lines else "no output"
