"""Line charts as SVG, written by hand (no plotting library is a dependency): panels side by
side sharing one x axis (linear) and one y axis (log 10), a line and markers per series, a
legend, and optional guide lines. Enough for latency against offered load."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from html import escape

#: Colour-blind safe (Okabe and Ito), in series order.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
XML_CHAR = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
DASHES = ("", "6 3", "2 2", "8 3 2 3")


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]  # (x, y), y > 0
    dashed: bool = False


@dataclass
class Panel:
    title: str
    series: list[Series]
    guides_y: list[tuple[float, str]] = field(default_factory=list)  # horizontal lines
    guides_x: list[tuple[float, str]] = field(default_factory=list)  # vertical lines


def text(s: str) -> str:
    """s as SVG text: markup escaped, characters XML 1.0 cannot hold dropped."""
    return escape("".join(c for c in s if XML_CHAR.match(c)))


def nice_step(span: float, ticks: int = 6) -> float:
    """A 1, 2 or 5 times a power of ten step giving about ``ticks`` ticks over span."""
    raw = span / max(ticks, 1)
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 times each power of ten between lo and hi."""
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        out += [m * 10**e for m in (1, 2, 5) if lo <= m * 10**e <= hi]
    return out


def chart(
    panels: list[Panel], *, x_label: str, y_label: str, fmt_x, fmt_y, title: str = "",
    width: int = 330, height: int = 300,
) -> str:  # fmt: skip
    """The SVG text. Every panel has the same axes: x from 0 to the largest x of any point,
    y (log) over every point and guide."""
    xs = [x for p in panels for s in p.series for x, _ in s.points]
    xs += [x for p in panels for x, _ in p.guides_x]
    ys = [y for p in panels for s in p.series for _, y in s.points if y > 0]
    ys += [y for p in panels for y, _ in p.guides_y]
    x_step = nice_step(max(*xs, 1e-9))
    x_hi = math.ceil(max(xs) / x_step) * x_step
    y_lo = 10 ** math.floor(math.log10(min(ys)))
    y_hi = max(next(t for t in log_ticks(y_lo, max(ys) * 10) if t >= max(ys)), y_lo * 10)
    left, right, top, bottom = 84, 28, 44 if title else 24, 44
    names = list(dict.fromkeys(s.name for p in panels for s in p.series))
    legend_h = 18 * len(names) + 8
    total_w = left + len(panels) * (width + right) + 10
    total_h = top + height + bottom + legend_h
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
        f'viewBox="0 0 {total_w} {total_h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{total_w}" height="{total_h}" fill="white"/>',
    ]
    if title:
        out.append(
            f'<text x="{left}" y="16" font-size="13" font-weight="bold">{text(title)}</text>'
        )
    for k, panel in enumerate(panels):
        x0 = left + k * (width + right)

        def px(x: float, x0: float = x0) -> float:
            return x0 + x / x_hi * width

        def py(y: float) -> float:
            span = math.log10(y_hi) - math.log10(y_lo)
            return top + height - (math.log10(y) - math.log10(y_lo)) / span * height

        out.append(
            f'<text x="{x0 + width / 2}" y="{top - 8}" text-anchor="middle" '
            f'font-weight="bold">{text(panel.title)}</text>'
        )
        out.append(
            f'<rect x="{x0}" y="{top}" width="{width}" height="{height}" fill="none" '
            'stroke="#888"/>'
        )
        for y in log_ticks(y_lo, y_hi):
            out.append(
                f'<line x1="{x0}" x2="{x0 + width}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                'stroke="#ddd"/>'
            )
            if k == 0:
                out.append(
                    f'<text x="{x0 - 4}" y="{py(y) + 4:.1f}" text-anchor="end">'
                    f"{text(fmt_y(y))}</text>"
                )
        x = 0.0
        while x <= x_hi + 1e-9:
            out.append(
                f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + height}" '
                'stroke="#eee"/>'
            )
            out.append(
                f'<text x="{px(x):.1f}" y="{top + height + 14}" text-anchor="middle">'
                f"{text(fmt_x(x))}</text>"
            )
            x += x_step
        for y, label in panel.guides_y:
            out.append(
                f'<line x1="{x0}" x2="{x0 + width}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                'stroke="#000" stroke-dasharray="4 4"/>'
            )
            out.append(f'<text x="{x0 + 4}" y="{py(y) - 4:.1f}">{text(label)}</text>')
        for x, label in panel.guides_x:
            out.append(
                f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + height}" '
                'stroke="#000" stroke-dasharray="4 4"/>'
            )
            out.append(f'<text x="{px(x) + 4:.1f}" y="{top + height - 6}">{text(label)}</text>')
        for s in panel.series:
            i = names.index(s.name)
            colour, dash = COLOURS[i % len(COLOURS)], DASHES[i // len(COLOURS) % len(DASHES)]
            if s.dashed:
                dash = "6 3"
            pts = [(px(x), py(y)) for x, y in sorted(s.points) if y > 0]
            line = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            dashing = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(
                f'<polyline points="{line}" fill="none" stroke="{colour}" '
                f'stroke-width="1.6"{dashing}/>'
            )
            out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.2" fill="{colour}"/>' for a, b in pts]
    mid = left + (len(panels) * (width + right) - right) / 2
    out.append(
        f'<text x="{mid}" y="{top + height + 32}" text-anchor="middle">{text(x_label)}</text>'
    )
    out.append(
        f'<text transform="translate(14 {top + height / 2}) rotate(-90)" '
        f'text-anchor="middle">{text(y_label)}</text>'
    )
    for i, name in enumerate(names):
        y = top + height + bottom + 6 + 18 * i
        colour = COLOURS[i % len(COLOURS)]
        dashed = any(s.dashed for p in panels for s in p.series if s.name == name)
        dash = ' stroke-dasharray="6 3"' if dashed else ""
        out.append(
            f'<line x1="{left}" x2="{left + 28}" y1="{y}" y2="{y}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{left + 34}" y="{y + 4}">{text(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
