"""How numbers read in the terminal, the report and plot labels: one place, so they agree."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["count", "fraction", "hours", "metric", "money", "plain", "seconds", "value", "workers"]


def count(n: float) -> str:
    """Parameters, examples or FLOPs: 3.1M, 12k, 4.2e+15."""
    if not math.isfinite(n):
        return "–"
    if abs(n) >= 1e15:
        return f"{n:.2e}"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def fraction(f: float) -> str:
    return f"{100 * f:.4g} %"


def metric(mean: float, std: float | None = None) -> str:
    if not math.isfinite(mean):
        return "–"
    if std is None or not math.isfinite(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f}"


def seconds(s: float) -> str:
    if not math.isfinite(s):
        return "–"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def hours(h: float) -> str:
    return "–" if not math.isfinite(h) else f"{h:.3g}"


def money(m: float) -> str:
    return "–" if not math.isfinite(m) else f"{m:,.2f}"


def plain(v: Any) -> Any:
    """A numpy scalar as the Python value that json and f-strings expect."""
    return v.item() if hasattr(v, "item") else v


def workers(n: int) -> str:
    return f"{n} worker" + ("" if n == 1 else "s")


def value(v: Any) -> str:
    """An axis value: 0.25, bert-mini, 4."""
    return f"{v:g}" if isinstance(v, float) else str(v)
