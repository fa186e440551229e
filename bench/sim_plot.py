"""Completion-time CDFs against the bound as an SVG, with the stdlib only.

    python -m bench.sim_plot OUT.svg RUN.json [RUN.json ...]

Each RUN.json is what `python -m bench.sim --cdf PATH` writes next to PATH
(PATH.json): a list of curves, {"label": ..., "x": [completion time / bound,
sorted]}. The plot draws each curve as a step function (fraction of hosts
complete against time over the bound) and a dashed line at the bound.
matplotlib is not a dependency of roost; this module needs nothing else.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 60
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _ticks(low: float, high: float) -> list[float]:
    """About six round tick values covering [low, high]."""
    span = max(high - low, 1e-9)
    raw = span / 6
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def render(curves: list[dict[str, Any]], title: str) -> str:
    """The SVG text for these curves."""
    xs = [x for c in curves for x in c["x"]]
    x_low = min([1.0, *xs]) if xs else 1.0
    x_high = max([1.0, *xs]) if xs else 2.0
    pad = (x_high - x_low) * 0.05 or 0.1
    x_low, x_high = max(0.0, x_low - pad), x_high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return TOP + (1.0 - y) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for x in _ticks(x_low, x_high):
        out.append(f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + plot_h}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{px(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                   f'{x:g}</text>')
    for i in range(6):
        y = i / 5
        out.append(f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + plot_w}" y2="{py(y):.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="black"/>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 18}" text-anchor="middle">'
               'host completion time / bound</text>')
    out.append(f'<text x="16" y="{TOP + plot_h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {TOP + plot_h / 2})">fraction of hosts complete</text>')
    out.append(f'<line x1="{px(1.0):.1f}" y1="{TOP}" x2="{px(1.0):.1f}" y2="{TOP + plot_h}" '
               'stroke="grey" stroke-dasharray="6,4"/>')
    legend = [("bound", "grey", True)]
    for k, curve in enumerate(curves):
        colour = COLOURS[k % len(COLOURS)]
        points = curve["x"]
        if not points:
            continue
        n = len(points)
        path = [f"M{px(points[0]):.2f},{py(0.0):.2f}"]
        for i, x in enumerate(points):
            path.append(f"L{px(x):.2f},{py(i / n):.2f}L{px(x):.2f},{py((i + 1) / n):.2f}")
        out.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" '
                   'stroke-width="1.8"/>')
        legend.append((str(curve["label"]), colour, False))
    for k, (label, colour, dashed) in enumerate(legend):
        y = TOP + 16 + 18 * k
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        out.append(f'<line x1="{LEFT + 12}" y1="{y - 4}" x2="{LEFT + 40}" y2="{y - 4}" '
                   f'stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{LEFT + 46}" y="{y}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def load(paths: list[str]) -> list[dict[str, Any]]:
    curves: list[dict[str, Any]] = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise ValueError("expected a list of curves")
        for curve in data:
            if not isinstance(curve, dict) or not isinstance(curve.get("x"), list):
                raise ValueError("a curve needs a label and a list x")
            curves.append({"label": str(curve.get("label", path)),
                           "x": sorted(float(x) for x in curve["x"])})
    return curves


def write(path: str, curves: list[dict[str, Any]], title: str) -> None:
    with open(path, "w") as f:
        f.write(render(curves, title))


TITLE = "roost, simulated (roost.sim): completion-time CDF against the bound"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    try:
        curves = load(args[1:])
        write(args[0], curves, TITLE)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
