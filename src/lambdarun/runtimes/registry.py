"""Runtimes are data: for each identifier, how to find its interpreter here and how Lambda starts it (SPEC 6.2).

`prepare` fills the environment's `/var/runtime` and `/var/lang/bin` and returns the argv Lambda execs: for managed
runtimes always `/var/runtime/bootstrap`, a shell script with the `AWS_LAMBDA_EXEC_WRAPPER` contract that execs
`<interpreter> [flags...] <runtime entry>`; for OS-only runtimes the function's own `bootstrap`.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..sandbox.view import Bind, HostDirs, Paths

CACHE = Path(os.environ.get("LAMBDARUN_CACHE", Path.home() / ".cache" / "lambdarun"))
JAVA_RIC_LIB = CACHE / "java" / "lib"  # the official Java runtime client and its dependencies (setup.sh fills it)
JAVA_LAUNCHER = CACHE / "java" / "launcher"  # LambdarunMain.class, compiled on first use
NODE_RIC_DIR = CACHE / "node" / "node_modules" / "aws-lambda-ric"  # the official Node client, when installed


class RuntimeUnavailable(RuntimeError):
    """The machine lacks what a runtime needs; the message names what to install."""


@dataclass(frozen=True)
class Prepared:
    """A runtime made ready for one environment."""

    argv: list[str]  # the command Lambda execs (as the environment sees paths)
    version: str  # `python:3.12.lambdarun`: what INIT_START prints as Runtime Version
    # What /var/runtime/bootstrap itself execs when no wrapper is set, and the variables it exports first: the
    # environment may start that directly and save a shell's start-up on every cold start.
    direct: list[str] | None = None
    exports: dict[str, str] = field(default_factory=dict)
    binds: tuple[Bind, ...] = ()  # what the runtime needs mounted (its image at /var/lang, /var/runtime)


@dataclass(frozen=True)
class RuntimeSpec:
    id: str
    family: str  # python | nodejs | java | dotnet | provided
    version: str  # 3.12 | 20 | 17 | 8 | al2023

    @property
    def needs_handler(self) -> bool:
        return self.family != "provided"

    @property
    def supports_wrapper(self) -> bool:
        return self.family != "provided"  # OS-only runtimes have no bootstrap of Lambda's to honour it (SPEC 6.2)

    @property
    def runtime_version(self) -> str:
        return f"{self.family}:{self.version}.lambdarun"

    def locate(self) -> str | None:
        """The interpreter's real path on this machine (None for OS-only runtimes); raises RuntimeUnavailable."""
        match self.family:
            case "python":
                return _python_interpreter(self.version)
            case "nodejs":
                return _node_interpreter(self.version)
            case "java":
                return _java_interpreter(self.version)
            case "dotnet":
                from . import dotnet  # imports this module: never at this module's own import

                return dotnet.locate(self.id)
        return None

    def prepare(self, host: HostDirs, seen: Paths, memory_mb: int) -> Prepared:
        """Fill the runtime and language directories of one environment; return how Lambda starts the runtime."""
        if self.family == "dotnet":
            from . import dotnet

            return dotnet.prepare(self.id, host, seen)
        interpreter = self.locate()
        lang_bin, seen_bin = host.lang / "bin", f"{seen.lang}/bin"
        match self.family:
            case "python":
                assert interpreter is not None
                name = f"python{self.version}"
                _link(lang_bin, interpreter, name, "python3", "python")
                _install(host.runtime, "python/bootstrap.py", "bootstrap.py")
                command = [f"{seen_bin}/{name}", f"{seen.runtime}/bootstrap.py"]
                exports: dict[str, str] = {}
            case "nodejs":
                assert interpreter is not None
                _link(lang_bin, interpreter, "node")
                entry = _install_node_client(host.runtime)
                # Memory flags as the Node bootstrap computes them from the function's memory (SPEC 6.2).
                new_space = memory_mb // 10
                command = [f"{seen_bin}/node", "--expose-gc", "--max-http-header-size", "81920",
                           f"--max-semi-space-size={new_space // 2}", f"--max-old-space-size={memory_mb - new_space}",
                           f"{seen.runtime}/{entry}"]  # fmt: skip
                node_path = ":".join([f"{seen.opt}/nodejs/node{self.version}/node_modules",
                                      f"{seen.opt}/nodejs/node_modules", f"{seen.runtime}/node_modules",
                                      seen.runtime, seen.task])  # fmt: skip
                exports = {"NODE_PATH": node_path}
            case "java":
                assert interpreter is not None
                _link(lang_bin, interpreter, "java")
                (host.runtime / "lib").symlink_to(JAVA_RIC_LIB)
                (host.runtime / "launcher").symlink_to(JAVA_LAUNCHER)
                heap_kb = memory_mb * 1024 * 85 // 100
                classpath = ":".join([f"{seen.runtime}/launcher", f"{seen.runtime}/lib/*", seen.task,
                                      f"{seen.task}/lib/*", f"{seen.opt}/java/lib/*"])  # fmt: skip
                # No GC flag of our own, so that JAVA_TOOL_OPTIONS may choose one without a conflict. The main class
                # is last and reads the handler from _HANDLER, as Lambda's Java bootstrap has it (SPEC 6.2).
                command = [f"{seen_bin}/java", f"-XX:MaxHeapSize={heap_kb}k", "-XX:MaxMetaspaceSize=131072k",
                           "-XX:ReservedCodeCacheSize=65536k", "-Xshare:auto", "-Djava.net.preferIPv4Stack=true",
                           "-classpath", classpath, "lambdarun.LambdarunMain"]  # fmt: skip
                exports = {}
            case _:
                # OS-only: `bootstrap` from the code, else from /opt (SPEC 5.3).
                if (host.task / "bootstrap").exists():
                    return Prepared([f"{seen.task}/bootstrap"], self.runtime_version)
                return Prepared([f"{seen.opt}/bootstrap"], self.runtime_version)
        execution_env = f"AWS_Lambda_{self.id}"
        _write_bootstrap(host.runtime, execution_env, command, exports)
        return Prepared([f"{seen.runtime}/bootstrap"], self.runtime_version, command,
                        {"AWS_EXECUTION_ENV": execution_env, **exports})  # fmt: skip

    def client_note(self) -> str | None:
        """Which runtime client a Node.js function gets here, and how to get the official one; which .NET runs."""
        if self.family == "dotnet":
            from . import dotnet

            return dotnet.client_note(self.id)
        if self.family != "nodejs":
            return None
        if (NODE_RIC_DIR / "package.json").exists():
            return "runs the official aws-lambda-ric"
        return (f"runs lambdarun's runtime client; for the official one (needs autoconf automake libtool): "
                f"`npm install --prefix {NODE_RIC_DIR.parent.parent} aws-lambda-ric@3.3.0`")  # fmt: skip

    def install_hint(self) -> str | None:
        """What to install for this runtime to run here, or None when it can run."""
        if self.family == "dotnet":
            from . import dotnet

            return dotnet.install_hint(self.id)  # without fetching .NET or compiling the client
        try:
            self.locate()
        except RuntimeUnavailable as exc:
            return str(exc)
        return None


