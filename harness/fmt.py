"""The one number formatter of the tables, the report, the compare output and the figures (no torch, no matplotlib).

``si(714.3e12, "FLOP/s") -> "714 TFLOP/s"``, ``si(9.39e5, "FLOP/s") -> "939 kFLOP/s"`` (a CPU timing is never printed
as "9.39e-07 TFLOP/s"), ``duration(1.924e-4) -> "192 µs"``, ``ratio(0.809) -> "0.81×"``. Three significant digits
everywhere; figures use the same function as their tick formatter (``tick_formatter``).
"""

from __future__ import annotations

import math
from typing import Any

NA = "-"
_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"),
             (1e-9, "n"))


def _bad(v: Any) -> bool:
    return v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v)


def sig(v: float, digits: int = 3) -> str:
    """``digits`` significant digits, never scientific notation, no trailing zeros beyond them (1.50 -> 1.5)."""
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    dec = max(0, digits - 1 - mag)
    text = f"{v:.{dec}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def si(v: Any, unit: str = "", digits: int = 3, space: bool = True) -> str:
    """``v`` with an SI prefix (P T G M k, m µ n) and three significant digits: "714 TFLOP/s", "3.01 TB/s"."""
    if _bad(v):
        return NA
    v = float(v)
    if v == 0:
        return f"0 {unit}".strip() if space else f"0{unit}"
    scale, prefix = next((p for p in _PREFIXES if abs(v) >= p[0] * 0.9995), _PREFIXES[-1])
    text = sig(v / scale, digits)
    if text.replace("-", "") == "1000" and scale < 1e15:  # 999.96 k rounds to "1000": say 1 M
        idx = [s for s, _ in _PREFIXES].index(scale)
        scale, prefix = _PREFIXES[idx - 1]
        text = sig(v / scale, digits)
    sep = " " if space and (prefix or unit) else ""
    return f"{text}{sep}{prefix}{unit}"


def duration(seconds: Any, digits: int = 3) -> str:
    """A time in seconds: "192 µs", "1.39 ms", "2.4 s"."""
    return si(seconds, "s", digits)


def ms(milliseconds: Any, digits: int = 3) -> str:
    return NA if _bad(milliseconds) else duration(float(milliseconds) / 1e3, digits)


def ratio(v: Any, digits: int = 3) -> str:
    """A speed-up or ratio of medians: "0.809×", "12.3×"."""
    return NA if _bad(v) else f"{sig(float(v), digits)}×"


def interval(lo: Any, hi: Any, digits: int = 3) -> str:
    return NA if _bad(lo) or _bad(hi) else f"[{sig(float(lo), digits)}, {sig(float(hi), digits)}]"


def pct(v: Any, digits: int = 2) -> str:
    """A percentage: "89.9%", "107%", "4.2%"; below 1% two significant digits ("0.31%")."""
    if _bad(v):
        return NA
    v = float(v)
    return f"{sig(v, max(digits, 3) if abs(v) >= 10 else digits)}%"


def plain(v: Any, digits: int = 3) -> str:
    """A dimensionless number with SI prefixes and no unit: "1.37 T" (FLOPs), "1.37 k" (intensity)."""
    if _bad(v):
        return NA
    return si(v, "", digits)


def tick_formatter(unit: str = ""):
    """A matplotlib tick formatter that prints ``si(v, unit)`` (imports matplotlib only when called)."""
    import matplotlib.ticker

    return matplotlib.ticker.FuncFormatter(lambda v, _pos: si(v, unit) if v > 0 else "0")
