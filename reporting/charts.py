"""The report chart: a line per series (delivered, clicks, conversions) as inline SVG drawn on the
server -- no script, nothing loaded from elsewhere. Used by the admin's report page and the staff app's."""

from __future__ import annotations

from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

SERIES = (("delivered", "#2e7d32"), ("clicks", "#1565c0"), ("conversions", "#8a5200"))
WIDTH, HEIGHT, PAD = 720, 220, 30


def chart_svg(trend: list[dict[str, Any]], series: tuple[tuple[str, str], ...] = SERIES) -> SafeString:
    """A line per series over the trend's buckets, each scaled to its own maximum (a flow's report
    draws delivered and opt-outs). Safe to put in a page as it is: the points are numbers drawn
    here, and every text in it (series names, bucket labels) is escaped."""
    if not trend:
        return mark_safe("")
    n = len(trend)
    step = (WIDTH - 2 * PAD) / max(n - 1, 1)
    lines = []
    for name, colour in series:
        values = [int(b.get(name, 0)) for b in trend]
        top = max(values) or 1
        points = " ".join(
            f"{PAD + i * step:.1f},{HEIGHT - PAD - (v / top) * (HEIGHT - 2 * PAD):.1f}" for i, v in enumerate(values)
        )
        lines.append(
            f'<polyline fill="none" stroke="{escape(colour)}" stroke-width="2" points="{points}">'
            f"<title>{escape(name)} (max {top})</title></polyline>"
        )
    legend = "".join(
        f'<text x="{PAD + i * 140}" y="16" fill="{escape(colour)}" font-size="12">{escape(name)}</text>'
        for i, (name, colour) in enumerate(series)
    )
    first, last = escape(trend[0]["bucket"]), escape(trend[-1]["bucket"])
    labels = (
        f'<text x="{PAD}" y="{HEIGHT - 8}" font-size="10">{first}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" font-size="10" text-anchor="end">{last}</text>'
    )
    return mark_safe(  # noqa: S308 - numbers drawn here and escaped text only
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(", ".join(n for n, _ in series))}" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" style="background:#fafafa">'
        f"{legend}{''.join(lines)}{labels}</svg>"
    )
