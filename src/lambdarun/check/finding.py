"""A finding of check-extension: what, about which extension, how bad, and the evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .battery import Evidence


class Level(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    summary: str
    extension: str | None = None
    evidence: tuple[str, ...] = ()
    invokes: tuple[str, ...] = ()  # the request ids it is about

    def json(self) -> dict[str, Any]:
        return {"check": self.check, "level": str(self.level), "extension": self.extension, "summary": self.summary,
                "evidence": list(self.evidence), "invokes": list(self.invokes)}  # fmt: skip


def events_of(evidence: Evidence, kind: type[Any]) -> list[Any]:
    return [e.data for e in evidence.events if isinstance(e.data, kind)]


def msec(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)

    @property
    def worst(self) -> Level:
        return max((f.level for f in self.findings), default=Level.INFO)
