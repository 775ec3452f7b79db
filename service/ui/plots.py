"""Small SVG charts drawn on the server: no script, no library, no network.

Two kinds are enough for the Activity page: stacked bars (tasks per interval by
state) and lines (latency percentiles). Values are placed on a fixed 640x200
canvas; the browser scales it to the page width.
"""

from __future__ import annotations

from html import escape

W, H = 640, 200
LEFT, BOTTOM, TOP, RIGHT = 48, 22, 10, 10
COLORS = {"success": "#2e7d32", "failed": "#c62828", "cancelled": "#9e9e9e",
          "p50": "#1565c0", "p95": "#ef6c00", "p99": "#6a1b9a"}


def _frame(top: float, unit: str, labels: list[str]) -> list[str]:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" '
             f'class="chart" role="img">']
    for i in range(5):
        y = TOP + (H - TOP - BOTTOM) * i / 4
        value = top * (4 - i) / 4
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#ddd"/><text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="10" '
                     f'text-anchor="end">{_num(value)}{escape(unit)}</text>')
    step = max(1, len(labels) // 6)
    for i in range(0, len(labels), step):
        x = LEFT + (W - LEFT - RIGHT) * (i + 0.5) / len(labels)
        parts.append(f'<text x="{x:.1f}" y="{H - 6}" font-size="10" '
                     f'text-anchor="middle">{escape(labels[i])}</text>')
    return parts


def _num(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.2g}"


def _top(values: list[float]) -> float:
    top = max([v for v in values if v > 0], default=1.0)
    return top * 1.1


def stacked_bars(labels: list[str], series: dict[str, list[int]]) -> str:
    """One bar per label, its parts stacked in the order of ``series``."""
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    top = _top([float(t) for t in totals])
    parts = _frame(top, "", labels)
    plot_h = H - TOP - BOTTOM
    width = (W - LEFT - RIGHT) / max(1, len(labels))
    for i in range(len(labels)):
        base = float(H - BOTTOM)
        for name, values in series.items():
            if not values[i]:
                continue
            h = plot_h * values[i] / top
            base -= h
            parts.append(f'<rect x="{LEFT + i * width + 1:.1f}" y="{base:.1f}" '
                         f'width="{max(1.0, width - 2):.1f}" height="{h:.1f}" '
                         f'fill="{COLORS.get(name, "#555")}"><title>{escape(labels[i])} '
                         f'{escape(name)}: {values[i]}</title></rect>')
    return "".join([*parts, "</svg>"])


def lines(labels: list[str], series: dict[str, list[float | None]], unit: str) -> str:
    """One line per series; a gap where a value is None."""
    top = _top([v for s in series.values() for v in s if v is not None])
    parts = _frame(top, unit, labels)
    plot_h = H - TOP - BOTTOM
    width = (W - LEFT - RIGHT) / max(1, len(labels))
    for name, values in series.items():
        points = []
        color = COLORS.get(name, "#555")
        for i, v in enumerate(values):
            if v is None:
                continue
            x, y = LEFT + (i + 0.5) * width, H - BOTTOM - plot_h * v / top
            points.append(f"{x:.1f},{y:.1f}")
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"><title>'
                         f'{escape(labels[i])} {escape(name)}: {_num(v)}{escape(unit)}'
                         f'</title></circle>')  # a lone point shows too
        if points:
            parts.append(f'<polyline fill="none" stroke="{color}" '
                         f'stroke-width="2" points="{" ".join(points)}"><title>'
                         f'{escape(name)}</title></polyline>')
    return "".join([*parts, "</svg>"])
