"""Runtimes are data: for each identifier, how to find its interpreter here and how Lambda starts it (SPEC 6.2)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


class RuntimeUnavailable(RuntimeError):
    """The machine lacks what a runtime needs; the message names what to install."""


@dataclass(frozen=True)
class Prepared:
    """A runtime made ready for one environment."""

    argv: list[str]  # the command Lambda execs (as the environment sees paths)
    version: str  # `python:3.12.lambdarun` — what INIT_START prints as Runtime Version


@dataclass(frozen=True)
class RuntimeSpec:
    id: str
    family: str  # python | provided
    version: str = ""

    @property
    def needs_handler(self) -> bool:
        return self.family != "provided"

    @property
    def runtime_version(self) -> str:
        return f"{self.family}:{self.version or self.id.split('.', 1)[-1]}.lambdarun"

    def locate(self) -> str | None:
        """The interpreter's real path on this machine (None for OS-only runtimes); raises RuntimeUnavailable."""
        if self.family == "python":
            return _python_interpreter(self.version)
        return None

    def prepare(self, runtime_dir: Path, lang_bin: Path, visible_runtime: str, visible_lang_bin: str,
                task_dir: Path, opt_dir: Path, visible_task: str, visible_opt: str) -> Prepared:
        """Fill `runtime_dir` (shown at /var/runtime) and `lang_bin` (/var/lang/bin); return how to start."""
        if self.family == "python":
            interpreter = self.locate()
            assert interpreter is not None
            name = f"python{self.version}"
            for link in (name, "python3", "python"):
                (lang_bin / link).symlink_to(interpreter)
            _install(runtime_dir, "python", "bootstrap.py")
            _write_bootstrap(runtime_dir, f"AWS_Lambda_{self.id}", [f"{visible_lang_bin}/{name}",
                                                                   f"{visible_runtime}/bootstrap.py"])
            return Prepared([f"{visible_runtime}/bootstrap"], self.runtime_version)
        # OS-only: `bootstrap` from the code, else from /opt (SPEC 5.3); exec failure is Runtime.InvalidEntrypoint.
        if (task_dir / "bootstrap").exists():
            return Prepared([f"{visible_task}/bootstrap"], self.runtime_version)
        return Prepared([f"{visible_opt}/bootstrap"], self.runtime_version)


_RUNTIMES = {
    spec.id: spec
    for spec in (
        RuntimeSpec("python3.11", "python", "3.11"),
        RuntimeSpec("python3.12", "python", "3.12"),
        RuntimeSpec("python3.13", "python", "3.13"),
        RuntimeSpec("provided.al2023", "provided", "al2023"),
        RuntimeSpec("provided.al2", "provided", "al2"),
    )
}


def get_runtime(identifier: str) -> RuntimeSpec:
    try:
        return _RUNTIMES[identifier]
    except KeyError:
        raise KeyError(f"unknown runtime {identifier!r}; supported: {', '.join(_RUNTIMES)}") from None


def all_runtimes() -> list[RuntimeSpec]:
    return list(_RUNTIMES.values())


def _python_candidates(version: str) -> list[str]:
    """Where a python{version} may live: PATH, the system, pyenv's versions (whose shims refuse non-global ones)."""
    found = [shutil.which(f"python{version}"), f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found += sorted((str(p) for p in pyenv_root.glob(f"versions/{version}*/bin/python{version}")), reverse=True)
    seen: list[str] = []
    for candidate in found:
        if candidate and os.access(candidate, os.X_OK) and candidate not in seen:
            seen.append(candidate)
    return seen


@functools.cache
def _python_interpreter(version: str) -> str:
    """A python{version} with awslambdaric importable; its real executable path."""
    probe = "import importlib.util, sys; print(sys.executable); print(bool(importlib.util.find_spec('awslambdaric')))"
    without_ric: list[str] = []
    for command in _python_candidates(version):
        try:
            out = subprocess.run([command, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            continue
        executable, has_ric = out.stdout.split()
        if has_ric == "True":
            return os.path.realpath(executable)
        without_ric.append(executable)
    if without_ric:
        raise RuntimeUnavailable(
            f"runtime python{version} needs the AWS runtime interface client in that interpreter; "
            f"install it with `{without_ric[0]} -m pip install awslambdaric`"
        )
    raise RuntimeUnavailable(
        f"runtime python{version} needs a Python {version} interpreter (python{version}) on this machine; "
        f"install one, e.g. `apt-get install python{version}` or `pyenv install {version}`"
    )


def _install(runtime_dir: Path, family: str, name: str) -> None:
    source = resources.files("lambdarun.runtimes").joinpath(family, name)
    (runtime_dir / name).write_bytes(source.read_bytes())


def _write_bootstrap(runtime_dir: Path, execution_env: str, command: list[str]) -> None:
    """`/var/runtime/bootstrap`: Lambda's wrapper contract, as every managed runtime's bootstrap implements it."""
    template = resources.files("lambdarun.runtimes").joinpath("bootstrap.sh").read_text()
    script = template.replace("@EXECUTION_ENV@", execution_env).replace(
        "@COMMAND@", " ".join(f'"{part}"' for part in command)
    )
    path = runtime_dir / "bootstrap"
    path.write_text(script)
    path.chmod(0o755)
