"""The leaderboard as one self-contained HTML file, rendered from ``templates/board.html.j2``: the
protocol, a table sortable by any column (click a header, or open the file with ``#sort=COLUMN`` or
``#sort=COLUMN:asc``) whose column groups can be shown or hidden, and the plots embedded as data URIs,
so it needs no network and no other file."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from benchbed.files import write_text

TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                               autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _inline_markdown(text: str) -> Markup:
    """Markdown's bold, italics and code spans as HTML; everything else escaped."""
    text = str(escape(text))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", text))


TEMPLATES.filters["inline"] = _inline_markdown


def _section(line: str) -> tuple[int, str]:
    """(heading level, or 0 for a paragraph; text) of a markdown line."""
    if line.startswith("#"):
        return min(6, len(line) - len(line.lstrip("#")) + 1), line.lstrip("# ")
    return 0, line.lstrip("- ")


def write_html(path: Path, title: str, notes: list[str], columns: list[tuple[str, str, str]],
               rows: list[dict], images: list[Path], sections: list[str] = (), findings: list[str] = ()) -> None:
    """``columns``: (key, title, group: a set of columns the reader shows or hides, "" for those always
    shown); ``rows``: per row, ``cells`` (per column, the text shown and the value sorted by) and
    ``external`` (a model trained elsewhere, styled apart);
    ``notes``: markdown bullet lines of the protocol (a collapsed block); ``findings``: the markdown lines
    of the first screen; ``sections``: further markdown lines (claims …)."""
    page = TEMPLATES.get_template("board.html.j2").render(
        title=title, notes=[line.lstrip("- ") for line in notes if line.strip()], columns=columns, rows=rows,
        groups=list(dict.fromkeys(group for _, _, group in columns if group)),
        images=[{"name": p.stem, "data": base64.b64encode(p.read_bytes()).decode()} for p in images if p.exists()],
        sections=[_section(line) for line in sections if line.strip()],
        findings=[_section(line) for line in findings if line.strip()])
    write_text(path, page)
