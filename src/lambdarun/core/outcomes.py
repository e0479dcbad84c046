"""The words Lambda uses for how things ended: statuses on platform events, and why an environment was reset."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """`status` of platform.initRuntimeDone, initReport, runtimeDone and report (SPEC 3.4)."""

    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    FAILURE = "failure"


class ResetReason(StrEnum):
    """`shutdownReason` of the SHUTDOWN event: spin-down, or a reset after a timeout or a failure (SPEC 4.4).
    Lowercase as RAPID sends it [UNCONFIRMED: the docs show `spindown`, `timeout`, `failure`]."""

    SPINDOWN = "spindown"
    TIMEOUT = "timeout"
    FAILURE = "failure"
