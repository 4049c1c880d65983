"""The figures README.md and docs/*.md quote are bench/RESULTS.md's headline table's: every
quote sits between markers bench/headline.py rewrites, and it finds none that disagrees. After
the benchmarks are rerun and the table updated, `bench/headline.py` rewrites them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import headline  # noqa: E402

TABLE = (ROOT / "bench" / "RESULTS.md").read_text()


def test_the_quoted_figures_are_the_tables():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "headline.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_every_quote_is_used_and_every_figure_quoted_is_marked():
    used = {
        name
        for path in headline.DOCUMENTS
        for name in re.findall(r"<!-- headline: ([a-z-]+) -->", path.read_text())
    }
    assert used == set(headline.QUOTES)
    # Outside the markers, no document repeats a figure of the peers' rows.
    rows = headline.headline_rows(TABLE)
    figures = {f for key in ("limitador", "opa") for f in re.findall(r"\*\*(.+?)\*\*", rows[key])}
    for path in headline.DOCUMENTS:
        outside = headline.MARKER.sub("", path.read_text())
        assert not [f for f in figures if f in outside], path


def test_a_rerun_table_is_quoted_anew(tmp_path: Path):
    """What the other end of a benchmark rerun does: new figures in the table, the quotes
    rewritten from them."""
    rows = headline.headline_rows(TABLE)
    # Whatever the table says today, the rerun says 9.99 times.
    old, new = re.search(r"\*\*[^*]+\*\*", rows["limitador"]).group(0), "**9.99\u00d7**"
    newer = TABLE.replace(rows["limitador"], rows["limitador"].replace(old, new))
    doc = "x <!-- headline: peers -->old<!-- /headline --> y"
    text, stale = headline.rewrite(doc, headline.headline_rows(newer), tmp_path / "d.md")
    assert text.startswith("x <!-- headline: peers -->9.99\u00d7 Limitador's rate-limit")
    assert text.endswith("<!-- /headline --> y")
    assert [s.name for s in stale] == ["peers"]
    # Rewritten, nothing is stale any more.
    assert headline.rewrite(text, headline.headline_rows(newer), tmp_path / "d.md")[1] == []


def test_a_row_or_figure_that_is_not_there_is_an_error():
    rows = headline.headline_rows(TABLE)
    no_opa = "\n".join(line for line in TABLE.splitlines() if "against OPA" not in line)
    with pytest.raises(headline.HeadlineError, match="row 'opa'"):
        headline.headline_rows(no_opa)
    unbolded = {**rows, "limitador": rows["limitador"].replace("**", "")}
    with pytest.raises(headline.HeadlineError, match="no bold figure 1"):
        headline.quote("peers", unbolded)
    with pytest.raises(headline.HeadlineError, match="no quote named 'nope'"):
        headline.rewrite("<!-- headline: nope -->x<!-- /headline -->", rows, ROOT / "x.md")
