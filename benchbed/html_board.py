"""The leaderboard as one self-contained HTML file: the protocol, a table sortable by any column (click
a header, or open the file with ``#sort=COLUMN`` or ``#sort=COLUMN:asc``), and the plots embedded as
data URIs, so it needs no network and no other file to be read."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_SCRIPT = """
const table = document.getElementById("board");
const body = table.tBodies[0];
function sortBy(column, ascending) {
  const rows = Array.from(body.rows);
  const key = row => {
    const cell = row.cells[column];
    const value = cell.dataset.sort;
    return value === "" || value === undefined ? null : (isNaN(Number(value)) ? value : Number(value));
  };
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
  });
  rows.forEach(row => body.appendChild(row));
  Array.from(table.tHead.rows[0].cells).forEach((th, i) =>
    th.setAttribute("aria-sort", i === column ? (ascending ? "ascending" : "descending") : "none"));
}
Array.from(table.tHead.rows[0].cells).forEach((th, i) => th.addEventListener("click", () =>
  sortBy(i, th.getAttribute("aria-sort") === "descending")));
const wanted = new URLSearchParams(location.hash.slice(1)).get("sort");
if (wanted) {
  const [name, direction] = wanted.split(":");
  const index = Array.from(table.tHead.rows[0].cells).findIndex(th => th.dataset.key === name);
  if (index >= 0) sortBy(index, direction === "asc");
}
"""

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .6em; text-align: right; white-space: nowrap; }
th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; }
"""


def _inline_markdown(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def write_html(path: Path, title: str, notes: list[str], columns: list[tuple[str, str]],
               rows: list[list[tuple[str, float | str | None]]], images: list[Path], sections: list[str] = ()) -> None:
    """``columns``: (key, title); ``rows``: per row, per column, (text shown, value sorted by);
    ``notes``: markdown bullet lines of the protocol; ``sections``: further markdown lines (claims …)."""
    head = "".join(f'<th data-key="{html.escape(key)}" aria-sort="none">{html.escape(text)}</th>' for key, text in columns)
    body = "".join(
        "<tr>" + "".join(f'<td data-sort="{html.escape("" if value is None else str(value))}">{html.escape(text)}</td>'
                         for text, value in row) + "</tr>" for row in rows)
    note_items = "".join(f"<li>{_inline_markdown(line.lstrip('- '))}</li>" for line in notes if line.strip())
    extra = []
    for line in sections:
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 1)
            extra.append(f"<h{level}>{_inline_markdown(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            extra.append(f"<p>{_inline_markdown(line.lstrip('- '))}</p>")
    figures = "".join(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
                      f'{base64.b64encode(p.read_bytes()).decode()}">' for p in images if p.exists())
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<h2>Protocol</h2><ul>{note_items}</ul><h2>Results</h2>"
            f'<table id="board"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f"{figures}{''.join(extra)}"
            f"<script>{_SCRIPT}</script></body></html>")
    path.write_text(page)
