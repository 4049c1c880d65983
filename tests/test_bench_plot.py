"""The benchmarks' SVG line charts (bench/harness/plot.py): well-formed, every point where
the axes say it is, and labels inert whatever text a series name holds."""

from __future__ import annotations

import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from harness import plot

NS = "{http://www.w3.org/2000/svg}"
points = st.lists(
    st.tuples(
        st.floats(min_value=1, max_value=1e6, allow_nan=False),
        st.floats(min_value=1e-2, max_value=1e7, allow_nan=False),
    ),
    min_size=1,
    max_size=20,
)


def render(series: list[plot.Series], **guides) -> ET.Element:
    panel = plot.Panel("p99", series, **guides)
    text = plot.chart([panel, panel], x_label="x", y_label="y", fmt_x=str, fmt_y=str)
    return ET.fromstring(text)


@given(st.lists(st.tuples(st.text(max_size=30), points), min_size=1, max_size=6))
def test_every_series_is_a_line_of_its_points_in_every_panel(data):
    series = [plot.Series(name, pts) for name, pts in data]
    svg = render(series)
    lines = svg.findall(f"{NS}polyline")
    assert len(lines) == 2 * len(series)
    for line, s in zip(lines, series * 2, strict=True):
        assert len(line.get("points").split()) == len(s.points)
    # The legend names each distinct series once, as text (markup in a name stays text).
    texts = [t.text or "" for t in svg.iter(f"{NS}text")]
    for name in {name for name, _ in data}:
        assert plot.text(name) == "" or ET.fromstring(f"<t>{plot.text(name)}</t>").text in texts


def test_points_sit_on_the_log_scale():
    # y from 10 to 1000: three decades over the panel's height, equally spaced.
    s = plot.Series("a", [(0, 10), (50, 100), (100, 1000)])
    (line, _) = render([s]).findall(f"{NS}polyline")
    ys = [float(xy.split(",")[1]) for xy in line.get("points").split()]
    assert math.isclose(ys[0] - ys[1], ys[1] - ys[2], rel_tol=1e-3)
    assert ys[0] > ys[1] > ys[2], "larger latencies are drawn higher"


def test_guides_widen_the_axes_to_show_them():
    s = plot.Series("a", [(10, 50), (20, 60)])
    svg = render([s], guides_y=[(1000, "1 ms")], guides_x=[(30, "30")])
    texts = [t.text for t in svg.iter(f"{NS}text")]
    assert "1 ms" in texts and "30" in texts
    assert "1000" in texts, "the y axis reaches the guide's decade"


def test_ticks_are_one_two_five():
    assert plot.log_ticks(10, 1000) == [10, 20, 50, 100, 200, 500, 1000]
    assert plot.nice_step(180_000) in (20_000, 50_000)
