"""Small inline SVG drawings for the report pages: interval bars and the rollout's story plot.

Report pages run no script (their Content-Security-Policy forbids it), so every chart that sits
inside a table or on a generated page is plain SVG markup, written here with every label
escaped. Numbers are formatted by the caller; coordinates are computed here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

WIN, LOSS, NEUTRAL, WARN = "#137333", "#c5221f", "#5f6368", "#b06000"


@dataclass(frozen=True)
class Axis:
    """A shared horizontal axis from `low` to `high` (data units), drawn `width` pixels wide."""

    low: float
    high: float
    width: int = 160

    def x(self, value: float) -> float:
        span = self.high - self.low or 1.0
        clipped = min(max(value, self.low), self.high)
        return round((clipped - self.low) / span * self.width, 1)


def shared_axis(values: Sequence[float | None], width: int = 160) -> Axis:
    """An axis symmetric around zero that holds every finite value, with a little room."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    reach = max(finite, default=0.0) * 1.1 or 0.01
    return Axis(-reach, reach, width)


def interval_bar(
    axis: Axis,
    low: float | None,
    high: float | None,
    estimate: float | None,
    colour: str,
    *,
    title: str = "",
    marker: float | None = None,
    height: int = 18,
) -> str:
    """One interval on `axis`: a bar from low to high, a dot at the estimate, zero as a line,
    and an optional dashed `marker` (a guardrail's margin). Empty axis when nothing to draw."""
    parts = [_line(axis.x(0.0), height, "#9aa0a6", "")]
    if marker is not None and math.isfinite(marker):
        parts.append(_line(axis.x(marker), height, WARN, ' stroke-dasharray="3,2"'))
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        x1, x2 = axis.x(low), axis.x(high)
        parts.append(
            f'<rect x="{x1}" y="{height / 2 - 4}" width="{max(x2 - x1, 1.5)}" height="8" '
            f'rx="3" fill="{colour}" fill-opacity="0.35" stroke="{colour}"/>'
        )
    if estimate is not None and math.isfinite(estimate):
        parts.append(f'<circle cx="{axis.x(estimate)}" cy="{height / 2}" r="3.5" fill="{colour}"/>')
    tip = f"<title>{html.escape(title)}</title>" if title else ""
    return (
        f'<svg class="interval" width="{axis.width}" height="{height}" '
        f'viewBox="0 0 {axis.width} {height}" role="img">{tip}{"".join(parts)}</svg>'
    )


def axis_labels(axis: Axis, text: Sequence[str]) -> str:
    """Three tick labels under a column of bars: low, zero, high (already formatted)."""
    left, middle, right = text
    return (
        f'<svg class="axis" width="{axis.width}" height="14" viewBox="0 0 {axis.width} 14">'
        f'<text x="0" y="11" font-size="10">{html.escape(left)}</text>'
        f'<text x="{axis.x(0.0)}" y="11" font-size="10" text-anchor="middle">'
        f"{html.escape(middle)}</text>"
        f'<text x="{axis.width}" y="11" font-size="10" text-anchor="end">'
        f"{html.escape(right)}</text></svg>"
    )


@dataclass(frozen=True)
class StoryPoint:
    """One report on the story plot: its label, estimate and interval (already in the units
    the plot shows), and the colour of its decision."""

    label: str
    estimate: float
    low: float | None
    high: float | None
    colour: str


def story_plot(points: Sequence[StoryPoint], unit: str, width: int = 720) -> str:
    """Every report's estimate with its interval, oldest to newest, on one vertical axis."""
    height, top, bottom, left = 240, 16, 56, 56
    values = [v for p in points for v in (p.estimate, p.low, p.high) if v is not None]
    reach = max((abs(v) for v in values if math.isfinite(v)), default=1.0) * 1.15 or 1.0
    inner = height - top - bottom

    def y(value: float) -> float:
        return round(top + (reach - max(min(value, reach), -reach)) / (2 * reach) * inner, 1)

    step = (width - left - 16) / max(len(points), 1)
    parts = [
        f'<line x1="{left}" x2="{width - 8}" y1="{y(0)}" y2="{y(0)}" stroke="#9aa0a6"/>',
        f'<text x="4" y="{y(reach) + 4}" font-size="10">{reach:+.2g}</text>',
        f'<text x="4" y="{y(0) + 4}" font-size="10">0</text>',
        f'<text x="4" y="{y(-reach) + 4}" font-size="10">{-reach:+.2g}</text>',
        f'<text x="4" y="{height - 4}" font-size="11">{html.escape(unit)}</text>',
    ]
    for i, p in enumerate(points):
        x = round(left + step * (i + 0.5), 1)
        if p.low is not None and p.high is not None:
            parts.append(
                f'<line x1="{x}" x2="{x}" y1="{y(p.high)}" y2="{y(p.low)}" '
                f'stroke="{p.colour}" stroke-width="3"/>'
            )
        parts.append(f'<circle cx="{x}" cy="{y(p.estimate)}" r="4.5" fill="{p.colour}"/>')
        parts.append(
            f'<text x="{x}" y="{height - bottom + 16}" font-size="10" text-anchor="middle">'
            f"{html.escape(p.label)}</text>"
        )
    return (
        f'<svg class="story" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img">{"".join(parts)}</svg>'
    )


def _line(x: float, height: int, colour: str, extra: str) -> str:
    return f'<line x1="{x}" x2="{x}" y1="0" y2="{height}" stroke="{colour}"{extra}/>'
