"""REPRODUCED or DIFFERS: every final metric of the original against the rerun's."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig


def exact_expected(cfg: DictConfig) -> bool:
    """Deterministic CPU runs must reproduce bit for bit; others within a tolerance."""
    trainer = cfg.get("trainer") or {}
    return trainer.get("deterministic") is True and trainer.get("accelerator", "cpu") == "cpu"


def verdict(
    before: dict[str, float], after: dict[str, float], exact: bool, rtol: float, atol: float
) -> tuple[str, list[dict[str, Any]]]:
    """REPRODUCED when every recorded final metric matches, else DIFFERS; and the rows."""
    rows = []
    for key in sorted(before):
        a, b = before[key], after.get(key)
        if b is None:
            same = False
        elif exact:
            same = a == b or (math.isnan(a) and math.isnan(b))
        else:
            same = math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
        rows.append(
            {
                "metric": key,
                "original": a,
                "rerun": b,
                "abs_diff": None if b is None else abs(b - a),
                "match": same,
            }
        )
    ok = bool(rows) and all(r["match"] for r in rows)
    return ("REPRODUCED" if ok else "DIFFERS"), rows


def tolerance_text(exact: bool, rtol: float, atol: float) -> str:
    if exact:
        return "exact: bit-identical (deterministic CPU run)"
    return f"|rerun - original| <= {atol:g} + {rtol:g} * |original|"
