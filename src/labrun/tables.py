"""Plain-text tables shared by sweep summaries and comparison reports."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any


def cell(value: Any, digits: int = 4) -> str:
    """A value as a table cell: floats to `digits` significant digits, NaN and None empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}g}"
    return "" if value is None else str(value)


def markdown_table(table: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4f}"
        return "" if v is None else str(v)

    out = io.StringIO()
    out.write("| " + " | ".join(columns) + " |\n")
    out.write("|" + "---|" * len(columns) + "\n")
    for row in table:
        out.write("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |\n")
    return out.getvalue()
