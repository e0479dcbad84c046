"""What an environment's sandbox is made of: the host directories behind Lambda's paths, its name, its network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Network = Literal["default", "none"]  # default: outbound traffic as a non-VPC function has it; none: loopback only

RUNTIME_API = "127.0.0.1:9001"  # where the APIs listen inside a sandbox, as on Lambda
HOST_GATEWAY = "169.254.1.1"  # inside, with outbound network: the host's own 127.0.0.1 (its local services)
HOST_GATEWAY_NAME = "host.lambdarun.internal"  # /etc/hosts names HOST_GATEWAY so
SANDBOX_ADDRESS = "169.254.1.2"  # the sandbox's address on that link


class SandboxError(RuntimeError):
    """The sandbox could not be built; the message says why."""


@dataclass(frozen=True)
class Bind:
    """A host path made visible at `target` inside the sandbox."""

    source: Path
    target: str
    writable: bool = False


@dataclass(frozen=True)
class SandboxSpec:
    """The host paths behind /var/task, /opt, /var/runtime, /var/lang and /tmp (read-only but /tmp), anything
    else to bind, paths to hide under an empty directory, the hostname and the network."""

    task: Path
    opt: Path
    runtime: Path
    lang: Path
    tmp: Path  # a directory, or the mount point of a file system sized to the ephemeral storage
    tmp_bytes: int | None = None  # instead: a tmpfs of this size at /tmp (no disk-backed /tmp without root)
    nofile: int | None = 1024  # RLIMIT_NOFILE of every process (Lambda's 1,024)
    nproc: int | None = None  # RLIMIT_NPROC, where no pids cgroup limits processes and threads
    binds: tuple[Bind, ...] = ()
    masks: tuple[str, ...] = ()
    hostname: str = "localhost"
    network: Network = "default"

    def __post_init__(self) -> None:
        if self.network not in ("default", "none"):
            raise ValueError(f"network must be 'default' or 'none', not {self.network!r}")
        for bind in self.binds:
            if not bind.target.startswith("/"):
                raise ValueError(f"a bind target must be an absolute path inside the sandbox: {bind.target!r}")
