"""Outbound network for a sandbox: pasta (Debian `passt`) attached to its network namespace.

pasta gives the namespace an interface whose traffic it carries through ordinary sockets of the host, so
functions reach what a non-VPC Lambda function reaches, with no privileges for the namespace. The sandbox is
169.254.1.2/24 and its gateway 169.254.1.1 is the host's own loopback: a local database or LocalStack on the host's
127.0.0.1 answers there (`host.lambdarun.internal`). No port is forwarded either way (`-t/-u/-T/-U none`): the
sandbox's 127.0.0.1:9001 stays its own.

pasta needs /dev/net/tun. Where this user cannot open it (mode 0600 on many machines, so only root can), the
sandbox has loopback only; that is said once per lambdarun process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from . import etc
from .control import read_pipe
from .spec import HOST_GATEWAY, SANDBOX_ADDRESS

_announced = False


def unavailable() -> str | None:
    """Why this machine cannot give a sandbox outbound network, or None when it can."""
    if shutil.which("pasta") is None:
        return "pasta is not installed (Debian package `passt`; scripts/setup.sh installs it)"
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "/dev/net/tun is not accessible to this user (pasta needs it; as root it is)"
    return None


def announce_once(reason: str) -> None:
    global _announced
    if not _announced:
        _announced = True
        print(f"lambdarun: functions have no outbound network here: {reason}. They reach only their own loopback: "
              "no Internet, no AWS endpoints, no services on the host.", file=sys.stderr)  # fmt: skip


def forwarder() -> str | None:
    """The address DNS queries go to inside, when the host's resolvers are all on its loopback (pasta forwards
    them); None when the host's own resolvers can be used as they are."""
    servers = etc.nameservers(etc.read_host_resolv_conf())
    if servers and all(etc.is_loopback(s) for s in servers):
        return HOST_GATEWAY
    return None


class Pasta:
    """One pasta process serving one sandbox's network namespace."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    @classmethod
    async def attach(cls, init_pid: int, init: Path) -> Pasta:
        """Start pasta on the namespaces of the process `init_pid`; returns once the interface is configured.
        Raises OSError with pasta's own message when it cannot."""
        ready_r, ready_w = os.pipe()
        # init's die-with-parent: pasta does not notice the namespace is gone, and must not outlive lambdarun.
        command = [str(init), "die-with-parent", "--",
                   "pasta", "--foreground", "--quiet", "--config-net", "--ipv4-only",
                   "--address", SANDBOX_ADDRESS, "--netmask", "24", "--gateway", HOST_GATEWAY,
                   "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--no-dhcp",
                   "--pid", f"/proc/self/fd/{ready_w}",
                   "--netns", f"/proc/{init_pid}/ns/net", "--userns", f"/proc/{init_pid}/ns/user"]  # fmt: skip
        if (dns := forwarder()) is not None:
            command += ["--dns-forward", dns]
        if os.geteuid() == 0:
            command += ["--runas", "0"]  # as `nobody` it could not enter the sandbox's user namespace
        try:
            popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, pass_fds=(ready_w,), start_new_session=True)  # fmt: skip
        finally:
            os.close(ready_w)
        pasta = cls(popen)
        try:
            # pasta writes its pid once its set-up is done; EOF without it means it gave up.
            written = await read_pipe(ready_r, lambda data: data.endswith(b"\n"))
        finally:
            os.close(ready_r)
        if not written:
            await pasta.close()
            message = popen.stderr.read().decode(errors="replace") if popen.stderr else ""
            lines = [line for line in message.splitlines() if line and "syslog" not in line]
            raise OSError(f"pasta could not start: {lines[-1] if lines else f'exit status {popen.returncode}'}")
        return pasta

    async def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self._popen.wait)
        if self._popen.stderr is not None:
            self._popen.stderr.close()
