"""Reading an invoke's log lines: shared by the runtime tests."""

from __future__ import annotations

import re

from lambdarun import InvokeResult


def index_of(lines: list[str], pattern: str) -> int:
    """The index of the first line matching `pattern` (a regex searched from the line's start)."""
    for index, line in enumerate(lines):
        if re.match(pattern, line):
            return index
    raise AssertionError(f"no line matches {pattern!r} in:\n" + "\n".join(lines))


def assert_failed_init_then_suppressed_init(result: InvokeResult) -> None:
    """INIT_REPORT for the failed init before START, then the init re-run inside the invoke before END (SPEC 4.1)."""
    lines = result.logs
    failed_init = index_of(lines, r"INIT_REPORT Init Duration: [\d.]+ ms\tPhase: init\tStatus: error")
    start = index_of(lines, f"START RequestId: {result.request_id} ")
    suppressed_init = index_of(lines, r"INIT_REPORT Init Duration: [\d.]+ ms\tPhase: invoke\tStatus: error")
    end = index_of(lines, f"END RequestId: {result.request_id}")
    assert failed_init < start < suppressed_init < end
