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
    # html: self-contained, plots embedded
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>labrun compare</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>",
        "<h1>labrun compare</h1>",
    ]
    for title, header, body in sections:
        parts.append(
            f"<h2>{html.escape(title)}</h2><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + "</tr>"
        )
        for row in body:
            parts.append(
                "<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
            )
        parts.append("</table>")
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        data = base64.b64encode(buf.getvalue()).decode()
        parts.append(
            f"<h2>{html.escape(name)}</h2><img alt='{name}' src='data:image/png;base64,{data}'>"
        )
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    return "\n".join(parts) + "</body></html>\n"


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