_RUNTIMES = {
    spec.id: spec
    for spec in (
        RuntimeSpec("python3.11", "python", "3.11"),
        RuntimeSpec("python3.12", "python", "3.12"),
        RuntimeSpec("python3.13", "python", "3.13"),
        RuntimeSpec("nodejs18.x", "nodejs", "18"),
        RuntimeSpec("nodejs20.x", "nodejs", "20"),
        RuntimeSpec("nodejs22.x", "nodejs", "22"),
        RuntimeSpec("java17", "java", "17"),
        RuntimeSpec("java21", "java", "21"),
        RuntimeSpec("dotnet10", "dotnet", "10"),
        RuntimeSpec("dotnet8", "dotnet", "8"),
        RuntimeSpec("dotnet6", "dotnet", "6"),  # deprecated on Lambda, still running there
        RuntimeSpec("dotnetcore3.1", "dotnet", "3.1"),  # deprecated; runs faithfully on dotnetcore2's .NET Core 3.1
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


# -- Python
def _python_candidates(version: str) -> list[str]:
    """Where a python{version} may live: PATH, the system, pyenv's versions (its shims refuse non-global ones)."""
    found = [shutil.which(f"python{version}"), f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found += sorted((str(p) for p in pyenv_root.glob(f"versions/{version}*/bin/python{version}")), reverse=True)
    return _executables(found)


@functools.cache
def _python_interpreter(version: str) -> str:
    """A python{version} with awslambdaric importable; its real executable path."""
    probe = "import importlib.util as u, sys; print(sys.executable); print(bool(u.find_spec('awslambdaric')))"
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


# -- Node.js
@functools.cache
def _node_interpreter(major: str) -> str:
    candidates = _executables([shutil.which("node"), "/usr/bin/node", "/usr/local/bin/node",
                               *sorted(glob.glob(os.path.expanduser("~/.nvm/versions/node/v*/bin/node")))])  # fmt: skip
    for command in candidates:
        version = _version_of([command, "--version"], r"v(\d+)\.")
        if version == major:
            return os.path.realpath(command)
    raise RuntimeUnavailable(
        f"runtime nodejs{major}.x needs Node.js {major} (`node` major version {major}) on this machine; "
        f"install it, e.g. with nvm (`nvm install {major}`)"
    )


def _install_node_client(runtime_dir: Path) -> str:
    """The official aws-lambda-ric when installed (`npm install --prefix ~/.cache/lambdarun/node aws-lambda-ric`),
    else our runtime client with the same behaviour. Returns the entry file name in /var/runtime."""
    if (NODE_RIC_DIR / "package.json").exists():
        (runtime_dir / "node_modules").mkdir()
        (runtime_dir / "node_modules" / "aws-lambda-ric").symlink_to(NODE_RIC_DIR)
        _install(runtime_dir, "nodejs/ric-entry.mjs", "index.mjs")
    else:
        _install(runtime_dir, "nodejs/index.mjs", "index.mjs")
    return "index.mjs"


# -- Java
@functools.cache
def _java_interpreter(major: str) -> str:
    candidates = _executables([*sorted(glob.glob(f"/usr/lib/jvm/*{major}*/bin/java")), shutil.which("java"),
                               os.path.join(os.environ.get("JAVA_HOME", "/nonexistent"), "bin", "java")])  # fmt: skip
    java = next((c for c in candidates if _version_of([c, "-version"], r'version "(\d+)') == major), None)
    if java is None:
        raise RuntimeUnavailable(
            f"runtime java{major} needs a Java {major} runtime on this machine; install one, e.g. "
            f"`apt-get install openjdk-{major}-jre-headless` or a Temurin {major} JDK"
        )
    if not any(JAVA_RIC_LIB.glob("aws-lambda-java-runtime-interface-client-*.jar")):
        pom = resources.files("lambdarun.runtimes").joinpath("java", "pom.xml")
        raise RuntimeUnavailable(
            f"runtime java{major} needs the official AWS Lambda Java runtime interface client; fetch it from Maven "
            f"Central with `mvn -q -f {pom} dependency:copy-dependencies -DoutputDirectory={JAVA_RIC_LIB}`"
        )
    _compile_launcher(java)
    return os.path.realpath(java)


def _compile_launcher(java: str) -> None:
    """LambdarunMain.class, compiled once with the JDK's javac against the runtime client."""
    source = resources.files("lambdarun.runtimes").joinpath("java", "LambdarunMain.java").read_bytes()
    stamp = JAVA_LAUNCHER / "LambdarunMain.java"  # the source it was compiled from: recompiled when that changes
    compiled = JAVA_LAUNCHER / "lambdarun" / "LambdarunMain.class"
    if compiled.exists() and stamp.exists() and stamp.read_bytes() == source:
        return
    javac = next(iter(_executables([os.path.join(os.path.dirname(os.path.realpath(java)), "javac"),
                                    shutil.which("javac")])), None)  # fmt: skip
    if javac is None:
        raise RuntimeUnavailable("the Java runtimes need `javac` once, to compile lambdarun's launcher class; "
                                 "install a JDK, e.g. `apt-get install openjdk-17-jdk-headless`")  # fmt: skip
    JAVA_LAUNCHER.mkdir(parents=True, exist_ok=True)
    stamp.write_bytes(source)
    ric = [str(p) for p in JAVA_RIC_LIB.glob("*.jar")]
    command = [javac, "--release", "17", "-cp", ":".join(ric), "-d", str(JAVA_LAUNCHER), str(stamp)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        stamp.unlink(missing_ok=True)
        raise RuntimeUnavailable(f"compiling lambdarun's Java launcher failed: {result.stderr.strip()}")


# -- helpers
def _executables(paths: list[str | None]) -> list[str]:
    seen: list[str] = []
    for path in paths:
        if path and os.access(path, os.X_OK) and os.path.isfile(path) and path not in seen:
            seen.append(path)
    return seen


def _version_of(command: list[str], pattern: str) -> str | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else None


def _link(directory: Path, target: str, *names: str) -> None:
    for name in names:
        (directory / name).symlink_to(target)


def _install(runtime_dir: Path, source: str, name: str) -> None:
    data = resources.files("lambdarun.runtimes").joinpath(source).read_bytes()
    (runtime_dir / name).write_bytes(data)


def _write_bootstrap(runtime_dir: Path, execution_env: str, command: list[str], exports: dict[str, str]) -> None:
    """`/var/runtime/bootstrap`: Lambda's wrapper contract, as every managed runtime's bootstrap implements it."""
    template = resources.files("lambdarun.runtimes").joinpath("bootstrap.sh").read_text()
    # Defaults only: a variable the function or its wrapper set is kept, as the real bootstraps do.
    lines = [f'export {name}="${{{name}:-{value}}}"' for name, value in exports.items()]
    script = (
        template.replace("@EXECUTION_ENV@", execution_env)
        .replace("@EXPORTS@", "\n".join(lines))
        .replace("@COMMAND@", " ".join(f'"{part}"' for part in command))  # "$_HANDLER" expands at exec
    )
    path = runtime_dir / "bootstrap"
    path.write_text(script)
    path.chmod(0o755)
