"""The Java runtimes (java17, java21): this machine's JDK or JRE at /var/lang, the official client at /var/runtime.

/var/lang is the Java installation's own directory, mounted read-only; the few files it links to outside itself
and outside /usr (Debian's JDKs link their configuration into /etc/java-N-openjdk and their trust store into
/etc/ssl/certs/java) are mounted at their own paths. /var/runtime is the image: the official runtime interface client
and its dependencies from Maven Central (checked by SHA-256) in lib/, and lambdarun's launcher class, compiled here
once with the JDK's javac, so that the main class is the last word of the command line as in Lambda's bootstrap.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..sandbox.spec import Bind
from ..sandbox.view import LAMBDA_PATHS, HostDirs, Paths
from . import cache, fetch, pins
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
LAUNCHER = "java/LambdarunMain.java"
# Reached without a mount of their own in any sandbox lambdarun builds.
_SYSTEM = tuple(Path(p) for p in ("/usr", "/lib", "/lib64", "/bin", "/sbin"))


@dataclass(frozen=True)
class JavaHome:
    home: Path  # the installation's directory (bin/java inside), mounted at /var/lang
    outside: tuple[Path, ...]  # directories outside it that its links point into, mounted at their own paths


class JavaRuntime:
    def __init__(self, runtime_id: str, major: str) -> None:
        self.id = runtime_id
        self.major = major
        self.image_name = f"{runtime_id}-{cache.digest(FORMAT, pins.JAVA_JARS)}"

    # -- readiness
    def status(self) -> Status:
        try:
            home = find_java(self.major)
        except RuntimeUnavailable as exc:
            return Status(State.MISSING, str(exc))
        image = cache.load(self.image_name)
        ric = pins.JAVA_JARS[0]
        if image is None:
            return Status(
                State.NOT_INSTALLED,
                f"Java {self.major} is here ({home.home}); {ric.artifact} "
                f"{ric.version} is fetched from Maven Central on first use, or now "
                f"with {install_command(self.id)}",
            )
        try:
            self._refresh(image, home)
        except RuntimeUnavailable as exc:
            return Status(State.MISSING, str(exc))
        from .probe import in_sandbox

        error = in_sandbox(
            self._binds(image, home, LAMBDA_PATHS),
            ["/var/lang/bin/java", "-version"],
            {"PATH": "/var/lang/bin:/usr/bin:/bin"},
        )
        if error is not None:
            return Status(State.MISSING, f"the sandbox cannot start Java from {home.home}: {error}")
        return Status(State.READY, f"Java {self.major} ({home.home}); {ric.artifact} {ric.version}")

    def locate(self) -> str:
        home = find_java(self.major)
        image = cache.load(self.image_name) or self.install(Progress())
        self._refresh(image, home)
        return str(home.home / "bin" / "java")

    # -- the image
    def image(self) -> cache.Image | None:
        return cache.load(self.image_name)

    def install(self, progress: Progress, replace: bool = False) -> cache.Image:
        home = find_java(self.major)

        def fill(root: Path) -> dict[str, object]:
            lib = root / "runtime" / "lib"
            lib.mkdir(parents=True)
            progress.step(
                f"fetching {self.id}: {pins.JAVA_JARS[0].artifact} {pins.JAVA_JARS[0].version} from Maven Central"
            )
            for jar in pins.JAVA_JARS:
                fetch.maven_jar(jar, lib, progress)
            return {"runtime": self.id, "jars": [jar.file_name for jar in pins.JAVA_JARS]}

        try:
            image = cache.build(
                self.image_name,
                fill,
                replace=replace,
                waiting=lambda: progress.step(f"waiting for another lambdarun building {self.id}"),
            )
        except FetchError as exc:
            raise RuntimeUnavailable(
                f"runtime {self.id} needs the official Java runtime interface client, and "
                f"{exc}; connect to Maven Central, then {install_command(self.id)}"
            ) from exc
        self._refresh(image, home)
        return image

    def _refresh(self, image: cache.Image, home: JavaHome) -> None:
        """lambdarun's own files in the image (the bootstrap and the compiled launcher), without the network."""
        script = bootstrap_script(f"AWS_Lambda_{self.id}", _command(LAMBDA_PATHS, None), {})
        write_if_changed(image.runtime / "bootstrap", script, mode=0o755)
        _compile_launcher(image.runtime, home)

    # -- one environment
    def prepare(self, host: HostDirs, seen: Paths, memory_mb: int) -> Prepared:
        home = find_java(self.major)
        image = cache.load(self.image_name)
        if image is None:
            raise RuntimeUnavailable(f"runtime {self.id} is not installed: {install_command(self.id)}")
        execution_env = f"AWS_Lambda_{self.id}"
        version = f"java:{self.major}.lambdarun"
        if seen == LAMBDA_PATHS:
            binds = self._binds(image, home, seen)
        else:
            binds = ()
            link_entries(image.runtime, host.runtime, skip=("bootstrap",))
            (host.lang / "bin" / "java").symlink_to(home.home / "bin" / "java")
            write_if_changed(
                host.runtime / "bootstrap", bootstrap_script(execution_env, _command(seen, None), {}), mode=0o755
            )
        return Prepared(
            [f"{seen.runtime}/bootstrap"],
            version,
            _command(seen, memory_mb),
            {"AWS_EXECUTION_ENV": execution_env},
            binds,
        )

    @staticmethod
    def _binds(image: cache.Image, home: JavaHome, seen: Paths) -> tuple[Bind, ...]:
        outside = tuple(Bind(path, str(path)) for path in home.outside)
        return (Bind(image.runtime, seen.runtime), Bind(home.home, seen.lang), *outside)


