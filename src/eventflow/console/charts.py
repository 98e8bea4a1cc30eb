"""Small charts as inline SVG, drawn on the server: no JavaScript library, and
nothing the Content-Security-Policy has to allow (styling is by class, from the
console's own stylesheet)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 300
HEIGHT = 64
PAD = 2


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def sparkline(
    values: Sequence[float | None], title: str, unit: str = "", kind: str = "line"
) -> Markup:
    """The last ``len(values)`` samples, oldest first; ``None`` is a gap. Bars
    for counts, a line for measurements. The peak is printed in the corner."""
    known = [v for v in values if v is not None]
    top = max(known, default=0.0) or 1.0
    n = max(len(values), 1)
    step = (WIDTH - 2 * PAD) / n
    parts: list[str] = []

    def y(v: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v / top)

    if kind == "bar":
        for i, v in enumerate(values):
            if v:
                top_y = y(v)
                parts.append(
                    f'<rect class="bar" x="{PAD + i * step:.1f}" y="{top_y:.1f}" '
                    f'width="{max(step - 1, 1):.1f}" '
                    f'height="{HEIGHT - PAD - top_y:.1f}"/>'
                )
    else:
        run: list[str] = []
        for i, v in enumerate(values):
            if v is None:
                if len(run) > 1:
                    parts.append(f'<polyline class="line" points="{" ".join(run)}"/>')
                run = []
                continue
            run.append(f"{PAD + (i + 0.5) * step:.1f},{y(v):.1f}")
        if len(run) > 1:
            parts.append(f'<polyline class="line" points="{" ".join(run)}"/>')
        elif len(run) == 1:
            x, yy = run[0].split(",")
            parts.append(f'<circle class="dot" cx="{x}" cy="{yy}" r="2"/>')
    peak = f"max {_fmt(max(known))}{unit}" if known else "no data"
    label = escape(f"{title}: {peak}")
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{label}" preserveAspectRatio="none">'
        f'<line class="axis" x1="0" y1="{HEIGHT - PAD}" x2="{WIDTH}" '
        f'y2="{HEIGHT - PAD}"/>' + "".join(parts) + "</svg>"
        f'<div class="chart-peak">{escape(peak)}</div>'
    )
