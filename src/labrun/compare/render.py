"""A comparison as text: a rich table on screen, or csv, markdown or self-contained html."""

from __future__ import annotations

import base64
import csv
import html
import io
from typing import Any

from labrun.tables import cell, markdown_table

Section = tuple[str, list[str], list[list[Any]]]  # (title, header, rows)


def render(
    fmt: str,
    sections: list[Section],
    figures: dict[str, Any],
    note: str,
) -> str:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        for title, header, body in sections:
            writer.writerow([f"# {title}"])
            writer.writerow(header)
            writer.writerows([[cell(v) for v in row] for row in body])
        return out.getvalue()
    if fmt == "md":
        parts = []
        for title, header, body in sections:
            table = [dict(zip(header, row, strict=True)) for row in body]
            parts.append(f"## {title}\n\n" + markdown_table(table, header))
        parts += [f"![{name}]({name}.png)" for name in figures]
        return "\n".join(parts) + (f"\n{note}\n" if note else "")
    return render_html(sections, figures, note)


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:100%;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
.scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f4f6;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:0.5em 0}
p.note{max-width:60em;font-size:13px;color:#555}
"""
SHORT = 28  # longer cell values are shortened; the full value shows on hover


def short_cell(value: Any) -> str:
    """A cell as html: long values (URLs, hashes) cut in the middle, the whole on hover."""
    text = cell(value)
    if len(text) <= SHORT:
        return html.escape(text)
    cut = f"{text[: SHORT // 2 - 1]}…{text[-(SHORT // 2 - 1) :]}"
    return f"<span title='{html.escape(text, quote=True)}'>{html.escape(cut)}</span>"


def render_html(sections: list[Section], figures: dict[str, Any], note: str) -> str:
    """Self-contained html, plots embedded; each table in its own scroller so the page itself
    never scrolls sideways."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>labrun compare</title><style>{STYLE}</style></head><body>",
        "<h1>labrun compare</h1>",
    ]
    for title, header, body in sections:
        parts.append(
            f"<h2>{html.escape(title)}</h2><div class='scroll'><table><tr>"
            + "".join(f"<th>{short_cell(h)}</th>" for h in header)
            + "</tr>"
        )
        for row in body:
            parts.append("<tr>" + "".join(f"<td>{short_cell(v)}</td>" for v in row) + "</tr>")
        parts.append("</table></div>")
    for name, fig in figures.items():
        data = base64.b64encode(png_bytes(fig)).decode()
        parts.append(
            f"<h2>{html.escape(name)}</h2><img alt='{name}' src='data:image/png;base64,{data}'>"
        )
    for line in note.splitlines() if note else []:
        parts.append(f"<p class='note'>{html.escape(line)}</p>")
    return "\n".join(parts) + "</body></html>\n"


def png_bytes(fig: Any) -> bytes:
    """A matplotlib figure, or a stored plot's bytes (a search's importance plot), as png."""
    if isinstance(fig, bytes):
        return fig
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def print_rich(sections: list[Section], note: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, header, body in sections:
        table = Table(title=title)
        for h in header:
            table.add_column(h)
        for row in body:
            table.add_row(*[cell(v) for v in row])
        console.print(table)
    if note:
        console.print(note)