def _command(seen: Paths, memory_mb: int | None) -> list[str]:
    """The JVM's command line. The heap is 85% of the function's memory (as shell arithmetic on $memory for the
    bootstrap script). `--add-opens` lets the runtime client reach its framed log sink (it opens FileDescriptor by
    reflection; without it every LambdaLogger.log() goes to stdout and unterminated calls merge, SPEC 10.10). No GC
    flag of our own, so that JAVA_TOOL_OPTIONS may choose one without a conflict. The main class is last and reads
    the handler from _HANDLER, as Lambda's Java bootstrap has it (SPEC 6.2)."""
    heap = "$((memory * 1024 * 85 / 100))" if memory_mb is None else str(memory_mb * 1024 * 85 // 100)
    classpath = ":".join(
        [f"{seen.runtime}/launcher", f"{seen.runtime}/lib/*", seen.task, f"{seen.task}/lib/*", f"{seen.opt}/java/lib/*"]
    )
    return [
        f"{seen.lang}/bin/java",
        f"-XX:MaxHeapSize={heap}k",
        "-XX:MaxMetaspaceSize=131072k",
        "-XX:ReservedCodeCacheSize=65536k",
        "-Xshare:auto",
        "-Djava.net.preferIPv4Stack=true",
        "--add-opens=java.base/java.io=ALL-UNNAMED",
        "-classpath",
        classpath,
        "lambdarun.LambdarunMain",
    ]


def _compile_launcher(runtime: Path, home: JavaHome) -> None:
    """launcher/lambdarun/LambdarunMain.class, compiled against the runtime client; again when its source changed."""
    source = resource(LAUNCHER)
    launcher = runtime / "launcher"
    stamp = launcher / "LambdarunMain.java"  # the source it was compiled from
    if (launcher / "lambdarun" / "LambdarunMain.class").exists() and stamp.exists() and stamp.read_bytes() == source:
        return
    javac = next(
        (c for c in (str(home.home / "bin" / "javac"), shutil.which("javac")) if c and os.access(c, os.X_OK)), None
    )
    if javac is None:
        raise RuntimeUnavailable(
            "the Java runtimes need `javac` once, to compile lambdarun's launcher class; "
            "install a JDK, e.g. `apt-get install openjdk-17-jdk-headless`"
        )
    launcher.mkdir(exist_ok=True)
    work = launcher / f".build-{os.getpid()}"
    work.mkdir()
    try:
        (work / "LambdarunMain.java").write_bytes(source)
        jars = ":".join(str(p) for p in sorted((runtime / "lib").glob("*.jar")))
        done = subprocess.run(
            [javac, "--release", "17", "-cp", jars, "-d", str(work), str(work / "LambdarunMain.java")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeUnavailable(f"compiling lambdarun's Java launcher failed: {done.stderr.strip()}")
        compiled = launcher / "lambdarun"
        compiled.mkdir(exist_ok=True)
        os.replace(work / "lambdarun" / "LambdarunMain.class", compiled / "LambdarunMain.class")
        os.replace(work / "LambdarunMain.java", stamp)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@functools.cache
def find_java(major: str) -> JavaHome:
    candidates = [
        *sorted(glob.glob(f"/usr/lib/jvm/*{major}*/bin/java")),
        shutil.which("java"),
        os.path.join(os.environ.get("JAVA_HOME", "/nonexistent"), "bin", "java"),
    ]
    for candidate in candidates:
        if candidate is None or not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
            continue
        if _major_of(candidate) == major:
            home = Path(os.path.realpath(candidate)).parent.parent
            return JavaHome(home, _links_out_of(home))
    raise RuntimeUnavailable(
        f"runtime java{major} needs a Java {major} runtime on this machine; install one, e.g. "
        f"`apt-get install openjdk-{major}-jre-headless` or a Temurin {major} JDK"
    )


def _major_of(java: str) -> str | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)', out.stdout + out.stderr)
    return match.group(1) if match else None


def _links_out_of(home: Path) -> tuple[Path, ...]:
    """What links inside `home` point to outside it and outside the system directories every sandbox shows: the
    fewest directories holding those targets (e.g. /etc/java-17-openjdk, /etc/ssl/certs/java)."""
    found: set[Path] = set()
    pending = [str(home)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if not entry.is_symlink():
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    continue
                target = Path(os.path.realpath(entry.path))
                if target.is_relative_to(home) or any(target.is_relative_to(root) for root in _SYSTEM):
                    continue
                if target.exists():
                    # A file directly in a top directory (/etc/x) is bound alone, not with the whole of /etc.
                    found.add(target if len(target.parts) <= 3 else target.parent)
    return tuple(sorted(p for p in found if not any(p != q and p.is_relative_to(q) for q in found)))
