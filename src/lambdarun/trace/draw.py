"""A timeline drawn with matplotlib (`pip install 'lambdarun[trace]'`): one row per track, nested spans stacked
inside their row, and one panel per stretch of activity: frozen periods (often seconds, against invokes of a few
milliseconds) become the gaps between panels, each labelled with how long the environment stayed frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .timeline import PLATFORM, Span, Timeline, track_order

COLORS = {
    "init": "#8fb3de",
    "invoke": "#9fd39b",
    "runtime": "#3f9a4a",
    "post-runtime": "#f0a35e",
    "telemetry": "#c59de0",
    "shutdown": "#e07a7a",
}
_CHAR_INCHES = 6.5 * 0.6 / 72  # about one character at the labels' 6.5 pt
_NESTING_SLACK_S = 2e-6  # times are truncated to microseconds: a child may end a microsecond past its parent


class DrawingUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class _Window:
    title: str
    start: float
    end: float


def _windows(timeline: Timeline) -> list[_Window]:
    """One panel per outermost platform span (an init, an invoke, a shutdown), stretched over what follows it up
    to the next one, with the frozen time before it in its title."""
    platform = sorted(timeline.on(PLATFORM), key=lambda s: (s.start, -s.duration_ms))
    outer: list[Span] = []
    for span in platform:
        if span.category != "frozen" and (not outer or span.start >= outer[-1].end - _NESTING_SLACK_S):
            outer.append(span)
    frozen = [s for s in platform if s.category == "frozen"]
    last = max((s.end for s in timeline.spans), default=0.0)
    windows = []
    for n, span in enumerate(outer):
        limit = outer[n + 1].start if n + 1 < len(outer) else last
        pauses = [f for f in frozen if span.end - _NESTING_SLACK_S <= f.start < limit]
        end = min([limit, *(f.start for f in pauses)])
        reach = max([span.end, *(s.end for s in timeline.spans if span.start <= s.start < end)])
        before = [
            f for f in frozen if f.end <= span.start + _NESTING_SLACK_S and (n == 0 or f.start >= outer[n - 1].end)
        ]
        title = span.name if not before else f"frozen {_human(sum(f.duration_ms for f in before))}, then\n{span.name}"
        windows.append(_Window(title, span.start, min(reach, end) if end > span.end else span.end))
    return windows


def _depths(spans: list[Span]) -> dict[int, int]:
    """How deep each span of one track sits: the number of its spans that contain it."""
    ordered = sorted(range(len(spans)), key=lambda i: (spans[i].start, -spans[i].duration_ms))
    depth: dict[int, int] = {}
    stack: list[int] = []
    for i in ordered:
        while stack and spans[stack[-1]].end + _NESTING_SLACK_S < spans[i].end:
            stack.pop()
        depth[i] = len(stack)
        stack.append(i)
    return depth


def draw_svg(timeline: Timeline, out: str | Path, title: str = "") -> None:
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise DrawingUnavailable("drawing needs matplotlib: pip install 'lambdarun[trace]'") from None
    tracks = [t for t in track_order(timeline.tracks) if timeline.on(t)]
    windows = _windows(timeline)
    if not tracks or not windows:
        raise ValueError("the trace has no spans to draw")
    lanes: dict[str, list[tuple[Span, int]]] = {}
    for track in tracks:
        spans = timeline.on(track)
        depths = _depths(spans)
        lanes[track] = [(span, depths[i]) for i, span in enumerate(spans)]
    heights = {t: 1 + max(d for _, d in lanes[t]) for t in tracks}
    rows: dict[str, float] = {}
    y = 0.0
    for track in tracks:
        rows[track] = y
        y += heights[track] + 0.4
    widths = [max((w.end - w.start) * 1000, 1.0) ** 0.5 for w in windows]
    fig_width = max(10.0, 3.2 * len(windows))
    fig = Figure(figsize=(fig_width, 1.2 + 0.42 * y), layout="constrained")
    axes = fig.subplots(1, len(windows), sharey=True, width_ratios=widths, squeeze=False)[0]
    for ax, window, ratio in zip(axes, windows, widths, strict=True):
        length_ms = (window.end - window.start) * 1000
        ms_per_inch = length_ms / (0.85 * fig_width * ratio / sum(widths))
        for track in tracks:
            for span, depth in lanes[track]:
                left, right = max(span.start, window.start), min(span.end, window.end)
                if right < left or (right == left and span.duration_ms > 0):
                    continue
                x, width = (left - window.start) * 1000, (right - left) * 1000
                lane = rows[track] + depth
                ax.barh(lane, max(width, length_ms / 600), left=x, height=0.85, align="edge",
                        color=COLORS.get(span.category, "#bbbbbb"), edgecolor="#333333", linewidth=0.4)  # fmt: skip
                if width / ms_per_inch > len(span.name) * _CHAR_INCHES + 0.1:  # the label fits in the bar
                    ax.text(x + width / 2, lane + 0.43, span.name, ha="center", va="center", fontsize=6.5,
                            clip_on=True)  # fmt: skip
        ax.set_xlim(0, length_ms)
        ax.set_xlabel(f"ms from +{(window.start - timeline.origin) * 1000:.1f} ms", fontsize=7)
        ax.grid(axis="x", linewidth=0.3, alpha=0.5)
        ax.set_title(window.title, fontsize=8)
    first = axes[0]
    first.set_yticks([rows[t] + heights[t] / 2 for t in tracks], tracks, fontsize=8)
    first.set_ylim(y, -0.4)
    fig.legend(handles=[Patch(color=c, label=k) for k, c in COLORS.items()], loc="outside lower center",
               ncols=len(COLORS), fontsize=8, frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(out, format="svg")


def _human(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"
