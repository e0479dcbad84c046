"""check-extension's findings as a table for people, or JSON for CI."""

from __future__ import annotations

import json
import shutil
import textwrap

from .battery import Evidence
from .finding import Verdict


def as_json(evidence: Evidence, verdict: Verdict) -> str:
    return json.dumps({
        "layer": str(evidence.layer),
        "runtime": evidence.runtime,
        "extensions": evidence.extensions,
        "invokes": [{"scenario": s.scenario, "requestId": s.request_id, "functionError": s.function_error}
                    for s in evidence.steps],
        "worst": str(verdict.worst),
        "findings": [f.json() for f in verdict.findings],
    }, indent=2)  # fmt: skip


def as_table(evidence: Evidence, verdict: Verdict) -> str:
    width = max(80, min(160, shutil.get_terminal_size((120, 24)).columns))
    lines = [f"check-extension {evidence.layer} on {evidence.runtime}: extensions {', '.join(evidence.extensions)}",
             f"{len(evidence.steps)} invokes: " + ", ".join(dict.fromkeys(s.scenario for s in evidence.steps)),
             "", f"{'LEVEL':<8} {'CHECK':<13} {'EXTENSION':<20} FINDING"]  # fmt: skip
    indent = " " * 43
    for finding in sorted(verdict.findings, key=lambda f: -f.level):
        head = f"{str(finding.level).upper():<8} {finding.check:<13} {(finding.extension or '-'):<20} "
        wrapped = textwrap.wrap(finding.summary, width - len(head)) or [""]
        lines.append(head + wrapped[0])
        lines.extend(indent + rest for rest in wrapped[1:])
        for item in finding.evidence:
            lines.extend(textwrap.wrap(item, width, initial_indent=indent + "· ", subsequent_indent=indent + "  "))
    counts = {level: sum(1 for f in verdict.findings if str(f.level) == level) for level in ("error", "warning")}
    lines += ["", f"{counts['error']} error(s), {counts['warning']} warning(s)"]
    return "\n".join(lines)
