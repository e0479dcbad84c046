"""Start, watch, signal and reap the processes of one environment.

Each process is started in a session (process group) of its own so that a signal reaches everything it forked
(wrappers fork, bash bootstraps run curl). Its exit is watched through a pidfd, which works under any event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .logpipe import FramePipe, LineSink, LogPipe


def describe_exit(returncode: int) -> str:
    """Go's wording of a process exit, as Lambda prints it: `exit status 1`, `signal: killed`."""
    if returncode >= 0:
        return f"exit status {returncode}"
    signum = -returncode
    names = {
        signal.SIGKILL: "killed",
        signal.SIGTERM: "terminated",
        signal.SIGSEGV: "segmentation fault",
        signal.SIGABRT: "aborted",
        signal.SIGINT: "interrupt",
    }
    try:
        return f"signal: {names.get(signal.Signals(signum), signal.Signals(signum).name)}"
    except ValueError:
        return f"signal: {signum}"


@dataclass
class Process:
    """One process of an environment, as lambdarun watches it: its logs, its exit, its peak memory."""

    name: str
    logs: LogPipe
    frames: FramePipe | None
    max_rss_kb: int = field(default=0, init=False)  # peak resident memory of it and all it reaped, once exited
    exited: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future(), init=False
    )  # the exit code as subprocess gives it: the status, or -signum

    @property
    def pid(self) -> int:
        """Its process id on the host, 0 when not known."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def exit_description(self) -> str:
        return describe_exit(self.exited.result())

    def drain_logs(self) -> None:
        self.logs.drain()
        if self.frames is not None:
            self.frames.drain()

    def signal_group(self, signum: int) -> None:
        """Signal its process group: it and everything it started that did not leave for a session of its own."""
        raise NotImplementedError

    async def kill(self) -> None:
        await kill_all([self])


@dataclass
class HostProcess(Process):
    """A process lambdarun started itself (plain mode)."""

    popen: subprocess.Popen[bytes] = field(kw_only=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)


async def spawn(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    on_line: LineSink,
    on_frame: LineSink | None = None,
) -> HostProcess:
    """Start a process; raises OSError when it cannot be executed. With `on_frame`, the process also gets a
    `_LAMBDA_TELEMETRY_LOG_FD` to write framed log records to."""
    loop = asyncio.get_running_loop()
    logs = LogPipe(loop, on_line)
    frames = FramePipe(loop, on_frame) if on_frame is not None else None
    env = dict(env)
    pass_fds: tuple[int, ...] = ()
    if frames is not None:
        os.set_inheritable(frames.write_fd, True)
        env["_LAMBDA_TELEMETRY_LOG_FD"] = str(frames.write_fd)
        pass_fds = (frames.write_fd,)
    try:
        popen = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=logs.write_fd,
            stderr=logs.write_fd,
            start_new_session=True,
            pass_fds=pass_fds,
        )
    except OSError:
        logs.close()
        if frames is not None:
            frames.close()
        raise
    logs.release_write_end()
    if frames is not None:
        frames.release_write_end()
    process = HostProcess(name, logs, frames, popen=popen)
    _watch_exit(loop, process)
    return process


def _watch_exit(loop: asyncio.AbstractEventLoop, process: HostProcess) -> None:
    pidfd = os.pidfd_open(process.pid)

    def on_exit() -> None:
        # wait4 rather than Popen.poll: its rusage keeps the peak memory of a process that has died.
        try:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status, usage = process.pid, 0, None
        if pid == 0:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        returncode = os.waitstatus_to_exitcode(status) if usage is not None else (process.popen.returncode or 0)
        process.popen.returncode = returncode
        if usage is not None:
            process.max_rss_kb = usage.ru_maxrss
        if not process.exited.done():
            process.exited.set_result(returncode)

    loop.add_reader(pidfd, on_exit)


async def kill_all(processes: Sequence[Process], wait: float = 2.0) -> None:
    """SIGKILL every process group (thawing first, so a stopped group can die) and reap them."""
    for process in processes:
        process.signal_group(signal.SIGKILL)
        process.signal_group(signal.SIGCONT)
    pending = [p.exited for p in processes if p.running]
    if pending:
        await asyncio.wait(pending, timeout=wait)
    await close_pipes(processes)


async def close_pipes(processes: Sequence[Process]) -> None:
    """Read what dead processes left in their pipes, then close them."""
    for process in processes:
        for pipe in (process.logs, process.frames):
            if pipe is None:
                continue
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(pipe.closed), 0.5)
            pipe.close()
