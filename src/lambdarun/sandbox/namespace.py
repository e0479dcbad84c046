"""The sandbox proper: one set of namespaces per environment, with our init (init.c) as PID 1 (bwrap.py says how
it is built).

Every process is started by init, so the runtime and the extensions share one PID namespace, as on Lambda. Freezing
is one request to init, which signals every process of the namespace (sessions of their own included) but itself;
closing our end of the control socket makes init exit, and the kernel then kills whatever is left. If lambdarun
dies, the same happens (and bwrap --die-with-parent too): nothing of a sandbox outlives it, and it leaves nothing on
the host's disk (the /etc files are memfds).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import bwrap, control, etc, network
from .control import InitChannel
from .init_binary import init_binary
from .logpipe import FramePipe, LineSink, LogPipe
from .processes import Process, close_pipes
from .sandbox import Sandbox
from .spec import RUNTIME_API, SandboxError, SandboxSpec
from .view import LAMBDA_PATHS

OPEN_TIMEOUT_S = 10.0
TELEMETRY_FD = 3  # where a process finds the framed-log pipe (_LAMBDA_TELEMETRY_LOG_FD)


@dataclass
class NamespaceProcess(Process):
    """A process init started; signals go through init, which knows the process group by its own numbering."""

    channel: InitChannel = field(kw_only=True)
    handle: int = field(kw_only=True)
    host_pid: int = field(default=0, kw_only=True)

    @property
    def pid(self) -> int:
        return self.host_pid

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(OSError):  # init gone: so is the process
            self.channel.send(control.REQ_SIGNAL, self.handle, signum, 1)


class NamespaceSandbox(Sandbox):
    sandboxed = True
    paths = LAMBDA_PATHS
    runtime_api = RUNTIME_API

    def __init__(self, spec: SandboxSpec, popen: subprocess.Popen[bytes], channel_socket: socket.socket) -> None:
        super().__init__()
        self.spec = spec
        self.network = spec.network
        self._popen = popen
        self._by_handle: dict[int, NamespaceProcess] = {}
        self._channel = InitChannel(channel_socket, self._exited)
        self._channel.closed.add_done_callback(lambda _: self._init_gone())
        self._pasta: asyncio.Future[network.Pasta] | None = None
        self._init_pidfd: int | None = None
        self.init_pid = 0  # init's pid on the host
        self._closed = False

    @classmethod
    async def start(cls, spec: SandboxSpec, cgroup_procs: Sequence[int] = ()) -> NamespaceSandbox:
        for path, target, _ in bwrap.binds(spec):
            _check_reachable(path, target)
        init = await asyncio.to_thread(init_binary)
        if os.geteuid() == 0 and spec.tmp_bytes is None:  # the sandbox's user is `nobody`: its /tmp must be its own
            uid, gid = bwrap.host_identity()
            os.chown(spec.tmp, uid, gid)
        files = etc.memfds(network.forwarder() if spec.network == "default" else None)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        info_r, info_w = os.pipe()
        passed = [theirs.fileno(), info_w, *files.values(), *cgroup_procs]
        fds = bwrap.Descriptors(theirs.fileno(), info_w, max(passed) + 1, files, tuple(cgroup_procs))
        try:
            popen = subprocess.Popen(bwrap.command(spec, init, shutil.which("bwrap") or "bwrap", fds),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     pass_fds=passed, start_new_session=True)  # fmt: skip
        except OSError as exc:
            ours.close()
            os.close(info_r)
            raise SandboxError(f"the sandbox did not start: {exc}") from exc
        finally:
            for fd in (theirs.detach(), info_w, *files.values()):
                os.close(fd)
        sandbox = cls(spec, popen, ours)
        try:
            await asyncio.wait_for(sandbox._start(info_r), OPEN_TIMEOUT_S)
        except BaseException as exc:
            why = await sandbox._abandon()
            if isinstance(exc, (ConnectionError, OSError, TimeoutError)):
                raise SandboxError(f"the sandbox did not start: {why or exc}") from exc
            raise
        finally:
            os.close(info_r)
        return sandbox

    async def _start(self, info_r: int) -> None:
        info = await control.read_pipe(info_r, _complete_json)
        try:
            init_pid = int(json.loads(info)["child-pid"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectionError("bwrap did not start init") from exc
        self.init_pid = init_pid
        self._init_pidfd = os.pidfd_open(init_pid)
        outbound = network.unavailable() if self.spec.network == "default" else None
        if self.spec.network == "default" and outbound is None:
            self._pasta = asyncio.ensure_future(network.Pasta.attach(init_pid, init_binary()))
        ready = await self._channel.ready
        if self._pasta is not None:
            try:
                await asyncio.shield(self._pasta)
            except OSError as exc:
                outbound = str(exc)
        if outbound is not None:
            network.announce_once(outbound)
            self.network = "none"
        if ready.fd is None or ready.a != 0:
            raise ConnectionError(f"init could not listen on {RUNTIME_API}: {os.strerror(ready.a or errno.EBADF)}")
        self.listener = _checked_socket(ready.fd, socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setblocking(False)

    async def spawn(self, name: str, argv: list[str], env: Mapping[str, str], on_line: LineSink,
                    on_frame: LineSink | None = None) -> Process:  # fmt: skip
        loop = asyncio.get_running_loop()
        logs = LogPipe(loop, on_line)
        frames = FramePipe(loop, on_frame) if on_frame is not None else None
        env = dict(env)
        fds = [logs.write_fd]
        if frames is not None:
            env["_LAMBDA_TELEMETRY_LOG_FD"] = str(TELEMETRY_FD)
            fds.append(frames.write_fd)
        handle = self._channel.new_handle()
        process = NamespaceProcess(name, logs, frames, channel=self._channel, handle=handle)
        self._by_handle[handle] = process
        try:
            body = control.pack_spawn(self.paths.task, argv, env)
            future = self._channel.expect(control.EV_SPAWNED, handle)
            self._channel.send(control.REQ_SPAWN, handle, len(argv), len(env), body, fds)
        except (ValueError, OSError) as exc:
            self._forget(process)
            raise OSError(errno.EINVAL if isinstance(exc, ValueError) else exc.errno or errno.EIO, str(exc)) from exc
        logs.release_write_end()  # init holds its own copies now
        if frames is not None:
            frames.release_write_end()
        try:
            reply = await self._channel.wait(future)
        except ConnectionError as exc:
            self._forget(process)
            raise OSError(errno.EIO, str(exc)) from exc
        if reply.a < 0:
            self._forget(process)
            raise OSError(-reply.a, os.strerror(-reply.a), argv[0])
        if reply.fd is not None:
            process.host_pid = _pid_of(reply.fd)
            os.close(reply.fd)
        self._processes.append(process)
        return process

    def _forget(self, process: NamespaceProcess) -> None:
        self._by_handle.pop(process.handle, None)
        process.logs.close()
        if process.frames is not None:
            process.frames.close()

    def _exited(self, handle: int, status: int, max_rss_kb: int) -> None:
        process = self._by_handle.pop(handle, None)
        if process is not None and not process.exited.done():
            process.max_rss_kb = max_rss_kb
            try:
                code = os.waitstatus_to_exitcode(status)
            except ValueError:  # not a wait status: init would never send that
                code = -signal.SIGKILL
            process.exited.set_result(code)

    def freeze(self) -> None:
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _terminate_all(self) -> None:
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        with contextlib.suppress(OSError):  # init gone: so is every process
            self._channel.send(control.REQ_SIGNAL_ALL, 0, signum)

    async def kill_all(self, timeout: float = 2.0) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self._channel.request(control.REQ_KILL_ALL, reply=control.EV_EMPTY), timeout)
        processes, self._processes = self._processes, []
        await close_pipes(processes)
        self._memory.close()

    async def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        reply = await self._channel.request(control.REQ_SOCKET, family, type, reply=control.EV_SOCKET)
        if reply.fd is None:
            raise OSError(reply.a or errno.EIO, os.strerror(reply.a or errno.EIO))
        sock = _checked_socket(reply.fd, family, type)
        sock.setblocking(False)
        return sock

    async def close(self, grace: float = 0.0) -> None:
        if self._closed:
            return
        self._closed = True
        await self._end_processes(grace)
        self._channel.close()  # init exits; the kernel kills anything left in its namespace
        await self._wait_gone()
        if self._pasta is not None:
            with contextlib.suppress(OSError):  # it never started: nothing to stop
                await (await self._pasta).close()
        if getattr(self, "listener", None) is not None:
            self.listener.close()
        self._init_gone()

    def _init_gone(self) -> None:
        """When PID 1 of a namespace exits, the kernel kills every other process of it."""
        for process in self._by_handle.values():
            if not process.exited.done():
                process.exited.set_result(-signal.SIGKILL)
        self._by_handle.clear()

    async def _wait_gone(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self._popen.wait, 2.0)
        if self._popen.poll() is None:  # not expected: init exits on EOF
            if self._init_pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._init_pidfd, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._popen.kill()
            await asyncio.to_thread(self._popen.wait)
        if self._init_pidfd is not None:
            os.close(self._init_pidfd)
            self._init_pidfd = None
        if self._popen.stderr is not None:
            self._popen.stderr.close()

    async def _abandon(self) -> str:
        """Tear down a sandbox that did not start; returns what bwrap or init said."""
        self._channel.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self._popen.wait, 2.0)
        said = ""
        if self._popen.poll() is not None and self._popen.stderr is not None:
            said = self._popen.stderr.read().decode(errors="replace").strip()
        await self.close()
        return said


def _check_reachable(path: Path, target: str) -> None:
    """The sandbox's user must reach what is bound for it. Run by root, that user is `nobody` on the host, so a
    directory lambdarun made with mkdtemp (0700) would be there but unreadable: say so now, not at the first exec."""
    try:
        st = path.stat()
    except OSError as exc:
        raise SandboxError(f"{path} (for {target}): {exc.strerror}") from exc
    if os.geteuid() != 0 or target == "/tmp":  # an ordinary user's sandbox user is that user; /tmp is chowned
        return
    needed = 0o005 if stat.S_ISDIR(st.st_mode) else 0o004
    if st.st_mode & needed != needed:
        raise SandboxError(f"{path} (for {target}) must be readable by others (mode {stat.filemode(st.st_mode)}): "
                           "the sandbox's user is not root")  # fmt: skip


def _complete_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _pid_of(pidfd: int) -> int:
    """The host pid of a process from its pidfd (the `Pid:` of its fdinfo is in our own PID namespace)."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/self/fdinfo/{pidfd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                return max(0, int(line.split()[1]))
    return 0


def _checked_socket(fd: int, family: int, type_: int) -> socket.socket:
    """A socket init handed over, refused unless it is what was asked for."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        raise
    if sock.family != family or sock.type != type_:
        sock.close()
        raise OSError(errno.EPROTOTYPE, "init handed over a socket of the wrong kind")
    return sock
