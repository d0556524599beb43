"""The HTML leaderboard, opened in a real headless browser: the table renders, sorts by a column, and the
page needs nothing from the network (plots are embedded)."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from benchbed.report.html import write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")


def rendered_dom(page: Path, fragment: str = "") -> str:
    """The DOM after the page's scripts ran, as headless Chromium sees it, with no network."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync", f"--user-data-dir={profile}", "--dump-dom",
                                 page.resolve().as_uri() + fragment], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class TableReader(HTMLParser):
    """The text of every cell of ``#board``, row by row."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_board = self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id") == "board":
            self._in_board = True
        elif self._in_board and tag == "tr":
            self.rows.append([])
        elif self._in_board and tag in ("td", "th"):
            self._in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_board = False
        elif tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_board and self._in_cell:
            self.rows[-1][-1] += data


def read_table(dom: str) -> list[list[str]]:
    reader = TableReader()
    reader.feed(dom)
    return reader.rows


def _page(tmp_path: Path) -> Path:
    png = tmp_path / "plot.png"
    png.write_bytes(bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 32)
    rows = [{"cells": [("snl", "snl"), ("93.10", 0.931), ("1,024", 1024)], "external": False},
            {"cells": [("autorep", "autorep"), ("95.00 ±0.2", 0.95), ("1,024", 1024)], "external": False},
            {"cells": [("Lab X (external)", "Lab X (external)"), ("94.00", 0.94), ("1,024", 1024)], "external": True},
            {"cells": [("all_relu", "all_relu"), ("98.30", 0.983), ("—", None)], "external": False}]
    path = tmp_path / "board.html"
    write_html(path, "tiny", ["- **Data:** digits"],
               [("method", "method", ""), ("clean_accuracy", "clean acc %", "clean accuracy"),
                ("drelus", "DReLUs", "ReLU counts")], rows, [png], ["## Claims", "- a claim"])
    return path


@needs_browser
def test_the_html_table_renders_and_sorts(tmp_path):
    page = _page(tmp_path)
    as_written = read_table(rendered_dom(page))
    assert as_written[0] == ["method", "clean acc %", "DReLUs"]
    assert [r[0] for r in as_written[1:]] == ["snl", "autorep", "Lab X (external)", "all_relu"]
    by_accuracy = read_table(rendered_dom(page, "#sort=clean_accuracy"))
    assert [r[0] for r in by_accuracy[1:]] == ["all_relu", "autorep", "Lab X (external)", "snl"], \
        "descending by default, the external row among the others by its number"
    by_drelus = read_table(rendered_dom(page, "#sort=drelus:asc"))
    assert [r[0] for r in by_drelus[1:]][-1] == "all_relu", "empty cells sort last"


def test_column_groups_can_be_hidden_and_external_rows_are_styled_apart(tmp_path):
    text = _page(tmp_path).read_text()
    assert text.count('type="checkbox"') == 2, "one switch per group of columns; the method column has none"
    assert text.count('<td data-group="clean accuracy"') == 4 and text.count('<tr class="external">') == 1


def test_the_page_is_self_contained(tmp_path):
    text = _page(tmp_path).read_text()
    assert "data:image/png;base64," in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "no network resource"
