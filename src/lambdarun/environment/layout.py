"""Assembly: a `FunctionConfig` becomes the environment's files (code, merged layers, runtime, /tmp) and an
immutable `Layout`: the paths its processes see, the exact argv and variables of the runtime and of extensions, and
which extensions /opt/extensions holds.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..config import FunctionConfig
from ..core.extensions import MAX_EXTENSIONS
from ..runtimes.registry import Prepared, get_runtime
from ..sandbox.scratch import Scratch, sweep
from ..sandbox.view import HostDirs, Paths
from . import env_vars
from .layers import materialize_code, merge_layers


@dataclass(frozen=True)
class Layout:
    config: FunctionConfig
    instance_id: str
    paths: Paths  # /var/task and friends as the environment's processes see them
    runtime_version: str  # what INIT_START prints as Runtime Version
    runtime_argv: list[str]  # what the environment execs for the runtime, as its processes see paths
    runtime_env: dict[str, str]
    extension_env: dict[str, str]
    extensions: tuple[str, ...]  # executables of /opt/extensions, in the order Lambda starts them
    launch_error: str | None  # why the extensions cannot be started at all (too many), if so
    missing_bootstrap: str | None  # an OS-only runtime's error when no bootstrap exists
    json_logs: bool  # AWS_LAMBDA_LOG_FORMAT=JSON: a function record that is a JSON object is kept as one

    @property
    def log_stream(self) -> str:
        return log_stream(self.config, self.instance_id)


def log_stream(config: FunctionConfig, instance_id: str) -> str:
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    return f"{day}/[{config.version}]{instance_id}"


def make_scratch() -> Scratch:
    """A private directory for the environment's files, locked for its life; what lambdarun processes killed
    without a chance to clean up left behind is swept first."""
    sweep()
    return Scratch.create()


def lay_out(config: FunctionConfig, scratch: Path, sandboxed: bool) -> HostDirs:
    """The environment's files under `scratch`: code, merged layers, empty runtime and language directories, /tmp.
    Raises RuntimeUnavailable before anything is created when this machine cannot run the runtime."""
    get_runtime(config.runtime).locate()
    for name in ("tmp", "runtime", "lang/bin", "empty-opt"):
        (scratch / name).mkdir(parents=True)
    code = materialize_code(config.code, scratch)
    opt = scratch / "empty-opt"
    if config.layers:  # a sandbox mounts /opt read-only, which lets layer files be hard links
        opt = merge_layers(config.layers, scratch, read_only=sandboxed)
    for directory in (code, opt, scratch / "runtime", scratch / "lang", scratch / "lang/bin"):
        directory.chmod(0o755)  # the sandbox's user is not the one who made them (nor root)
    return HostDirs(task=code, opt=opt, runtime=scratch / "runtime", lang=scratch / "lang", tmp=scratch / "tmp")


def prepare_runtime(config: FunctionConfig, dirs: HostDirs, paths: Paths) -> Prepared:
    """Fill /var/runtime and /var/lang for the runtime; returns how it starts (and what it needs mounted)."""
    return get_runtime(config.runtime).prepare(dirs, paths, config.memory_mb)


def assemble(config: FunctionConfig, dirs: HostDirs, prepared: Prepared, paths: Paths, runtime_api: str,
             sandboxed: bool) -> Layout:  # fmt: skip
    """Decide how every process starts: argv, variables, which extensions."""
    instance_id = uuid.uuid4().hex
    platform = env_vars.Platform(
        function_name=config.name,
        function_version=config.version,
        memory_mb=config.memory_mb,
        region=config.region,
        runtime_api=runtime_api,
        log_stream=log_stream(config, instance_id),
        handler=config.handler,
        task_root=paths.task,
        runtime_dir=paths.runtime,
        lang_bin=f"{paths.lang}/bin",
        opt=paths.opt,
    )
    env = env_vars.runtime_env(platform, config.env)
    if not sandboxed:
        env["LAMBDARUN_OPT_DIR"] = paths.opt  # bootstrap.py's layer paths without /opt
    argv, runtime_env = prepared.argv, env
    if prepared.direct is not None and not env.get("AWS_LAMBDA_EXEC_WRAPPER"):
        # Lambda execs /var/runtime/bootstrap; without a wrapper that script only exports a few variables and execs
        # the interpreter, so the same is done here directly, a shell's start-up sooner.
        argv, runtime_env = prepared.direct, dict(env)
        for name, value in prepared.exports.items():
            if name == "AWS_EXECUTION_ENV" or not runtime_env.get(name):  # the script's `${NAME:-default}`
                runtime_env[name] = value
    extensions, launch_error = _find_extensions(dirs.opt / "extensions")
    missing = None
    if not get_runtime(config.runtime).needs_handler:
        host_path = Path(argv[0].replace(paths.task, str(dirs.task), 1).replace(paths.opt, str(dirs.opt), 1))
        if not host_path.is_file():
            missing = "Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"
    return Layout(config, instance_id, paths, prepared.version, argv, runtime_env, env_vars.extension_env(env),
                  extensions, launch_error, missing,
                  config.env.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON")  # fmt: skip


def _find_extensions(directory: Path) -> tuple[tuple[str, ...], str | None]:
    """Every executable regular file in /opt/extensions, in name order (SPEC 2.5)."""
    if not directory.is_dir():
        return (), None
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and os.access(p, os.X_OK))
    if len(names) > MAX_EXTENSIONS:
        return (), f"TooManyExtensions: Extension limit ({MAX_EXTENSIONS}) reached, {len(names)} in /opt/extensions"
    return tuple(names), None
